"""A LoRA layer's fused training step computes what PEFT's separate ops compute."""

import copy

import pytest
import torch

from specialize.train import fused_lora


class TwoLayers(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.q = torch.nn.Linear(32, 48)
        self.k = torch.nn.Linear(32, 16, bias=False)

    def forward(self, x):
        return self.q(x).tanh().sum(-1) + self.k(x).pow(2).sum(-1)


def _peft(dropout=0.0):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q", "k"], lora_dropout=dropout)
    model = get_peft_model(TwoLayers(), config)
    for name, weight in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(weight)  # PEFT starts B at zero: give the adapter an effect
    return model


def _step(model, x):
    model.zero_grad()
    x = x.clone().requires_grad_(True)
    out = model(x)
    out.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), x.grad, grads


def test_fused_step_matches_peft_forward_and_gradients():
    peft = _peft()
    fused = copy.deepcopy(peft)
    assert fused_lora.install(fused) == 2
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(1))
    expected, fused_result = _step(peft, x), _step(fused, x)
    assert torch.allclose(expected[0], fused_result[0], atol=1e-5)
    assert torch.allclose(expected[1], fused_result[1], atol=1e-5)
    assert expected[2].keys() == fused_result[2].keys() and len(expected[2]) == 4
    for name, grad in expected[2].items():
        assert torch.allclose(grad, fused_result[2][name], atol=1e-5), name


def test_fused_dropout_drops_the_same_inputs_as_a_mask_would(monkeypatch):
    fused = _peft(dropout=0.25)
    fused_lora.install(fused)
    x = torch.randn(6, 32, generator=torch.Generator().manual_seed(2))
    drop = torch.rand(6, 32, generator=torch.Generator().manual_seed(3)) < 0.25
    monkeypatch.setattr(fused_lora, "drop_mask", lambda shape, p, device=None: drop)
    fused.train()
    result = _step(fused, x)

    reference = _peft(dropout=0.25)
    for layer in (reference.base_model.model.q, reference.base_model.model.k):
        layer.lora_dropout["default"] = _FixedDropout(drop, 0.25)
    expected = _step(reference, x)
    assert torch.allclose(expected[0], result[0], atol=1e-5)
    assert torch.allclose(expected[1], result[1], atol=1e-5)
    for name, grad in expected[2].items():
        assert torch.allclose(grad, result[2][name], atol=1e-5), name


class _FixedDropout(torch.nn.Module):
    def __init__(self, drop, p):
        super().__init__()
        self.drop, self.p = drop, p

    def forward(self, x):
        return x.masked_fill(self.drop, 0.0) / (1 - self.p)


def test_drop_mask_drops_the_asked_share_and_follows_the_seed():
    torch.manual_seed(7)
    first = fused_lora.drop_mask((500, 400), 0.1)
    torch.manual_seed(7)
    assert torch.equal(first, fused_lora.drop_mask((500, 400), 0.1))
    assert first.dtype == torch.bool and first.shape == (500, 400)
    assert first.float().mean().item() == pytest.approx(0.1, abs=0.003)  # n = 200,000
    assert not fused_lora.drop_mask((3, 5), 0.0).any()


def test_layers_fall_back_to_peft_where_fusing_would_differ():
    model = _peft()
    reference = copy.deepcopy(model)
    fused_lora.install(model)
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(4))
    with model.disable_adapter(), reference.disable_adapter():
        assert torch.equal(model(x), reference(x))  # base only, as the DPO reference needs
    model.base_model.model.q.base_layer.weight.requires_grad_(True)  # a trainable base: PEFT's path
    reference.base_model.model.q.base_layer.weight.requires_grad_(True)
    out = _step(model, x)
    assert "base_model.model.q.base_layer.weight" in out[2]
    assert torch.allclose(out[0], _step(reference, x)[0], atol=1e-5)


def test_a_deep_copy_computes_with_its_own_weights():
    model = _peft()
    fused_lora.install(model)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        twin.base_model.model.q.lora_B["default"].weight.add_(1.0)
    x = torch.randn(2, 32)
    assert not torch.allclose(model(x), twin(x))


def test_under_bf16_autocast_the_fused_step_computes_what_peft_does(monkeypatch):
    """bf16 training on a CPU with native bf16 runs under autocast: the fused layer computes in
    bf16 from a kept copy of the frozen base, and matches PEFT under autocast to bf16 rounding;
    the adapter's gradients arrive in fp32, as its optimizer keeps them."""
    peft = _peft()
    fused = copy.deepcopy(peft)
    fused_lora.install(fused)
    calls = []
    monkeypatch.setattr(fused_lora, "_drop", lambda rows, drop: calls.append(rows.dtype) or rows)
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected, result = _step(peft, x), _step(fused, x)
    assert calls and set(calls) == {torch.bfloat16}  # the fused path ran, in bf16
    assert _relative_error(expected[0], result[0]) < 0.02  # bf16 keeps 8 bits: ~0.4% a value
    assert _relative_error(expected[1], result[1]) < 0.02
    assert expected[2].keys() == result[2].keys() and len(result[2]) == 4
    for name, grad in result[2].items():
        assert grad.dtype == torch.float32, name
        assert _relative_error(expected[2][name], grad) < 0.02, name
    base = fused.base_model.model.q.base_layer.weight
    assert base._specialize_autocast_copy[1].dtype == torch.bfloat16  # kept for the next step


def _relative_error(expected, actual):
    expected, actual = expected.float(), actual.float()
    return ((expected - actual).norm() / expected.norm()).item()


def test_a_copy_first_made_under_inference_mode_still_trains():
    """An evaluation under inference_mode and autocast (a retention probe before training) makes
    the kept copy first; training with it afterwards must still have a backward."""
    model = _peft()
    fused_lora.install(model)
    x = torch.randn(2, 32, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, _, grads = _step(model, x)
    assert len(grads) == 4 and all(g.abs().sum() > 0 for g in grads.values())


def test_with_the_adapter_disabled_under_autocast_the_base_runs_from_the_kept_copy(monkeypatch):
    """DPO's reference pass switches the adapter off: the base product comes from the kept bf16
    copy, bitwise what autocast's own cast gives, and no adapter term."""
    peft = _peft()
    fused = copy.deepcopy(peft)
    fused_lora.install(fused)
    copied = []
    original = fused_lora.frozen_autocast_copy
    monkeypatch.setattr(
        fused_lora, "frozen_autocast_copy", lambda w, dtype: copied.append(w) or original(w, dtype)
    )
    x = torch.randn(3, 5, 32, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        with peft.disable_adapter():
            expected = peft(x)
        with fused.disable_adapter():
            result = fused(x)
        assert len(copied) == 3  # q's weight and bias, k's weight
        enabled = fused(x)
    assert torch.equal(expected, result)
    assert not torch.allclose(enabled.float(), result.float())
