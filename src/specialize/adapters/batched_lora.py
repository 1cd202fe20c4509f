"""Every row of a batch through its own LoRA adapter in one forward, for serving.

PEFT's mixed-adapter batches (`adapter_names=[...]`) loop over the adapters in every LoRA layer,
index the rows of each, and run them through that adapter's two small matmuls. Here instead,
per LoRA-wrapped linear layer, every loaded adapter's A and B are stacked once into
`A: (slots, in, r_max)` and `B: (slots, r_max, out)`; slot 0 is all zeros and stands for the
base, and so does the slot of an adapter that does not target that layer. A forward then runs
the base layers alone (PEFT's layers told every row is the base) and a forward hook on each LoRA
layer adds `x @ A[slot] @ B[slot] * scaling[slot]` for every row at once, gathered by slot
(`gather`: two `bmm`), or grouped by adapter (`group`: `index_select`, one matmul pair per adapter
present, `index_add`).
`benchmarks/lora_gather.py` times both on the served model's real shapes.

Each adapter's scaling is PEFT's own (`lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA), a
smaller rank is padded with zero columns (adding exact zeros), and the products run in the same
order as PEFT's (`B(A(x)) * scaling`), so answers equal the request served alone.

What this does not cover (`unsupported` names the reason; the engine runs such an adapter's rows
in a forward of their own on PEFT's single-adapter path, since PEFT's mixed batches refuse DoRA
too): DoRA and other LoRA variants (the magnitude vector needs the base weight's column norms per
adapter), LoRA on embeddings or convolutions, adapters with `lora_bias`, and `modules_to_save`
(whole layers an adapter replaces).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

MODES = ("gather", "group")
PEFT_BASE = "__base__"  # PEFT's name for "no adapter" in a mixed-adapter batch


@dataclass
class _Layer:
    """One LoRA-wrapped linear layer's stacked weights."""

    module: object
    a: object  # (slots, in, r_max)
    b: object  # (slots, r_max, out)
    scale: object  # (slots,)
    slots: frozenset  # slots with weights here (an adapter not targeting this layer has none)


class BatchedLora:
    """Stacked LoRA weights of the adapters `names` on a PeftModel (slot i + 1 is names[i])."""

    def __init__(self, model, names: list[str], mode: str = "gather"):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: expected one of {', '.join(MODES)}")
        self.model = model
        self.mode = mode
        self.names = list(names)
        self.slot = {name: index + 1 for index, name in enumerate(self.names)}
        self.unsupported = {name: why for name in self.names if (why := _unsupported(model, name))}
        self.peft_layers = [module for module in model.modules() if _takes_adapter_names(module)]
        self.layers = [
            layer
            for module in model.modules()
            if _is_lora_linear(module) and (layer := self._stack(module)) is not None
        ]

    def supported(self, adapters: list[str]) -> bool:
        """Whether every one of these adapters (or the base) can take the stacked path."""
        return all(name not in self.unsupported for name in adapters)

    def _stack(self, module) -> _Layer | None:

        present = [n for n in self.names if n in module.lora_A and n not in self.unsupported]
        if not present:
            return None
        base = module.get_base_layer()
        weight = base.weight
        rank = max(module.lora_A[n].weight.shape[0] for n in present)
        slots = len(self.names) + 1
        a = weight.new_zeros((slots, base.in_features, rank))
        b = weight.new_zeros((slots, rank, base.out_features))
        scale = weight.new_zeros((slots,))
        for name in present:
            slot, r = self.slot[name], module.lora_A[name].weight.shape[0]
            a[slot, :, :r] = module.lora_A[name].weight.detach().T.to(weight.dtype)
            b[slot, :r, :] = module.lora_B[name].weight.detach().T.to(weight.dtype)
            scale[slot] = float(module.scaling[name])
        return _Layer(module, a, b, scale, frozenset(self.slot[n] for n in present))

    @contextlib.contextmanager
    def rows(self, adapters: list[str]):
        """Within the block, a forward of the model applies row i's adapter `adapters[i]`
        ("base", or any name without a slot: no adapter). It yields the forward's extra keyword
        arguments (none).

        A pre-forward hook on each of PEFT's layers names PEFT's base ("__base__") for every row,
        so they return their base layer's output (whichever adapter is active), and a forward hook
        on each stacked layer adds the rows' updates. Every hook is removed when the block ends,
        also after an error. (PEFT's own `adapter_names=` argument is not used: PEFT 0.21 leaves its
        hooks on the layers when a forward raises, and they then name stale rows in later forwards.)"""
        import torch

        slots = [self.slot.get(name, 0) for name in adapters]
        index = torch.tensor(slots, device=self.model.device)
        groups = {s: torch.tensor([i for i, x in enumerate(slots) if x == s]) for s in set(slots)}
        groups.pop(0, None)
        base = [PEFT_BASE] * len(slots)

        def base_only(module, args, kwargs):
            kwargs["adapter_names"] = base
            return args, kwargs

        handles = []
        try:
            for module in self.peft_layers:
                handles.append(module.register_forward_pre_hook(base_only, with_kwargs=True))
            for layer in self.layers:
                if self.mode == "gather":
                    if not layer.slots.intersection(slots):
                        continue
                    hook = _gather_hook(layer, index)
                else:
                    present = {s: rows for s, rows in groups.items() if s in layer.slots}
                    if not present:
                        continue
                    hook = _group_hook(layer, present, len(slots))
                handles.append(layer.module.register_forward_hook(hook))
            yield {}
        finally:
            for handle in handles:
                handle.remove()


