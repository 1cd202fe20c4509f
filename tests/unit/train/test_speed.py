"""Speed settings change no result: TRL's fused head on labelled positions only gives the same loss,
gradients and logged metrics as scoring every position."""

import pytest
import torch

from specialize.models.loading import load_model


def _loss_and_grads(model, batch):
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_labelled_positions_only_gives_the_same_loss_and_gradients(tiny_model_dir):
    from trl.trainer import utils

    from specialize.train.speed import score_labelled_positions_only

    model, _ = load_model(str(tiny_model_dir))
    utils.add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (2, 24), generator=generator)
    labels = ids.clone()
    labels[0, :15] = -100  # a prompt, as SFT masks it
    labels[1, :5] = -100
    labels[1, 20:] = -100
    batch = {"input_ids": ids, "labels": labels}
    original = utils._use_triton
    try:
        every, every_grads = _loss_and_grads(model, batch)
        score_labelled_positions_only()
        assert utils._use_triton(torch.device("cpu")) is True
        only, only_grads = _loss_and_grads(model, batch)
    finally:
        utils._use_triton = original
    assert torch.allclose(every.loss, only.loss, atol=1e-6)
    assert torch.allclose(every.entropy, only.entropy, atol=1e-5)
    assert torch.equal(every.is_top1, only.is_top1) and torch.equal(
        every.label_mask, only.label_mask
    )
    assert every_grads.keys() == only_grads.keys() and every_grads
    for name, grad in every_grads.items():
        assert torch.allclose(grad, only_grads[name], atol=1e-6), name


def _packed_batch(model, lengths, seed=0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, sum(lengths)), generator=generator)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    return ids, positions


def _logits_and_grads(model, **inputs):
    model.zero_grad()
    logits = model(**inputs, use_cache=False).logits
    (logits.square().mean()).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_packed_attention_equals_the_block_diagonal_mask_and_keeps_documents_apart(
    tiny_model_dir,
):
    from specialize.train.packed_attention import NAME, use_training_attention

    model, _ = load_model(str(tiny_model_dir))
    ids, positions = _packed_batch(model, [7, 12, 3, 9])
    masked, masked_grads = _logits_and_grads(model, input_ids=ids, position_ids=positions)
    assert use_training_attention(model) and model.config._attn_implementation == NAME
    packed, packed_grads = _logits_and_grads(model, input_ids=ids, position_ids=positions)
    assert torch.allclose(masked, packed, atol=1e-5)
    for name, grad in masked_grads.items():
        assert torch.allclose(grad, packed_grads[name], atol=1e-5), name
    # a document's logits do not depend on its neighbours: the third alone gives the same
    alone = model(input_ids=ids[:, 19:22], position_ids=positions[:, 19:22]).logits
    assert torch.allclose(alone, packed[:, 19:22], atol=1e-5)
    assert use_training_attention(model) is False  # only an sdpa model is switched


def test_packed_attention_under_bf16_autocast_matches_fp32_and_trains(tiny_model_dir, monkeypatch):
    """Under CPU autocast the documents attend in fp32 (torch's bf16 CPU kernel is slower): the
    result comes back in bf16, close to the fp32 model's, and gradients reach every layer."""
    from specialize.train import packed_attention

    model, _ = load_model(str(tiny_model_dir))
    ids, positions = _packed_batch(model, [9, 14, 5], seed=2)
    reference, _ = _logits_and_grads(model, input_ids=ids, position_ids=positions)
    packed_attention.use_training_attention(model)
    seen = []
    original = packed_attention._document

    def spy(tokens, span):  # what the kernel reads and writes, forward and backward
        seen.append(tokens.dtype)
        return original(tokens, span)

    monkeypatch.setattr(packed_attention, "_document", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, grads = _logits_and_grads(model, input_ids=ids, position_ids=positions)
    layers = model.config.num_hidden_layers
    # per document and layer: q, k, v and the output forward; 5 read and 3 written back
    assert len(seen) == 12 * 3 * layers and set(seen) == {torch.float32}
    assert logits.dtype == torch.bfloat16
    assert torch.allclose(logits.float(), reference, atol=0.1, rtol=0.05)
    assert all(grad is not None and grad.abs().sum() > 0 for grad in grads.values())


def test_padded_batches_attend_with_grouped_kv_heads_and_the_same_results(
    tiny_model_dir, monkeypatch
):
    """A masked batch (left padding, as GRPO's and padded SFT's) skips transformers' repeated kv
    heads: the same logits bitwise, the same gradients to float rounding, the same generation;
    decoding steps (one position) stay with transformers."""
    from specialize.train import packed_attention

    model, _ = load_model(str(tiny_model_dir))
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    ids = torch.randint(
        0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1)
    )
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding
    before, before_grads = _logits_and_grads(model, input_ids=ids, attention_mask=mask)
    generated = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    packed_attention.use_training_attention(model)
    grouped = []
    original = packed_attention._grouped_attention

    def spy(query, *rest):
        grouped.append(query.shape[2])
        return original(query, *rest)

    monkeypatch.setattr(packed_attention, "_grouped_attention", spy)
    after, after_grads = _logits_and_grads(model, input_ids=ids, attention_mask=mask)
    layers = model.config.num_hidden_layers
    assert grouped == [10] * layers
    assert torch.equal(after, before)
    for name, grad in before_grads.items():
        assert torch.allclose(grad, after_grads[name], atol=1e-6), name
    grouped.clear()
    again = model.generate(ids, attention_mask=mask, max_new_tokens=5, do_sample=False)
    assert torch.equal(again, generated)
    assert grouped == [10] * layers  # the prompt's prefill only


