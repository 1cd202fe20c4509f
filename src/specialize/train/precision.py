"""Choose the training precision: bf16 where the hardware runs it fast, fp16 mixed precision on
CUDA devices without bf16, fp32 elsewhere; and refuse a 4-bit (QLoRA) base where it cannot run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from specialize.errors import TrainingError

# CPU flags (as /proc/cpuinfo spells them) of units that run bf16 matmuls natively.
_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@dataclass(frozen=True)
class Precision:
    name: str  # "bf16", "fp16" or "fp32"
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    @property
    def fp16(self) -> bool:
        return self.name == "fp16"


def choose_precision(requested: str) -> Precision:
    """Return the precision to train in, and why; `requested` is auto, bf16 or fp32."""
    import torch

    fast, why = bf16_is_fast()
    if requested == "fp32":
        return Precision("fp32", "requested fp32")
    if requested == "fp16":
        if not torch.cuda.is_available():
            raise TrainingError(
                "precision fp16 needs a CUDA GPU (fp16 mixed precision is a GPU feature)",
                fix="use precision: auto or fp32 on this machine",
            )
        return Precision("fp16", "requested fp16 (mixed precision with loss scaling)")
    if requested == "bf16":
        if not fast and not _bf16_supported_at_all():
            raise TrainingError(
                "precision bf16 requested but this hardware cannot run bf16",
                fix="use precision: auto or fp32",
            )
        return Precision("bf16", "requested bf16" + ("" if fast else f" (slow here: {why})"))
    if fast:
        return Precision("bf16", f"auto: {why}")
    if torch.cuda.is_available():
        return Precision("fp16", f"auto: {why}; fp16 mixed precision instead")
    return Precision("fp32", f"auto: {why}")


def check_quantised_base() -> None:
    """Refuse QLoRA (a 4-bit base through bitsandbytes) where it cannot run: it needs CUDA."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise TrainingError(
            "adaptation.kind qlora needs a CUDA GPU: bitsandbytes' 4-bit layers do not train on CPU",
            fix="use adaptation.kind: lora here (the base stays in full precision)",
        )
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError(
            "adaptation.kind qlora needs the bitsandbytes package",
            fix="pip install bitsandbytes",
        )


def bf16_is_fast() -> tuple[bool, str]:
    """Return whether bf16 runs natively here, with the evidence."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        if torch.cuda.is_bf16_supported():
            return True, f"CUDA device {name} supports bf16"
        return False, f"CUDA device {name} has no fast bf16"
    flags = cpu_flags()
    found = [flag for flag in _BF16_CPU_FLAGS if flag in flags]
    if found:
        return True, f"CPU has {', '.join(found)}"
    return False, "CPU has no AVX512-BF16 or AMX"


def cpu_flags() -> set[str]:
    """Return the CPU feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _bf16_supported_at_all() -> bool:
    import torch

    return (
        torch.cuda.is_bf16_supported() if torch.cuda.is_available() else True
    )  # CPU emulates bf16
