"""The SwiGLU product silu(gate) * up in one autograd node that keeps two tensors, not four.

Llama-style blocks compute down(silu(gate(x)) * up(x)). Autograd keeps gate for silu's backward,
both silu(gate) and up for the product's, and a LoRA down projection keeps the product for its
adapter's gradient: four [tokens, intermediate] tensors a layer, the largest activations of a
LoRA step (~366 MiB at batch 8 on SmolLM2-135M under bf16). Here the node keeps gate and up and
recomputes silu(gate) and the product in the backward (elementwise passes, about 1% of the
step); where down_proj is a routed LoRA layer (`fused_lora`) its product joins the node.
Outputs and gradients are the ops autograd would run, so they are bitwise the same.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F

from specialize.train import fused_lora

# MLP classes whose forward is exactly down_proj(act_fn(gate_proj(x)) * up_proj(x)).
SWIGLU_CLASSES = frozenset({"LlamaMLP", "MistralMLP", "Qwen2MLP", "Qwen3MLP"})


class SiluGate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        return _gate_up_grads(grad, gate, up, F.silu(gate), ctx.needs_input_grad[:2])


def _gate_up_grads(grad, gate, up, silu, needs):
    """The gradients of silu(gate) * up for gate and up (None where not needed)."""
    grad_gate = torch.ops.aten.silu_backward(grad * up, gate) if needs[0] else None
    grad_up = grad * silu if needs[1] else None
    return grad_gate, grad_up


class SiluGateDown(torch.autograd.Function):
    """lora_product(silu(gate) * up) of a LoRA down projection, keeping gate and up only."""

    @staticmethod
    def forward(ctx, gate, up, weight, bias, lora_a, lora_b, scale, drop, keep_scale):
        hidden = F.silu(gate) * up
        rows = hidden.reshape(-1, hidden.shape[-1])
        out, low = fused_lora.lora_product(
            rows, weight, bias, lora_a, lora_b, scale, drop, keep_scale
        )
        ctx.save_for_backward(gate, up, weight, lora_a, lora_b, low, drop)
        ctx.scale, ctx.keep_scale = scale, keep_scale
        return out.view(*gate.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        gate, up, weight, lora_a, lora_b, low, drop = ctx.saved_tensors
        silu = F.silu(gate)
        hidden = silu * up  # the forward's product again, instead of keeping it
        needs_hidden = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        grad_rows, grad_a, grad_b = fused_lora.lora_gradients(
            grad_out.reshape(-1, grad_out.shape[-1]),
            hidden.reshape(-1, hidden.shape[-1]),
            (weight, lora_a, lora_b, low, drop),
            ctx.scale,
            ctx.keep_scale,
            needs_hidden,
        )
        grad_gate = grad_up = None
        if needs_hidden:
            grad = grad_rows.view(hidden.shape).to(hidden.dtype)
            grad_gate, grad_up = _gate_up_grads(grad, gate, up, silu, ctx.needs_input_grad[:2])
        return grad_gate, grad_up, None, None, grad_a, grad_b, None, None, None


def _forward(self, x):
    gate, up = self.gate_proj(x), self.up_proj(x)
    operands = None
    if gate.dtype == up.dtype:  # then the product has gate's dtype, which down_proj reads
        operands = fused_lora.product_operands(self.down_proj, gate)
    if operands is None:
        return self.down_proj(SiluGate.apply(gate, up))
    return SiluGateDown.apply(gate, up, *operands)


def install(model) -> int:
    """Route every SwiGLU MLP of `model` through SiluGate; return how many."""
    count = 0
    for module in model.modules():
        if type(module).__name__ in SWIGLU_CLASSES and type(module.act_fn).__name__ in (
            "SiLU",
            "SiLUActivation",
        ):
            module.forward = types.MethodType(_forward, module)  # per instance, as fused_lora
            count += 1
    return count