def test_packed_layout_finds_documents_where_positions_restart():
    from specialize.train.packed_attention import packed_layout

    layout = packed_layout(torch.tensor([[0, 1, 2, 0, 1, 5, 6, 7]]))
    assert (layout.documents, layout.longest) == (3, 3)
    assert layout.index.tolist() == [0, 1, 2, 3, 4, 6, 7, 8]
    assert layout.spans == ((0, 3), (3, 5), (5, 8))
    assert packed_layout(torch.tensor([[3, 4, 5, 6]])) is None  # one document: sdpa's causal path
    assert packed_layout(torch.tensor([[0, 1, 0, 1], [0, 1, 2, 3]])) is None  # padded batch


def _head_outputs(function, hidden, weight, targets, temperature, scale, entropy_weight):
    hidden = hidden.clone().requires_grad_(True)
    log_probs, entropy, _, mean_logits, top1 = function.apply(
        hidden,
        weight,
        None,
        targets,
        temperature,
        1024,
        None,
        scale,
        ("log_probs", "entropy", "mean_logits", "is_top1"),  # DPO's request
    )
    assert not mean_logits.requires_grad and not top1.requires_grad  # logged, not learnt from
    (-log_probs.sum() + entropy_weight * entropy.sum()).backward()
    return log_probs.detach(), entropy.detach(), top1, hidden.grad, weight.grad, mean_logits


def test_one_pass_head_gives_trl_kernels_outputs_and_gradients():
    from trl.kernels import ChunkedLogProbFunction

    from specialize.train import lm_head
    from specialize.train.lm_head import CpuHead

    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(lm_head.TOKENS_PER_BLOCK + 44, 32, generator=generator)
    weight = torch.randn(3000, 32, generator=generator) * 0.3
    targets = torch.randint(0, 3000, (hidden.shape[0],), generator=generator)
    for temperature, scale, entropy_weight in ((1.0, 1.0, 0.0), (0.7, 0.5, 0.3)):
        trl = _head_outputs(
            ChunkedLogProbFunction, hidden, weight, targets, temperature, scale, entropy_weight
        )
        ours = _head_outputs(
            CpuHead(ChunkedLogProbFunction),
            hidden,
            weight,
            targets,
            temperature,
            scale,
            entropy_weight,
        )
        assert torch.allclose(trl[0], ours[0], atol=1e-5) and torch.allclose(
            trl[1], ours[1], atol=1e-4
        )
        assert torch.equal(trl[2], ours[2])
        assert torch.allclose(trl[3], ours[3], atol=1e-5)
        assert torch.allclose(trl[5], ours[5], atol=1e-5)
    # a trainable head needs its own gradient: TRL's kernel runs
    trainable = weight.clone().requires_grad_(True)
    *_, weight_grad, _ = _head_outputs(
        CpuHead(ChunkedLogProbFunction), hidden, trainable, targets, 1.0, 1.0, 0.0
    )
    assert weight_grad is not None and weight_grad.abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_top1_flags_are_argmaxs_ties_included(dtype):
    from specialize.train.lm_head import _is_first_maximum

    generator = torch.Generator().manual_seed(5)
    scores = torch.randint(0, 6, (400, 50), generator=generator).to(dtype)  # many ties
    targets = scores.argmax(-1)
    targets[::3] = torch.randint(0, 50, (134,), generator=generator)  # some wrong, some tied
    targets[1::7] = 49 - scores.flip(-1).argmax(-1)[1::7]  # the last of the tied maxima
    at_target = scores.gather(1, targets[:, None])[:, 0]
    flags = _is_first_maximum(scores, targets, at_target)
    expected = scores.argmax(-1) == targets
    assert torch.equal(flags, expected)
    assert 0 < int(expected.sum()) < 400
    holds_maximum = at_target == scores.amax(-1)
    assert bool((holds_maximum & ~expected).any())  # ties where the target is not the first


