"""`specialize parity`: our multiple-choice scores against lm-evaluation-harness's HFLM, item by item."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from specialize.artifacts import ParityReport

pytest.importorskip("lm_eval", reason="the parity check needs the lmeval extra")

# Non-ASCII choices of different byte and character lengths: acc_norm divides by characters.
ROWS = [
    {"question": "Which city is the capital of Sweden?", "choices": ["Malmö", "Stockholm", "Göteborg"], "answer": "Stockholm"},
    {"question": "What do bees make?", "choices": ["honey", "milk", "silk", "wool"], "answer": 0},
    {"question": "Is ice cold?", "choices": ["yes", "no"], "answer": "A"},
    {"question": "Which is a fruit? ", "choices": ["äpple", "sten"], "answer": 0},
]  # fmt: skip


@pytest.fixture(scope="module")
def mc_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("parity") / "quiz.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in ROWS) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from specialize.models.loading import load_model

    return load_model(str(tiny_model_dir))


def reference_logprob(model, tokenizer, context: str, continuation: str) -> float:
    """log p(continuation | context) from one plain forward pass over the whole sequence."""
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    start = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    with torch.inference_mode():
        logits = model(torch.tensor([whole])).logits[0].float().log_softmax(-1)
    return sum(logits[i - 1, whole[i]].item() for i in range(start, len(whole)))


def test_cli_compares_suite_tasks_and_a_file_item_by_item(
    cli, tiny_model_dir, mc_file, tmp_path, tiny
):
    out = tmp_path / "parity.json"
    code, stdout, err = cli(
        "parity", "--model", tiny_model_dir, "--suite", "standard", "--task", "arc_easy",
        "--task", "boolq", "--task", "quiz", "--data", mc_file, "--limit", "4",
        "--out", out, "--no-progress", "--json",
    )  # fmt: skip
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["passed"] and summary["parity_json"] == str(out)
    report = ParityReport.read(out)
    assert set(report.tasks) == {"arc_easy", "boolq", "quiz"}
    assert report.harness["package"] == "lm_eval" and report.dtype == "float32"
    assert report.tolerance == {"loglikelihood": 1e-3, "acc": 0.0, "acc_norm": 0.0}
    for task in report.tasks.values():
        assert task["n"] == 4  # --limit applies to every task, the file's too
        assert task["predictions_differ"] == {"acc": 0, "acc_norm": 0}
        assert task["max_abs_ll_diff"] <= 1e-3
        for metric in ("acc", "acc_norm"):
            assert task["ours"][metric]["mean"] == task["harness"][metric]["mean"]
            assert task["ours"][metric]["n"] == task["n"] and len(task["ours"][metric]["ci95"]) == 2
    model, tokenizer = tiny
    for row in report.items["quiz"]:
        # the harness's requests: (context, " " + choice), one per choice, in order
        contexts = {context for context, _ in row["requests"]}
        assert len(contexts) == 1 and all(c.startswith(" ") for _, c in row["requests"])
        # both sides agree with a plain full-sequence forward pass, not only with each other
        for (context, choice), ours, theirs in zip(
            row["requests"], row["ours"]["logprobs"], row["harness"]["logprobs"], strict=True
        ):
            reference = reference_logprob(model, tokenizer, context, choice)
            assert abs(ours - reference) < 1e-3 and abs(theirs - reference) < 1e-3
        # the harness's acc_norm divides by characters of the choice: check it from its lls
        chars = [len(c) - 1 for _, c in row["requests"]]
        norm = [ll / n for ll, n in zip(row["harness"]["logprobs"], chars, strict=True)]
        assert row["harness"]["pred_norm"] == norm.index(max(norm))
        assert row["ours"]["pred_norm"] == row["harness"]["pred_norm"]
    assert report.items["quiz"][0]["gold"] == 1 and report.items["quiz"][2]["gold"] == 0

    code, stdout, err = cli(
        "parity", "--model", tiny_model_dir, "--data", mc_file, "--out", out, "--no-progress"
    )
    assert code == 0, err
    assert "quiz" in stdout and "parity passed" in stdout and "arc_easy" not in stdout


def test_a_tokenizer_that_adds_bos_is_caught(tiny, mc_file):
    """The harness encodes with the tokenizer's defaults; if those add BOS, scores differ: a FAIL."""
    from transformers import AutoTokenizer

    from specialize.evaluate.harness import parity, select_tasks

    model, tokenizer = tiny
    with_bos = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    with_bos.add_bos_token = True
    assert with_bos.encode("hi")[0] == with_bos.bos_token_id
    report = parity(model, with_bos, select_tasks(None, mc_file, None, None), progress=False)
    task = report["tasks"]["quiz"]
    assert not report["passed"] and not task["passed"]
    assert task["max_abs_ll_diff"] > 1e-3
    same = parity(model, tokenizer, select_tasks(None, mc_file, None, None), progress=False)
    assert same["passed"]


