"""What a training step keeps for its backward: one copy of each activation, the same gradients."""

import copy

import torch

from specialize.models.loading import load_model
from specialize.train import fused_lora, gated_mlp


def _kept(forward):
    """The result of forward(), and the distinct storages autograd keeps for its backward."""
    storages = {}

    def pack(tensor):
        storages[(tensor.untyped_storage().data_ptr(), tensor.dtype)] = tensor
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        result = forward()
    return result, list(storages.values())


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


def test_packed_attention_keeps_no_copy_of_the_packed_tokens(tiny_model_dir):
    from specialize.train.packed_attention import use_packed_attention

    model, _ = load_model(str(tiny_model_dir))
    use_packed_attention(model)
    lengths = [7, 12, 3]
    ids = torch.randint(0, model.config.vocab_size, (1, sum(lengths)))
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    _, kept = _kept(lambda: model(input_ids=ids, position_ids=positions, use_cache=False).logits)
    heads = model.config.num_attention_heads
    head_dim = model.config.hidden_size // heads
    packed_tokens = [t for t in kept if t.shape == (sum(lengths), heads, head_dim)]
    assert packed_tokens == []
