"""The serving engine's linear layers for decoding steps: a small-batch kernel, batch-invariant.

A decoding step multiplies a handful of rows (one per running request) by every weight of the
model. BLAS sgemm is built for big M: at M=8 on this 2-core AVX2 CPU it spends more time packing
the weight than multiplying it, and a step of 8 rows cost 2.5x a step of 1. `decode_linear.cpp`
loads each weight row once and multiplies it with every row of x while it sits in registers, and
sums every output over k in one fixed order, so a row's result is the same whatever rows share
its batch (the engine's greedy answers equal the request served alone, exactly). Measured in
`benchmarks/engine_step.py`.

The kernel is compiled once per machine with the system's C++ compiler (`CXX`, else `g++`) into
`$SPECIALIZE_HOME/cache/kernels/`, keyed by its source's hash. Where it cannot be used (no
compiler, no AVX2/FMA, a failed build, or `SPECIALIZE_DECODE_KERNEL=off`) the engine says why once
in its log and uses torch's own linear; answers are then still batch-invariant in practice, only
slower.

`install(model)` gives every plain `torch.nn.Linear` of the model (not LoRA's own A and B) a
forward that uses the kernel only inside `decoding()` on the thread that entered it, for inputs
of at most `MAX_ROWS` rows of fp32 with a multiple of 8 features; everywhere else the forward is
torch's `F.linear`, unchanged.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import logging
import os
import shutil
import subprocess
import threading
import types
from pathlib import Path

log = logging.getLogger("specialize.engine")

SOURCE = Path(__file__).with_name("decode_linear.cpp")
ENV = "SPECIALIZE_DECODE_KERNEL"  # "off": always torch's linear
MAX_ROWS = 16  # above this, sgemm's packing pays for itself (measured: 16 rows still gain)
FLAGS = ["-O3", "-mavx2", "-mfma", "-fopenmp", "-shared", "-fPIC"]

_state = threading.local()  # .on: this thread is inside decoding()
_library: tuple[object, str | None] | None = None  # (ctypes function or None, why not)
_build_lock = threading.Lock()


def kernel():
    """The compiled kernel's C function, or None; `why_not()` says why it is None."""
    return _load()[0]


def why_not() -> str | None:
    return _load()[1]


def _load():
    global _library
    with _build_lock:
        if _library is None:
            try:
                _library = (_build(), None)
            except KernelUnavailable as exc:
                _library = (None, str(exc))
            except OSError as exc:  # an unwritable cache, a library the loader refuses
                _library = (None, f"{type(exc).__name__}: {exc}")
        return _library


class KernelUnavailable(Exception):
    pass


def _build():
    import torch

    if os.environ.get(ENV, "").lower() in ("off", "0", "false", "no"):
        raise KernelUnavailable(f"{ENV}={os.environ[ENV]}")
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX2", "AVX512"):
        raise KernelUnavailable(f"this CPU has no AVX2 and FMA (torch reports {capability})")
    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not compiler:
        raise KernelUnavailable("no C++ compiler (set CXX, or install g++)")
    from specialize.home import cache_dir

    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = cache_dir() / "kernels" / f"decode_linear-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}.tmp")  # never load a half-written library
        done = subprocess.run(
            [compiler, *FLAGS, str(SOURCE), "-o", str(partial)], capture_output=True, text=True
        )
        if done.returncode != 0:
            partial.unlink(missing_ok=True)
            raise KernelUnavailable(f"{compiler} failed: {done.stderr.strip()[-500:]}")
        os.replace(partial, target)
    function = ctypes.CDLL(str(target)).decode_linear
    function.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 3 + [ctypes.c_int]
    function.restype = None
    return function


def linear(x, weight, bias=None):
    """`F.linear(x, weight, bias)` through the kernel (x: (..., K) fp32, at most MAX_ROWS rows)."""
    import torch

    rows = x.reshape(-1, x.shape[-1]).contiguous()
    out = torch.empty((rows.shape[0], weight.shape[0]), dtype=x.dtype)
    kernel()(
        rows.data_ptr(),
        weight.data_ptr(),
        out.data_ptr(),
        rows.shape[0],
        weight.shape[0],
        rows.shape[1],
        torch.get_num_threads(),
    )
    if bias is not None:
        out += bias
    return out.view(*x.shape[:-1], weight.shape[0])


def fits(x, weight) -> bool:
    """Whether the kernel takes this input and weight."""
    import torch

    return (
        x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.device.type == "cpu"
        and weight.is_contiguous()
        and x.shape[-1] % 8 == 0
        and x.numel() // max(x.shape[-1], 1) <= MAX_ROWS
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    )


def install(model) -> int:
    """Give the model's plain linear layers the decoding forward; returns how many (0 when the
    kernel is unavailable: `why_not()` says why). Installing twice changes nothing."""
    import torch

    if kernel() is None:
        return 0
    count = 0
    for name, module in model.named_modules():
        if type(module) is not torch.nn.Linear or ".lora_" in f".{name}":
            continue  # LoRA's own A and B stay torch's (the stacked path does not call them)
        # a bound method, so a deep copy of the model rebinds it to the copy's own weights
        module.forward = types.MethodType(_decoding_forward, module)
        count += 1
    return count


def _decoding_forward(module, x):
    import torch.nn.functional as F

    if getattr(_state, "on", False) and fits(x, module.weight):
        return linear(x, module.weight, module.bias)
    return F.linear(x, module.weight, module.bias)


@contextlib.contextmanager
def decoding(enabled: bool = True):
    """Within the block, this thread's installed linear layers use the kernel where it fits
    (with `enabled` False, torch's linear: for comparisons)."""
    before = getattr(_state, "on", False)
    _state.on = enabled
    try:
        yield
    finally:
        _state.on = before