def _gather_hook(layer: _Layer, index):
    import torch

    a, b, scale = layer.a[index], layer.b[index], layer.scale[index].view(-1, 1, 1)

    def hook(module, args, output):
        x = args[0].to(a.dtype)
        delta = torch.bmm(torch.bmm(x, a), b) * scale
        return output + delta.to(output.dtype)

    return hook


def _group_hook(layer: _Layer, groups: dict, batch: int):

    whole = {s for s, rows in groups.items() if len(rows) == batch}

    def hook(module, args, output):
        x = args[0]
        for slot, rows in groups.items():
            a, b, scale = layer.a[slot], layer.b[slot], layer.scale[slot]
            if slot in whole:
                return output + ((x.to(a.dtype) @ a) @ b * scale).to(output.dtype)
            delta = (x.index_select(0, rows).to(a.dtype) @ a) @ b * scale
            output = output.index_add(0, rows, delta.to(output.dtype))
        return output

    return hook


def _takes_adapter_names(module) -> bool:
    """PEFT's layers that take `adapter_names` (LoRA layers, and wrappers of `modules_to_save`)."""
    from peft.tuners.lora.layer import LoraLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return isinstance(module, (LoraLayer, AuxiliaryTrainingWrapper))


def _is_lora_linear(module) -> bool:
    import torch
    from peft.tuners.lora.layer import Linear

    return isinstance(module, Linear) and isinstance(module.get_base_layer(), torch.nn.Linear)


def _unsupported(model, name: str) -> str | None:
    """Why adapter `name` cannot take the stacked path (None when it can)."""
    import torch
    from peft.tuners.lora.layer import LoraLayer

    config = model.peft_config.get(name)
    if config is None:
        return "not loaded"
    if getattr(config, "use_dora", False):
        return "DoRA"
    if getattr(config, "lora_bias", False):
        return "lora_bias"
    if getattr(config, "modules_to_save", None):
        return "modules_to_save"
    for module in model.modules():
        if not isinstance(module, LoraLayer):
            continue
        has = name in getattr(module, "lora_A", {}) or name in getattr(
            module, "lora_embedding_A", {}
        )
        if not has:
            continue
        if name in getattr(module, "lora_variant", {}):
            return "a LoRA variant"
        if not _is_lora_linear(module) or not isinstance(module.get_base_layer(), torch.nn.Linear):
            return f"LoRA on a {type(module.get_base_layer()).__name__}"
    return None
