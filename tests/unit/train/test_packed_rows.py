"""A right-padded batch through TRL's fused head, packed into one row: the same per-token outputs and
LoRA gradients as the padded forward; anything it cannot pack runs the padded forward unchanged."""

import copy

import pytest
import torch

from specialize.models.loading import load_model
from specialize.train.packed_attention import use_training_attention
from specialize.train.packed_rows import PER_TOKEN_FIELDS, pack_padded_rows

OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")  # what DPOTrainer asks for


@pytest.fixture(scope="module")
def twins(tiny_model_dir):
    """Two copies of a LoRA'd tiny model with TRL's fused head: padded, and packed."""
    from peft import LoraConfig, get_peft_model
    from trl.trainer.utils import add_fused_lm_head

    base, _ = load_model(str(tiny_model_dir))
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    padded = get_peft_model(base, config)
    packed = copy.deepcopy(padded)
    add_fused_lm_head(padded.get_base_model(), outputs=OUTPUTS)
    assert use_training_attention(packed)
    add_fused_lm_head(packed.get_base_model(), outputs=OUTPUTS)
    pack_padded_rows(packed.get_base_model())
    return padded, packed


def _batch(lengths, vocab, prompt=3, seed=0):
    """Right-padded rows as DPO's collator makes them: labels only on the answer's tokens."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(1, vocab, (len(lengths), width), generator=generator)
    mask = (torch.arange(width)[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, 0)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :prompt] = -100
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "use_cache": False}


def _run(model, batch):
    model.zero_grad()
    out = model(**batch, fused_lm_head=True)
    (out.log_probs.sum() + out.entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_packed_rows_give_the_padded_outputs_and_gradients(twins):
    padded, packed = twins
    batch = _batch([9, 4, 13, 6], padded.config.vocab_size)
    expected, expected_grads = _run(padded, batch)
    actual, actual_grads = _run(packed, batch)
    for name in OUTPUTS:
        want, got = getattr(expected, name), getattr(actual, name)
        assert got.shape == want.shape == (4, 12), name
        if name == "is_top1":
            assert torch.equal(got, want)
        else:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert torch.equal(actual.label_mask, expected.label_mask)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=1e-6)
    # the padding and the prompt are unlabelled: zero there, as TRL's padded outputs are
    assert (actual.log_probs[~actual.label_mask] == 0).all()
    assert expected_grads.keys() == actual_grads.keys() and expected_grads
    for name, grad in expected_grads.items():
        torch.testing.assert_close(actual_grads[name], grad, rtol=1e-3, atol=1e-6)


def test_a_row_never_learns_the_next_rows_first_token(twins):
    """Every token labelled: the packed row's cross-row predictions must still be left out."""
    padded, packed = twins
    batch = _batch([5, 7, 3], padded.config.vocab_size, prompt=0)
    with torch.no_grad():
        expected = padded(**batch, fused_lm_head=True)
        actual = packed(**batch, fused_lm_head=True)
    torch.testing.assert_close(actual.log_probs, expected.log_probs, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(actual.loss, expected.loss, rtol=1e-5, atol=1e-6)


def test_batches_it_cannot_pack_run_the_padded_forward(twins, monkeypatch):
    from specialize.train import packed_rows

    padded, packed = twins
    calls = []
    monkeypatch.setattr(packed_rows, "_packed", lambda *a, **k: calls.append(1))
    vocab = padded.config.vocab_size
    left = _batch([6, 4], vocab)
    left["attention_mask"] = left["attention_mask"].flip(1)  # left padding
    empty = _batch([6, 4], vocab)
    empty["attention_mask"][1] = 0  # a row without tokens
    extra = _batch([6, 4], vocab) | {"token_type_ids": torch.zeros(2, 6, dtype=torch.long)}
    for batch in (left, empty):
        with torch.no_grad():
            out = packed(**batch, fused_lm_head=True)
            assert torch.equal(out.log_probs, padded(**batch, fused_lm_head=True).log_probs)
    assert not packed_rows._packable(extra)
    with torch.no_grad():  # the plain forward (generation, evaluation) is not touched
        ids = _batch([6, 4], vocab)["input_ids"]
        assert packed(input_ids=ids).logits.shape == (2, 6, vocab)
    assert calls == []
    assert set(OUTPUTS) <= set(PER_TOKEN_FIELDS)


@pytest.fixture(scope="module")
def reward_twins(tiny_model_dir):
    """Two copies of a LoRA'd tiny reward model (one-number score head): padded, and packed."""
    from peft import LoraConfig, get_peft_model

    from specialize.train.judge import load_reward_model
    from specialize.train.packed_rows import pack_padded_scores

    base, _ = load_reward_model(str(tiny_model_dir))
    config = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS", init_lora_weights=False
    )
    padded = get_peft_model(base, config)
    packed = copy.deepcopy(padded)
    assert use_training_attention(packed)
    pack_padded_scores(packed.get_base_model())
    return padded, packed


def test_packed_reward_rows_give_the_padded_scores_and_gradients(reward_twins):
    padded, packed = reward_twins
    batch = _batch([9, 4, 13, 6], padded.config.vocab_size)
    pad = padded.config.pad_token_id
    batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, pad)
    batch["input_ids"][0, 8] = pad  # a row ending in the pad token: scored at the token before
    del batch["labels"]
    scores = {}
    for name, model in (("padded", padded), ("packed", packed)):
        model.zero_grad()
        logits = model(**batch).logits
        (logits.square().sum()).backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        scores[name] = (logits.detach(), grads)
    (want, want_grads), (got, got_grads) = scores["padded"], scores["packed"]
    assert got.shape == want.shape == (4, 1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert want_grads.keys() == got_grads.keys() and any("score" in n for n in want_grads)
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=1e-3, atol=1e-6)


def test_reward_batches_it_cannot_pack_run_the_padded_forward(reward_twins, monkeypatch):
    from specialize.train import packed_rows

    padded, packed = reward_twins
    calls = []
    monkeypatch.setattr(packed_rows, "_packed_scores", lambda *a, **k: calls.append(1))
    batch = _batch([6, 4], padded.config.vocab_size)
    del batch["labels"]
    # the padding is not the pad token: transformers would score a padding position
    batch["input_ids"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7)
    with torch.no_grad():
        assert torch.equal(packed(**batch).logits, padded(**batch).logits)
    assert calls == []
