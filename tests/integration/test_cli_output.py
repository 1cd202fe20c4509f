"""`--json` on reporting commands, tables that fit 80 columns, and the Python API."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from specialize.cli.output import print_table

CHAT = {
    "messages": [
        {"role": "user", "content": "How do I block my card?"},
        {"role": "assistant", "content": "Open the app and tap Block card."},
    ]
}


def lines_over(text: str, width: int = 80) -> list[str]:
    return [line for line in text.splitlines() if len(line) > width]


def test_wide_tables_fold_into_records_and_narrow_ones_stay_tables():
    console = Console(width=80, record=True, force_terminal=False)
    print_table(console, ["name", "n"], [["legal", "3"]])
    narrow = console.export_text()
    assert "┃ name" in narrow or "| name" in narrow or "name" in narrow.splitlines()[1]
    console = Console(width=80, record=True, force_terminal=False)
    print_table(console, ["field", "help"], [["a.b", "word " * 60]], title="Wide")
    wide = console.export_text()
    assert wide.startswith("Wide") and "field  a.b" in wide and not lines_over(wide)


def test_config_fields_fit_80_columns_and_have_json(cli):
    code, out, err = cli("config", "fields", "recipe")
    assert code == 0, err
    assert not lines_over(out), lines_over(out)[:3]
    assert "adaptation.lora.use_dora" in out
    code, out, _ = cli("config", "fields", "data", "--json")
    fields = {f["field"]: f for f in json.loads(out)}
    assert "clean.phone_regions" in fields and "sources" in fields


def test_json_from_reporting_commands(cli, tmp_path, tiny_model_dir):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(CHAT) + "\n" + '{"conversations": [{"from": "bot"}]}\n')
    code, out, err = cli("data", "check", data, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["rows"] == 2 and report["valid"] == 1 and report["errors"] == {"unknown_role": 1}
    code, out, _ = cli("models", "list", "--json")
    assert json.loads(out)[0]["alias"] == "smollm2-135m-instruct"
    code, out, _ = cli("models", "info", tiny_model_dir, "--json")
    assert json.loads(out)["architecture"]
    bad = tmp_path / "r.yaml"
    bad.write_text("# Run: specialize train THIS_FILE\nmethod: sft\ndata: {train: [x]}\nbogus: 1\n")
    code, out, _ = cli("config", "validate", bad, "--json")
    (result,) = json.loads(out)
    assert code == 0 and result["ok"] is False and "bogus" in result["problems"][0]
    config = tmp_path / "data.yaml"
    config.write_text(
        json.dumps(
            {"sources": [{"path": str(data)}], "model": None, "split": {"val": 0, "test": 0}}
        )
    )
    code, out, err = cli("data", "prepare", config, "--out", tmp_path / "ds", "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["input"] == 2


def test_generate_json_is_the_streamed_reply(cli, tiny_model_dir):
    args = ("generate", "Hello there", "--model", tiny_model_dir, "--max-new-tokens", "5")
    code, streamed, err = cli(*args)
    assert code == 0, err
    code, out, err = cli(*args, "--system", "Be brief.", "--json")
    assert code == 0, err
    printed = json.loads(out)
    assert printed["messages"][0] == {"role": "system", "content": "Be brief."}
    assert printed["settings"]["max_new_tokens"] == 5 and 1 <= printed["reply_tokens"] <= 5
    code, out, _ = cli(*args, "--json")
    assert json.loads(out)["reply"] == streamed.removesuffix("\n")  # greedy: the same reply


def test_python_api(tmp_path):
    import specialize
    from specialize import evaluate, ladder, prepare, train
    from specialize.errors import ConfigError
    from specialize.train.run import train as run_train  # imports the subpackage of that name

    assert callable(specialize.train) and specialize.train is train and run_train is not train
    assert callable(ladder) and callable(specialize.evaluate)
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(CHAT) + "\n")
    config = tmp_path / "data.yaml"
    config.write_text(json.dumps({"sources": [{"path": "d.jsonl"}], "model": None}))
    manifest = prepare(config, tmp_path / "ds", overrides=["split.val=0", "split.test=0"])
    assert manifest.counts["kept"] == 1 and (tmp_path / "ds" / "train.jsonl").is_file()
    with pytest.raises(ConfigError, match="give data=FILE"):
        evaluate()