def test_one_pass_head_under_autocast_casts_the_frozen_weight_once_and_follows_changes():
    """Under CPU autocast the head's products run on a bf16 copy of the weight made once (the same
    numbers autocast's own casts give); a weight changed in place gets a new copy."""
    from specialize.train import lm_head
    from specialize.train.lm_head import FrozenHeadLogProbs

    generator = torch.Generator().manual_seed(3)
    hidden = torch.randn(lm_head.TOKENS_PER_BLOCK + 20, 32, generator=generator)
    weight = torch.randn(500, 32, generator=generator) * 0.3
    targets = torch.randint(0, 500, (hidden.shape[0],), generator=generator)

    def log_probs():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return FrozenHeadLogProbs.apply(hidden, weight, targets, 1.0)[0]

    def autocast_reference():  # autocast casting the fp32 weight for the product itself
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = hidden @ weight.t()
            return torch.log_softmax(logits, -1).gather(1, targets[:, None])[:, 0].float()

    assert torch.equal(log_probs(), autocast_reference())
    copy = weight._specialize_autocast_copy[1]
    assert copy.dtype == torch.bfloat16
    log_probs()
    assert weight._specialize_autocast_copy[1] is copy  # cast once, not per call
    weight.mul_(2.0)
    assert torch.equal(log_probs(), autocast_reference())


def _fresh_python(code: str, unset: str | None = None, **env: str) -> str:
    """`code`'s stdout from a fresh interpreter (settings read once per process start fresh),
    with environment variables whose names contain `unset` removed and `env` added."""
    import os
    import subprocess
    import sys

    base = {k: v for k, v in os.environ.items() if unset is None or unset not in k}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=base | env
    ).stdout


def test_reuse_freed_memory_keeps_a_freed_block_mapped():
    """After reuse_freed_memory a freed 256 MiB block stays in the process for the next step
    instead of going back to the kernel (whose pages the next step would fault in again)."""
    probe = """
import torch
from specialize.train.speed import reuse_freed_memory

def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS")) // 1024

print(reuse_freed_memory())
before = rss()
block = torch.ones(64 * 2**20)  # 256 MiB, written so its pages are resident
del block
print(rss() - before)
"""
    out = _fresh_python(probe).split()
    assert out[0] == "True"  # glibc (Linux CI and this project's machines)
    assert int(out[1]) > 200  # MiB still resident after the free: kept for reuse


@pytest.mark.parametrize("told", [None, "0"])
def test_importing_specialize_page_aligns_large_blocks_unless_told_otherwise(told):
    """`import specialize` asks torch (before its first tensor) for page-aligned blocks of 2 MiB
    and more, which training's heap keeps more compactly; a setting in the environment wins."""
    probe = """
import os, specialize, torch
from specialize.train.speed import reuse_freed_memory

reuse_freed_memory()  # as training runs: large blocks from the heap, not fresh mappings
small = [torch.empty(2**20, dtype=torch.uint8) for _ in range(3)]  # so the heap is not fresh
offsets = {torch.empty(3 * 2**20 + 8, dtype=torch.uint8).data_ptr() % 4096 for _ in range(4)}
print(os.environ.get("THP_MEM_ALLOC_ENABLE"), sorted(offsets))
"""
    told_env = {} if told is None else {"THP_MEM_ALLOC_ENABLE": told}
    out = _fresh_python(probe, unset="THP_MEM_ALLOC_ENABLE", **told_env).split(maxsplit=1)
    if told is None:
        assert out == ["1", "[0]\n"]  # set by specialize, and every large block on a page boundary
    else:
        assert out[0] == told
        assert (
            out[1] != "[0]\n"
        )  # torch's default 64-byte alignment: some block off a page boundary


KERNEL_CACHE_PROBE = """
import ctypes, os, specialize, torch

print(os.environ.get("ONEDNN_PRIMITIVE_CACHE_CAPACITY"), flush=True)
weight = torch.randn(64, 64, dtype=torch.bfloat16)


def product(rows):
    torch.randn(rows, 64, dtype=torch.bfloat16) @ weight


product(8)
for rows in range(9, 9 + 80):  # 80 more shapes than a first one: more than 64 kernels
    product(rows)
ctypes.CDLL(None).fflush(None)  # oneDNN writes through C's stdout, Python through its own
print("AGAIN", flush=True)
product(8)
ctypes.CDLL(None).fflush(None)
"""


