"""The serving engine's small-batch linear kernel: same numbers as torch, rows independent."""

import copy
import shutil

import pytest
import torch

from specialize.adapters import decode_linear

pytestmark = pytest.mark.skipif(
    not (shutil.which("g++") or shutil.which("c++")),
    reason="no C++ compiler here: the engine falls back to torch's linear (tested below)",
)


@pytest.fixture(scope="module")
def kernel():
    function = decode_linear.kernel()
    assert function is not None, decode_linear.why_not()  # a compiler is here: it must build
    return function


@pytest.mark.parametrize("rows", [1, 3, 8, 13, 16, 21])
@pytest.mark.parametrize("features,outputs", [(8, 5), (64, 37), (576, 192)])
def test_matches_torch_linear(kernel, rows, features, outputs):
    torch.manual_seed(rows * features)
    x, weight, bias = (
        torch.randn(rows, features),
        torch.randn(outputs, features),
        torch.randn(outputs),
    )
    got = decode_linear.linear(x, weight, bias)
    expected = torch.nn.functional.linear(x, weight, bias)
    # only the order of the fp32 additions differs from torch's: errors of a few ulp per term
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=features * 1e-7)
    # batch dimensions are kept, as F.linear keeps them
    assert decode_linear.linear(x.view(1, rows, features), weight).shape == (1, rows, outputs)


def test_each_row_is_the_same_alone_or_in_any_batch_and_with_any_threads(kernel):
    torch.manual_seed(0)
    x, weight = torch.randn(13, 576), torch.randn(1536, 576)  # a tile of 8 and one of 5
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = decode_linear.linear(x, weight)
        torch.set_num_threads(2)
        together = decode_linear.linear(x, weight)
    finally:
        torch.set_num_threads(before)
    alone = torch.cat([decode_linear.linear(x[i : i + 1], weight) for i in range(13)])
    assert torch.equal(together, alone)  # bit-identical, not merely close
    assert torch.equal(together, one_thread)
    reordered = decode_linear.linear(x.flip(0)[:6], weight)
    assert torch.equal(reordered, together.flip(0)[:6])


def test_installed_layers_use_the_kernel_only_while_decoding(kernel, monkeypatch):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 8))
    model = get_peft_model(
        _Wrapper(model), LoraConfig(target_modules=["net.0"], r=2, init_lora_weights=False)
    )
    calls = []
    real = decode_linear.linear
    monkeypatch.setattr(
        decode_linear, "linear", lambda x, w, b=None: calls.append(w.shape) or real(x, w, b)
    )
    assert decode_linear.install(model) == 2  # both base layers; LoRA's own A and B are left alone
    assert decode_linear.install(model) == 2  # again: the same two, nothing wrapped twice
    copied = copy.deepcopy(model)  # a copy's layers compute with the copy's own weights
    layer = copied.base_model.model.net[2]
    assert layer.forward.__self__ is layer
    x = torch.randn(4, 16)
    with torch.inference_mode():
        plain = model(x)
        assert calls == []
        with decode_linear.decoding():
            fast = model(x)
        assert calls == [(24, 16), (8, 24)]
        with decode_linear.decoding(enabled=False):
            model(x)
        model(torch.randn(decode_linear.MAX_ROWS + 1, 16))  # too many rows: torch's linear
        with decode_linear.decoding():
            model(torch.randn(decode_linear.MAX_ROWS + 1, 16))
    assert len(calls) == 2
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    # where autograd needs the product, the forward is torch's: the frozen first layer's input
    # needs no gradient (the kernel may take it), the second layer's input does (LoRA's output)
    with decode_linear.decoding():
        model(x).sum().backward()
    assert calls[2:] == [(24, 16)]
    lora_a = next(p for n, p in model.named_parameters() if "lora_A" in n)
    assert lora_a.grad is not None and lora_a.grad.abs().sum() > 0


def test_without_the_kernel_install_says_why_and_changes_nothing(monkeypatch):
    monkeypatch.setattr(decode_linear, "_library", None)
    monkeypatch.setenv(decode_linear.ENV, "off")
    model = torch.nn.Linear(8, 4)
    assert decode_linear.install(model) == 0
    assert decode_linear.why_not() == f"{decode_linear.ENV}=off"
    assert "forward" not in vars(model)
    monkeypatch.setattr(decode_linear, "_library", None)  # the next test builds it again


class _Wrapper(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net(x)


def test_an_unwritable_cache_means_torch_linear_not_a_failing_server(monkeypatch, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setattr(decode_linear, "_library", None)
    monkeypatch.setenv("SPECIALIZE_HOME", str(blocker))
    assert decode_linear.kernel() is None
    assert "Error" in decode_linear.why_not()
    assert decode_linear.install(torch.nn.Linear(8, 4)) == 0
    monkeypatch.setattr(decode_linear, "_library", None)
