"""A LoRA linear layer's training step in one autograd node: y = x W^T + b + s (drop(x) A^T) B^T.

PEFT computes the LoRA path as separate ops: the adapter's output, times the scale, added to the
base output (two full passes over [tokens, out] and a new tensor each), and in the backward the
scale again and the sum of the two input gradients (two more passes). On a CPU those passes, not
the products, were a sixth of a LoRA SFT step. Here the scaled product is accumulated into the
base output in place (`addmm_`), the scale is applied to the rank-r tensors only, and the input
gradient of the adapter is accumulated into the base's.

Dropout: PEFT draws a float Bernoulli mask per adapted layer (q, k and v each draw their own for
the same input), about 15-40 ms per [1,000 x 1,536] input here, more than the layer's products.
Here the mask comes from 16-bit slices of 64-bit random integers (one draw gives four elements;
the probability is exact to 1/65,536), kept as booleans, and the dropped input is recomputed in the
backward instead of stored, so q, k and v no longer keep three dropped copies of one input.

Under CPU autocast (bf16 training where the CPU runs bf16 natively) the layer computes in
autocast's dtype, as autocast would, with the frozen base weight cast once and kept instead of
for every product; with the adapter switched off (DPO's reference pass) the base product alone
comes from that copy.

Installed per layer (`install`); a layer falls back to PEFT's forward whenever this would not
compute the same thing: adapters disabled or merged, several or no active adapters, DoRA and other
variants, mixed-adapter batches, a dtype other than the adapter's (autocast's aside).
"""

from __future__ import annotations

import math
import threading
import types
import weakref

import torch

from specialize.train.speed import frozen_autocast_copy


class LoraLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, x_cast, weight, bias, lora_a, lora_b, scale, drop, keep_scale):
        # x_cast: x in the compute dtype, shared with the other layers that read x (or None)
        rows = (x if x_cast is None else x_cast).reshape(-1, x.shape[-1])
        out, low = lora_product(rows, weight, bias, lora_a, lora_b, scale, drop, keep_scale)
        ctx.save_for_backward(rows, weight, lora_a, lora_b, low, drop)
        ctx.scale, ctx.keep_scale, ctx.shape, ctx.x_dtype = scale, keep_scale, x.shape, x.dtype
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        rows, weight, lora_a, lora_b, low, drop = ctx.saved_tensors
        grad_x, grad_a, grad_b = lora_gradients(
            grad_out.reshape(-1, grad_out.shape[-1]),
            rows,
            (weight, lora_a, lora_b, low, drop),
            ctx.scale,
            ctx.keep_scale,
            ctx.needs_input_grad[0],
        )
        if grad_x is not None:
            # to x's dtype here, so the readers' gradients add up in it (as autocast's casts do)
            grad_x = grad_x.view(ctx.shape).to(ctx.x_dtype)
        return grad_x, None, None, None, grad_a, grad_b, None, None, None


def lora_product(rows, weight, bias, lora_a, lora_b, scale, drop, keep_scale):
    """rows W^T + b + scale (drop(rows) A^T) B^T, and the rank-r product the backward needs."""
    out = torch.addmm(bias, rows, weight.t()) if bias is not None else rows @ weight.t()
    low = _drop(rows, drop) @ lora_a.t()  # [tokens, r]
    if drop is not None:
        low.mul_(keep_scale)  # inverted dropout's 1 / (1 - p), on the rank-r tensor
    out.addmm_(low, lora_b.t(), alpha=scale)
    return out, low


def lora_gradients(grad, rows, kept, scale, keep_scale, needs_rows_grad):
    """The gradients of lora_product for the rows (None unless asked), A and B.

    kept: (weight, lora_a, lora_b, low, drop) as the forward used them."""
    weight, lora_a, lora_b, low, drop = kept
    grad_low = (grad @ lora_b).mul_(scale)  # [tokens, r]
    grad_b = (grad.t() @ low).mul_(scale)
    if drop is not None:
        grad_low.mul_(keep_scale)
    grad_a = grad_low.t() @ _drop(rows, drop)
    grad_rows = None
    if needs_rows_grad:
        grad_rows = grad @ weight
        if drop is None:
            grad_rows.addmm_(grad_low, lora_a)
        else:
            grad_rows.add_((grad_low @ lora_a).masked_fill_(drop, 0.0))
    return grad_rows, grad_a, grad_b


def _drop(rows, drop):
    return rows if drop is None else rows.masked_fill(drop, 0.0)