def _kernel_cache_probe(told):
    """Run KERNEL_CACHE_PROBE with oneDNN reporting each kernel it compiles or finds kept;
    return (the capacity the probe saw, the reports after the first shape came back)."""
    told_env = {} if told is None else {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": told}
    lines = _fresh_python(
        KERNEL_CACHE_PROBE,
        unset="PRIMITIVE_CACHE_CAPACITY",  # oneDNN's old name as well
        ONEDNN_VERBOSE="profile_create",
        **told_env,
    ).splitlines()
    again = lines.index("AGAIN")
    return lines[0], [line for line in lines[again + 1 :] if ",create:" in line]


@pytest.mark.parametrize("told", [None, "1024"])
def test_importing_specialize_bounds_onednn_kernel_cache_unless_told_otherwise(told):
    """`import specialize` keeps at most 64 compiled oneDNN kernels (training's packed batches
    change shape every step, and 1,024 kept kernels grew peak RSS for ~30 steps); a setting in
    the environment wins."""
    seen, _ = _kernel_cache_probe(told)
    assert seen == (told or "64")


@pytest.mark.parametrize("told", [None, "1024"])
def test_a_kernel_used_more_than_64_shapes_ago_is_compiled_again(told):
    """Where bf16 products run through oneDNN (CPUs with native bf16), the bound is oneDNN's:
    the first shape's kernel is gone after 80 others under specialize's 64, kept under 1,024."""
    _, reports = _kernel_cache_probe(told)
    if not reports:
        pytest.skip("this CPU's bf16 products do not run through oneDNN: the bound is inert here")
    assert ",matmul," in reports[0]
    assert ("create:cache_miss" if told is None else "create:cache_hit") in reports[0]


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_lora_sft_trains_through_the_fast_paths(tiny_recipe, monkeypatch, precision):
    """The trainer wires them in: packed documents' attention, the one-pass head, fused LoRA
    layers; in fp32 and under bf16 autocast (what `auto` picks on a CPU with native bf16)."""
    from specialize.config import build_config
    from specialize.train import fused_lora, lm_head, packed_attention
    from specialize.train.config import RecipeConfig
    from specialize.train.run import train

    calls = {"attention": 0, "head": 0, "lora": 0}

    def counting(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(
        packed_attention, "_document", counting("attention", packed_attention._document)
    )
    monkeypatch.setattr(lm_head, "_logits", counting("head", lm_head._logits))
    monkeypatch.setattr(fused_lora, "_drop", counting("lora", fused_lora._drop))
    recipe = tiny_recipe()
    recipe["training"]["max_steps"] = 2
    recipe["training"]["precision"] = precision
    run = train(build_config(RecipeConfig, recipe), progress=False)
    assert run.record().status == "finished"
    assert all(count > 0 for count in calls.values()), calls


def test_checkpointing_every_second_layer_recomputes_those_layers_with_the_same_losses(
    tiny_recipe,
):
    """`checkpoint_every: 2` checkpoints layers 0, 2, ... and leaves the rest keeping their
    activations; recomputing changes no loss (to float rounding); without gradient checkpointing
    the key is refused, naming the fix."""
    from pathlib import Path

    from transformers import TrainerCallback

    from specialize.config import build_config
    from specialize.errors import ConfigError
    from specialize.train.callbacks import extra_callbacks
    from specialize.train.config import RecipeConfig
    from specialize.train.run import train

    class Layers(TrainerCallback):
        def __init__(self):
            self.flags, self.losses = [], []

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.flags = [
                m.gradient_checkpointing
                for m in model.modules()
                if type(m).__name__.endswith("DecoderLayer")
            ]

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "loss" in logs:
                self.losses.append(logs["loss"])

    runs = {}
    for name, training in {
        "plain": {},
        "every second": {"gradient_checkpointing": True, "checkpoint_every": 2},
    }.items():
        recipe = tiny_recipe(
            training={"max_steps": 3, "precision": "fp32", **training},
            output={"dir": str(Path(tiny_recipe()["output"]["dir"]) / name.replace(" ", "-"))},
        )
        runs[name] = Layers()
        with extra_callbacks(runs[name]):
            run = train(build_config(RecipeConfig, recipe), progress=False)
        assert run.record().status == "finished"
    layers = len(runs["plain"].flags)
    assert layers >= 2 and not any(runs["plain"].flags)
    assert runs["every second"].flags == [i % 2 == 0 for i in range(layers)]
    assert len(runs["plain"].losses) == 3
    assert runs["every second"].losses == pytest.approx(runs["plain"].losses, rel=1e-5)

    with pytest.raises(ConfigError, match="set gradient_checkpointing: true"):
        build_config(RecipeConfig, tiny_recipe(training={"checkpoint_every": 3}))
