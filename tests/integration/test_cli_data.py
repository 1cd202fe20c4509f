"""The data commands through the real entry point, on a messy file."""

import json

import pytest


def chat(user, answer):
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }


@pytest.fixture
def messy(tmp_path):
    rows = [
        json.dumps(
            chat(f"Question number {i} about {w}?", f"A proper answer about {w} with detail {i}.")
        )
        for i, w in enumerate(["fees", "cards", "loans", "savings", "mortgages", "transfers"])
    ]
    rows += [
        '{"broken": ',
        json.dumps(
            {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "yes"}]}
        ),
    ]
    path = tmp_path / "messy.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_check_reports_each_defect_with_its_line(cli, messy):
    code, out, _ = cli("data", "check", messy)
    assert code == 0
    assert f"{messy}:7:" in out and "malformed_json" in out
    assert f"{messy}:8: messages[0].role: role 'bot'" in out
    assert "8 rows: 6 valid, 2 with errors" in out


def test_check_strict_fails_and_writes_all_defects(cli, messy, tmp_path):
    out_file = tmp_path / "defects.jsonl"
    code, _, err = cli("data", "check", messy, "--strict", "--defects-out", out_file)
    assert code == 1 and "2 defect(s) found" in err
    assert [json.loads(line)["category"] for line in out_file.read_text().splitlines()] == [
        "malformed_json",
        "unknown_role",
    ]


def test_prepare_writes_the_dataset_directory(cli, messy, tmp_path, tiny_model_dir):
    config = tmp_path / "data.yaml"
    config.write_text(
        f"sources:\n  - path: {messy.name}\nmodel: {tiny_model_dir}\nsplit: {{val: 0.2, test: 0.2}}\n"
    )
    out = tmp_path / "ds"
    code, stdout, err = cli("data", "prepare", config, "--out", out)
    assert code == 0, err
    assert "8 input = 6 kept + 2 rejected" in stdout
    for name in (
        "train.jsonl",
        "val.jsonl",
        "test.jsonl",
        "rejects.jsonl",
        "changes.jsonl",
        "manifest.json",
        "report.html",
    ):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["schema_version"] == 1 and len(manifest["inputs"][0]["sha256"]) == 64
    assert sum(manifest["counts"]["kept_by_split"].values()) == 6


def test_prepare_config_error_names_the_key(cli, tmp_path, messy):
    config = tmp_path / "data.yaml"
    config.write_text(f"sources:\n  - path: {messy}\nclean:\n  near_treshold: 0.9\n")
    code, _, err = cli("data", "prepare", config, "--out", tmp_path / "ds")
    assert code == 2 and f"{config}:4" in err and "did you mean 'clean.near_threshold'" in err


def test_preview_marks_the_trained_tokens(cli, messy, tiny_model_dir):
    code, out, err = cli(
        "data", "preview", messy, "--model", tiny_model_dir, "--row", "2", "--markers"
    )
    assert code == 0, err
    assert "[[A proper answer about cards with detail 1.<|im_end|>\n]]" in out
    assert "[[" not in out.split("<|im_start|>assistant")[0]


def test_preview_of_a_bad_row_says_why(cli, messy, tiny_model_dir):
    code, _, err = cli("data", "preview", messy, "--model", tiny_model_dir, "--row", "8")
    assert code == 1 and "role 'bot'" in err