def test_summary_fails_on_any_flipped_prediction():
    from specialize.evaluate.harness import _summary

    def row(ours_pred, theirs_pred, diff=1e-5):
        side = lambda p: {"pred": p, "pred_norm": 0, "acc": float(p == 0), "acc_norm": 1.0}  # noqa: E731
        return {"id": "x", "gold": 0, "ours": side(ours_pred), "harness": side(theirs_pred),
                "max_abs_ll_diff": diff}  # fmt: skip

    assert _summary([row(0, 0), row(1, 1)], 1e-3)["passed"]
    flipped = _summary([row(0, 0), row(0, 1)], 1e-3)
    assert not flipped["passed"] and flipped["predictions_differ"] == {"acc": 1, "acc_norm": 0}
    assert flipped["ours"]["acc"]["mean"] == 1.0 and flipped["harness"]["acc"]["mean"] == 0.5
    assert not _summary([row(0, 0, diff=2e-3)], 1e-3)["passed"]


def test_without_lm_eval_the_error_names_the_extra(cli, tiny_model_dir, mc_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # find_spec then reports it missing
    code, _, err = cli("parity", "--model", tiny_model_dir, "--data", mc_file)
    assert code == 1
    assert err.count("\n") == 1 and "pip install 'specialize[lmeval]'" in err


def test_bad_requests_are_refused_with_the_fix(cli, tiny_model_dir, mc_file, tmp_path):
    code, _, err = cli("parity", "--model", tiny_model_dir, "--data", mc_file, "--task", "nope")
    assert code == 1 and "unknown task(s) nope" in err and "quiz" in err
    code, _, err = cli("parity", "--model", tiny_model_dir, "--suite", "core")
    assert code == 1 and "only the standard suite" in err
    generated = tmp_path / "gen.jsonl"
    generated.write_text(json.dumps({"question": "Capital of France?", "answer": "Paris"}) + "\n")
    code, _, err = cli("parity", "--model", tiny_model_dir, "--data", generated)
    assert code == 1 and "no multiple-choice items" in err


def test_an_adapter_is_compared_on_both_sides(tiny_model_dir, mc_file, tmp_path):
    """HFLM takes the PeftModel as loaded; the adapter changes the scores on both sides alike."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from specialize.evaluate.harness import run_parity

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(
        r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base, lora).save_pretrained(tmp_path / "adapter")
    plain = run_parity(str(tiny_model_dir), data=mc_file, out=tmp_path / "a.json", progress=False)
    tuned = run_parity(
        str(tiny_model_dir), adapter=tmp_path / "adapter", data=mc_file,
        out=tmp_path / "b.json", progress=False,
    )  # fmt: skip
    assert plain["passed"] and tuned["passed"]
    assert tuned["model"]["adapter"] == str(tmp_path / "adapter")
    before = [r["harness"]["logprobs"] for r in plain["items"]["quiz"]]
    after = [r["harness"]["logprobs"] for r in tuned["items"]["quiz"]]
    assert max(abs(a - b) for x, y in zip(before, after) for a, b in zip(x, y)) > 1e-2  # noqa: B905
