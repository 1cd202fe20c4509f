"""What a training step keeps for its backward: one copy of each activation, the same gradients."""

import copy

import pytest
import torch

from specialize.models.loading import load_model
from specialize.train import fused_lora, gated_mlp, packed_attention
from specialize.train.packed_attention import use_training_attention


def _kept(forward):
    """The result of forward(), and the distinct storages autograd keeps for its backward."""
    storages = {}

    def pack(tensor):
        storages[(tensor.untyped_storage().data_ptr(), tensor.dtype)] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    return result, list(storages.values())


def _bytes(kept):
    return sum(t.untyped_storage().nbytes() for t in kept)


def _grads(model, result):
    result.float().square().mean().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_gated_mlp_keeps_two_intermediate_tensors_with_bitwise_the_same_gradients(
    tiny_model_dir,
):
    model, _ = load_model(str(tiny_model_dir))
    x = torch.randn(2, 9, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    mlp = model.model.layers[0].mlp
    twin = copy.deepcopy(mlp)
    assert gated_mlp.install(twin) == 1
    width = model.config.intermediate_size
    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            before, kept_before = _kept(lambda: mlp(x))
            after, kept_after = _kept(lambda: twin(x))
        wide = [t for t in kept_before if t.shape[-1] == width and t.dim() == 3]
        assert len(wide) == 3  # gate, silu(gate), up
        assert len([t for t in kept_after if t.shape[-1] == width and t.dim() == 3]) == 2
        assert torch.equal(before, after)
        mlp.zero_grad(), twin.zero_grad()
        expected, actual = _grads(mlp, before), _grads(twin, after)
        assert expected.keys() == actual.keys() and expected
        for name, grad in expected.items():
            assert torch.equal(grad, actual[name]), (autocast, name)


def test_gated_mlp_with_a_lora_down_projection_keeps_gate_and_up_only(tiny_model_dir, monkeypatch):
    """down_proj's LoRA joins the node: it keeps no copy of silu(gate) * up; outputs and every
    gradient (adapters and input) are what the separate nodes give, bitwise, dropout included."""
    from peft import LoraConfig, get_peft_model

    model, _ = load_model(str(tiny_model_dir))
    torch.manual_seed(0)
    targets = ["gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=targets)
    )
    for module in model.modules():
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.02)  # B starts at zero
    mlp = model.base_model.model.model.layers[0].mlp
    gated_mlp.install(mlp)
    fused_lora.install(mlp)
    width = model.config.intermediate_size
    x = torch.randn(2, 9, model.config.hidden_size, generator=torch.Generator().manual_seed(0))

    def step():
        torch.manual_seed(1)  # the same dropout masks
        xi = x.clone().requires_grad_()
        out, kept = _kept(lambda: mlp(xi))
        mlp.zero_grad()
        grads = _grads(mlp, out)
        return out, kept, grads | {"x": xi.grad}

    def wide(kept):
        return [
            t
            for t in kept
            if t.is_floating_point() and t.shape[-1] == width and t.numel() == 18 * width
        ]

    for autocast in (False, True):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            fused, kept_fused, grads_fused = step()
            with monkeypatch.context() as patch:
                patch.setattr(fused_lora, "product_operands", lambda layer, x: None)
                apart, kept_apart, grads_apart = step()
        assert len(wide(kept_fused)) == 2 and len(wide(kept_apart)) == 3  # gate, up (+ product)
        assert torch.equal(fused, apart)
        assert grads_fused.keys() == grads_apart.keys() and len(grads_fused) == 7
        for name, grad in grads_apart.items():
            assert torch.equal(grad, grads_fused[name]), (autocast, name)


def test_gated_mlp_leaves_other_activations_alone():
    class GeluMLP(torch.nn.Module):  # a name it knows, an activation it does not compute
        def __init__(self):
            super().__init__()
            self.act_fn = torch.nn.GELU()

    GeluMLP.__name__ = "LlamaMLP"
    assert gated_mlp.install(GeluMLP()) == 0


class Shared(torch.nn.Module):
    """q and k read one input, as attention's projections do."""

    def __init__(self):
        super().__init__()
        self.q = torch.nn.Linear(32, 48)
        self.k = torch.nn.Linear(32, 16, bias=False)

    def forward(self, x, bump=False):
        q = self.q(x)
        if bump:
            x.add_(0)  # an in-place change between the readers: k must cast anew
        return q.sum(-1) + self.k(x).sum(-1)


