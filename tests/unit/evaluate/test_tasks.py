"""Eval items, scoring through the tiny model, and the checkpoint choice within a retention budget."""

import json

import pytest

from specialize.errors import DataError
from specialize.evaluate.tasks import evaluate_items, load_eval_items
from specialize.models.loading import load_model


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_item_formats(tmp_path):
    path = write(
        tmp_path / "e.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "Capital of France?"},
                    {"role": "assistant", "content": "Paris"},
                ],
                "aliases": ["paris"],
            },
            {"question": "2+2?", "answer": "4", "aliases": ["four"]},
            {"question": "Sky colour?", "choices": ["red", "blue"], "answer": "B"},
            {"question": "Grass colour?", "choices": ["green", "pink"], "answer": "green"},
        ],
    )
    chat, qa, mc_letter, mc_text = load_eval_items(path, system="Be brief.")
    assert chat.answers == ["Paris", "paris"] and chat.prompt[0]["role"] == "system"
    assert qa.answers == ["4", "four"] and qa.prompt[-1]["content"] == "2+2?"
    assert mc_letter.gold == 1 and mc_letter.choices == [" red", " blue"] and mc_text.gold == 0


def test_bad_rows_are_all_reported(tmp_path):
    path = write(
        tmp_path / "e.jsonl",
        [{"question": "no answer"}, {"messages": [{"role": "user", "content": "x"}]}],
    )
    with pytest.raises(DataError) as info:
        load_eval_items(path)
    assert (
        "2 unusable" in info.value.one_line()
        and ":1:" in info.value.one_line()
        and ":2:" in info.value.one_line()
    )


def test_scoring_on_the_tiny_model(tmp_path, tiny_model_dir):
    model, tokenizer = load_model(str(tiny_model_dir))
    items = load_eval_items(
        write(
            tmp_path / "e.jsonl",
            [
                {"question": "Capital of France?", "answer": "Paris"},
                {"question": "2+2?", "answer": "4"},
                {"question": "Sky?", "choices": ["red", "blue", "green"], "answer": 1},
                {"question": "Grass?", "choices": ["green", "pink"], "answer": 0},
            ],
        )
    )
    result = evaluate_items(
        model,
        tokenizer,
        items,
        ["contains", "f1", "perplexity", "mc_acc", "mc_acc_norm"],
        max_new_tokens=4,
        progress=None,
    )
    summary = result.summary
    assert summary["contains"]["n"] == 2 and summary["mc_acc"]["n"] == 2
    assert summary["perplexity"]["mean"] > 1 and summary["perplexity"]["n"] == 2
    for row in result.items:
        assert "output" in row and "references" in row and row["scores"]
    mc = [r for r in result.items if "choice_logprobs" in r]
    assert all(len(r["choice_logprobs"]) in (2, 3) for r in mc)
    again = evaluate_items(model, tokenizer, items, ["contains"], max_new_tokens=4, progress=None)
    assert [r["output"] for r in again.items if "output" in r][:2] == [
        r["output"] for r in result.items
    ][:2]  # greedy: stable


def test_choose_within_budget_picks_lowest_val_loss_inside(tmp_path):
    from specialize.track.rundir import RunDir
    from specialize.train.callbacks import CHECKPOINT_MARKER
    from specialize.train.retention import PROBE_FILE, choose_within_budget

    run = RunDir(tmp_path)
    for step, within in ((2, True), (4, True), (6, False)):
        folder = run.checkpoints / f"checkpoint-{step}"
        folder.mkdir(parents=True)
        (folder / CHECKPOINT_MARKER).write_text("{}")
        (folder / "trainer_state.json").write_text("{}")
        (folder / PROBE_FILE).write_text(
            json.dumps({"within_budget": within, "core_lost_points": 1.0})
        )
    history = [
        {"step": 2, "eval_loss": 1.5},
        {"step": 4, "eval_loss": 1.2},
        {"step": 6, "eval_loss": 0.9},
    ]
    chosen = choose_within_budget(run, history)
    assert chosen["checkpoint"] == "checkpoint-4" and "within the retention budget" in chosen["why"]


def test_single_token_fast_path_matches_the_general_scorer(tiny_model_dir):
    from specialize.evaluate import runner

    model, tokenizer = load_model(str(tiny_model_dir))
    pairs = [
        ("Question: Sky?\nAnswer:", " A"),
        ("Question: Sky?\nAnswer:", " B"),
        ("Is it? Answer:", " yes"),
        ("Is it? Answer:", " no"),
        ("Longer one:", " several tokens here"),
    ]
    fast = runner.continuation_logprobs(model, tokenizer, pairs)
    items = []
    for context, continuation in pairs:
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        items.append((whole, len(tokenizer(context, add_special_tokens=False)["input_ids"])))
    slow = runner._score(model, items, tokenizer.pad_token_id, 8, None)
    assert fast == pytest.approx(slow, abs=1e-5)


@pytest.mark.parametrize("attention", ["sdpa", "eager", "specialize_training"])
def test_shared_context_rows_give_the_whole_sequence_scores(tiny_model_dir, attention):
    """A context and all its choices in one masked row: the same log-likelihoods as scoring each
    whole sequence (to 1e-5), so the same answer, whatever the batch split, the continuation
    lengths, and the attention implementation reading the 4D mask (additive for all; training's
    per-document attention must not read the choices' restarting positions as documents)."""
    from specialize.evaluate import runner
    from specialize.train.packed_attention import register

    register()
    model, tokenizer = load_model(str(tiny_model_dir))
    model.set_attn_implementation(attention)
    contexts = [
        "A man is sitting on a roof. He",
        "Question: Which gas do plants take in?\nAnswer:",
        "Short:",
    ]
    endings = [
        [" starts pulling up roofing.", " is ripping level tiles off.", " holds a rope.", " x"],
        [" carbon dioxide", " oxygen and a lot of other gases too", " nitrogen"],
        [" one two three four five six seven eight nine ten", " a"],
    ]
    pairs = [(c, e) for c, ends in zip(contexts, endings, strict=True) for e in ends]
    items = []
    for context, continuation in pairs:
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
        items.append((whole, start))
    whole_sequences = runner._score(model, items, tokenizer.pad_token_id, 16, None)
    for batch_size in (16, 3, 1):
        cached = runner.continuation_logprobs(model, tokenizer, pairs, batch_size=batch_size)
        assert cached == pytest.approx(whole_sequences, abs=1e-5)
        position = 0
        for ends in endings:
            a = cached[position : position + len(ends)]
            b = whole_sequences[position : position + len(ends)]
            assert a.index(max(a)) == b.index(max(b))
            position += len(ends)


def test_acc_norm_divides_by_characters_like_lm_evaluation_harness():
    from specialize.evaluate.tasks import length_normalised

    # 7 characters each, but 13 UTF-8 bytes for the first: per byte would pick it, per character not
    choices = [" ÅÄÖ ÅÄÖ", " abcdefg"]
    normed = length_normalised([-7.0, -6.5], choices)
    assert normed == [-1.0, -6.5 / 7]
    assert max(range(2), key=normed.__getitem__) == 1
    assert length_normalised([-3.0], [" no"]) == [-1.5]  # the delimiter space is not counted