def drop_mask(shape, p: float, device=None) -> torch.Tensor:
    """Booleans, True (dropped) with probability p (to 1/65,536), from torch's default generator."""
    count = math.prod(shape)
    words = torch.randint(
        -(2**63), 2**63 - 1, ((count + 3) // 4,), dtype=torch.int64, device=device
    )
    halves = words.view(torch.int16)[:count]
    return (halves < -32768 + round(p * 65536)).view(shape)


def _fused_forward(self, x, *args, **kwargs):
    if _base_only_under_autocast(self, x, args, kwargs):
        # the adapter switched off (DPO's reference pass): the base product from the kept copy
        compute = torch.get_autocast_dtype("cpu")
        bias = self.base_layer.bias
        return torch.nn.functional.linear(
            x.to(compute),
            frozen_autocast_copy(self.base_layer.weight, compute),
            None if bias is None else frozen_autocast_copy(bias, compute),
        )
    if not _plain(self, x, args, kwargs):
        return type(self).forward(self, x, *args, **kwargs)  # PEFT's own
    x_cast, operands = _operands(self, x)
    return LoraLinear.apply(x, x_cast, *operands)


def product_operands(layer, x: torch.Tensor) -> tuple | None:
    """(weight, bias, lora_a, lora_b, scale, drop, keep_scale) for `lora_product` where `layer`
    is a routed LoRA layer that would compute x in x's own dtype, else None.

    For a caller that fuses the layer into its own node (the gated MLP's down projection); the
    dropout mask is drawn here, only when the operands are given."""
    if getattr(layer.forward, "__func__", None) is not _fused_forward:
        return None
    if not _plain(layer, x, (), {}) or _compute_dtype(x) != x.dtype:
        return None
    return _operands(layer, x)[1]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype


def _operands(layer, x: torch.Tensor) -> tuple:
    """x cast once to the compute dtype (None when already in it), and lora_product's operands."""
    name = layer.active_adapters[0]
    dropout = layer.lora_dropout[name]
    p = dropout.p if isinstance(dropout, torch.nn.Dropout) and dropout.training else 0.0
    drop = drop_mask((x.numel() // x.shape[-1], x.shape[-1]), p, x.device) if p > 0 else None
    weight, bias = layer.base_layer.weight, layer.base_layer.bias
    lora_a, lora_b = layer.lora_A[name].weight, layer.lora_B[name].weight
    compute = _compute_dtype(x)
    x_cast = None
    if compute != weight.dtype:
        # What autocast would compute, without its per-product casts of the frozen base: that
        # comes from a copy kept across steps; the adapter, which trains, is cast each step.
        x_cast = None if x.dtype == compute else _cast_once(x, compute)
        lora_a, lora_b = lora_a.to(compute), lora_b.to(compute)
        weight = frozen_autocast_copy(weight, compute)
        bias = None if bias is None else frozen_autocast_copy(bias, compute)
    scale = float(layer.scaling[name])
    return x_cast, (weight, bias, lora_a, lora_b, scale, drop, 1.0 / (1.0 - p) if p > 0 else 1.0)


_casts = threading.local()


def _cast_once(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x's values in dtype, outside autograd, one cast shared by the layers that read the same
    input (q, k, v; gate, up).

    Each kept its own cast for the backward: three copies of one input where one does (~100 MiB
    a step at batch 8 on SmolLM2-135M). The cast is data only: each layer returns its input
    gradient in x's dtype, so the readers' gradients still add up in fp32, not in bf16. The last
    cast is kept with the input it came from (a weak reference, so a new tensor at a freed one's
    address is not taken for it) and that input's version. Without autograd nothing is kept for a
    backward, and inference tensors have no version: each layer casts its own there."""
    if not torch.is_grad_enabled() or x.is_inference():
        return x.detach().to(dtype)
    key = (x._version, dtype)
    last = getattr(_casts, "last", None)
    if last is not None and last[0]() is x and last[1] == key:
        return last[2]
    cast = x.detach().to(dtype)
    _casts.last = (weakref.ref(x), key, cast)
    return cast


def _base_only_under_autocast(layer, x, args, kwargs) -> bool:
    """Whether PEFT would run the plain frozen base alone, with autocast casting its weight."""
    if args or kwargs or not layer.disable_adapters or layer.merged:
        return False
    return (
        _frozen_linear(layer.base_layer)
        and x.device.type == "cpu"
        and torch.is_autocast_enabled("cpu")
        and layer.base_layer.weight.dtype == torch.float32
        and x.dtype in (torch.float32, torch.get_autocast_dtype("cpu"))
    )


def _plain(layer, x, args, kwargs) -> bool:
    """Whether the layer is one plain LoRA adapter over a plain linear, as LoraLinear computes."""
    if args or kwargs or layer.disable_adapters or layer.merged:
        return False
    active = layer.active_adapters
    if len(active) != 1 or active[0] not in layer.lora_A or active[0] in layer.lora_variant:
        return False
    base = layer.base_layer
    if not _frozen_linear(base):
        return False
    a = layer.lora_A[active[0]].weight
    if x.device.type != "cpu" or a.dtype != base.weight.dtype:
        return False
    if torch.is_autocast_enabled("cpu"):  # fp32 parameters computed in autocast's dtype
        return a.dtype == torch.float32 and x.dtype in (a.dtype, torch.get_autocast_dtype("cpu"))
    return x.dtype == a.dtype


def _frozen_linear(base) -> bool:
    return type(base) is torch.nn.Linear and not any(p.requires_grad for p in base.parameters())


def fused_bases(model) -> list[torch.nn.Linear]:
    """The frozen base layers whose products the fused path computes (from kept copies under
    autocast): those of the LoRA linear layers `install` routed."""
    return [
        module.base_layer
        for module in model.modules()
        if getattr(module.forward, "__func__", None) is _fused_forward
        and _frozen_linear(module.base_layer)
    ]


def install(model) -> int:
    """Route every PEFT LoRA linear layer of `model` through LoraLinear; return how many."""
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear:
            # bound per instance: a deep copy of the model rebinds it to the copy
            module.forward = types.MethodType(_fused_forward, module)
            count += 1
    return count