def _lora():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(Shared(), LoraConfig(r=4, lora_alpha=8, target_modules=["q", "k"]))
    fused_lora.install(model)
    return model


def test_layers_reading_one_input_keep_one_cast_of_it_under_autocast(monkeypatch):
    """One bf16 copy of the input is kept; its gradient is what separate casts give, bitwise (the
    readers' gradients add up in fp32)."""
    model = _lora()
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1), requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, kept = _kept(lambda: model(x))
    inputs = [t for t in kept if t.dtype == torch.bfloat16 and t.shape == (5, 32)]
    assert len(inputs) == 1
    out.sum().backward()
    shared = x.grad.clone()
    assert shared.dtype == torch.float32 and shared.abs().sum() > 0
    x.grad = None
    monkeypatch.setattr(fused_lora, "_cast_once", lambda x, dtype: x.detach().to(dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, kept = _kept(lambda: model(x))
    assert len([t for t in kept if t.dtype == torch.bfloat16 and t.shape == (5, 32)]) == 2
    out.sum().backward()
    assert torch.equal(x.grad, shared)
    monkeypatch.undo()

    y = torch.randn(5, 32, generator=torch.Generator().manual_seed(2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, kept = _kept(lambda: model(y, bump=True))
    assert len([t for t in kept if t.dtype == torch.bfloat16 and t.shape == (5, 32)]) == 2
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(torch.randn(5, 32)).shape == (5,)  # inference tensors have no version


@pytest.mark.parametrize("calls", ["one per document", "one padded"])
def test_packed_attention_keeps_its_tokens_packed_with_the_same_gradients(
    tiny_model_dir, monkeypatch, calls
):
    """q, k, v and the output are kept once each, packed (not padded to the longest document),
    and the logits and every gradient are what autograd's padded sdpa gives: bitwise where the
    documents attend padded in one call, to float rounding where each attends in its own (the
    kernel's sums then run over the document's own keys, not the longest one's)."""
    if calls == "one padded":
        monkeypatch.setattr(packed_attention, "MOST_CALLS", 0)
    model, _ = load_model(str(tiny_model_dir))
    assert use_training_attention(model)
    config = model.config
    lengths = [7, 12, 3]
    ids = torch.randint(
        0, config.vocab_size, (1, sum(lengths)), generator=torch.Generator().manual_seed(3)
    )
    positions = torch.cat([torch.arange(n) for n in lengths])[None]

    def forward():
        return model(input_ids=ids, position_ids=positions, use_cache=False).logits

    def padded(kept):  # [documents, heads, longest, dim] tensors
        return [t for t in kept if t.dim() == 4 and t.shape[0] == len(lengths) and t.shape[2] == 12]

    logits, kept = _kept(forward)
    head_dim = config.hidden_size // config.num_attention_heads
    kv = [t for t in kept if t.shape == (sum(lengths), config.num_key_value_heads, head_dim)]
    layers = config.num_hidden_layers
    assert len(kv) == 2 * layers  # k and v of every layer, packed
    assert padded(kept) == []
    grads = _grads(model, logits)
    model.zero_grad()

    monkeypatch.setattr(
        packed_attention._DocumentAttention,
        "apply",
        lambda q, k, v, layout, scale: packed_attention._padded_attention(
            q, k, v, layout, scale, 0.0
        ),
    )
    logits_padded, kept_padded = _kept(forward)
    assert len(padded(kept_padded)) == 4 * layers  # autograd's sdpa: q, k, v and the output
    assert _bytes(kept) < _bytes(kept_padded)
    expected = _grads(model, logits_padded)
    assert expected.keys() == grads.keys() and grads
    if calls == "one padded":
        assert torch.equal(logits, logits_padded)
        for name, grad in expected.items():
            assert torch.equal(grad, grads[name]), name
    else:
        assert torch.allclose(logits, logits_padded, atol=1e-6, rtol=0)
        for name, grad in expected.items():
            assert torch.allclose(grad, grads[name], atol=1e-6, rtol=1e-5), name
