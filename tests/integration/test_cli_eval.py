"""`specialize eval` through the entry point: eval.json, contamination, the cached baseline."""

import json

import yaml

from specialize.evaluate import retention


def test_eval_json_keeps_every_item_and_flags_contamination(
    cli, tiny_recipe, tmp_path, tiny_model_dir
):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        yaml.safe_dump(tiny_recipe(training={"max_steps": 2}, retention={"suite": "none"}))
    )
    assert cli("train", recipe, "--no-progress")[0] == 0
    train_rows = [
        json.loads(line)
        for line in (tmp_path / "run" / "data" / "support" / "train.jsonl").read_text().splitlines()
    ]
    leaked = train_rows[0]["messages"]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(
        json.dumps({"messages": [m for m in leaked if m["role"] != "system"]})
        + "\n"
        + json.dumps({"question": "A question nobody trained on?", "answer": "yes"})
        + "\n"
    )
    out = tmp_path / "eval.json"
    code, stdout, err = cli(
        "eval",
        "--model",
        tiny_model_dir,
        "--adapter",
        tmp_path / "run",
        "--data",
        eval_file,
        "--metrics",
        "contains,f1,rouge_l",
        "--out",
        out,
        "--no-progress",
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    assert report["schema_version"] == 1 and len(report["task"]["items"]) == 2
    assert set(report["task"]["summary"]) == {"contains", "f1", "rouge_l"}
    assert all(len(s["ci95"]) == 2 and s["n"] == 2 for s in report["task"]["summary"].values())
    assert report["task"]["contamination"]["overlapping_items"] == 1
    assert "contamination: 1 eval item" in stdout


def test_suite_core_caches_the_base(cli, tiny_model_dir, tmp_path, monkeypatch):
    out = tmp_path / "eval.json"
    code, stdout, err = cli(
        "eval", "--model", tiny_model_dir, "--suite", "core", "--out", out, "--no-progress"
    )
    assert code == 0, err
    report = json.loads(out.read_text())
    core = report["retention"]["base"]["tasks"]["core"]["summary"]["contains"]
    assert core["n"] == 310 and 0 <= core["mean"] <= 1
    assert report["retention"]["base"]["general_perplexity"]["mean"] > 1

    def must_not_run(*args, **kwargs):
        raise AssertionError("the base side should come from the cache")

    monkeypatch.setattr(retention, "evaluate_items", must_not_run)
    monkeypatch.setattr(retention, "perplexity_of_texts", must_not_run)
    code, _, err = cli(
        "eval", "--model", tiny_model_dir, "--suite", "core", "--out", out, "--no-progress"
    )
    assert code == 0, err


def test_eval_needs_data_or_suite(cli):
    code, _, err = cli("eval")
    assert code == 2 and "--data FILE" in err
