"""A chat-template override (named or a .jinja file) in data and recipe configs: checked for prefix
stability, trained with, saved with the adapter, used when the adapter is loaded, and exported."""

from __future__ import annotations

import json

import pytest
import yaml

from specialize.data.templates import NAMED_TEMPLATES, resolve_chat_template, use_chat_template
from specialize.errors import DataError

UNSTABLE = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% else %}<END>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_named_and_file_templates_are_checked_for_prefix_stability(tokenizer, tmp_path):
    use_chat_template(tokenizer, NAMED_TEMPLATES["chatml"])
    assert tokenizer.chat_template == NAMED_TEMPLATES["chatml"]
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "<|im_start|>user\nhi<|im_end|>\n"  # no default system prompt
    (tmp_path / "unstable.jinja").write_text(UNSTABLE)
    with pytest.raises(DataError, match="recipe chat_template: .*prefix"):
        use_chat_template(
            tokenizer, resolve_chat_template("unstable.jinja", tmp_path), "recipe chat_template"
        )
    assert tokenizer.chat_template == NAMED_TEMPLATES["chatml"]  # a refused template is not kept
    with pytest.raises(DataError, match="does not render"):
        use_chat_template(tokenizer, "{% for m in messages %}{{ m.content }", "x")
    with pytest.raises(DataError, match="neither a named template nor a file"):
        resolve_chat_template("llama9", tmp_path)


def test_chatml_tools_renders_tools_natively(tokenizer):
    from specialize.data.templates import mask_row, supports_tools

    use_chat_template(tokenizer, NAMED_TEMPLATES["chatml-tools"])
    assert supports_tools(tokenizer)
    call = {"type": "function", "function": {"name": "hours", "arguments": {"city": "Oslo"}}}
    row = {
        "tools": [{"type": "function", "function": {"name": "hours", "parameters": {}}}],
        "messages": [
            {"role": "user", "content": "Open?"},
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "content": "9-17"},
            {"role": "assistant", "content": "Nine to five."},
        ],
    }
    masked = mask_row(tokenizer, row)
    text = tokenizer.decode(masked.input_ids)
    trained = tokenizer.decode([i for i, m in zip(masked.input_ids, masked.mask, strict=True) if m])
    assert '<tools>\n{"name": "hours"' in text and "<tool_response>\n9-17" in text
    assert '<tool_call>\n{"name": "hours", "arguments": {"city": "Oslo"}}' in trained
    assert "9-17" not in trained and "Nine to five." in trained


def test_recipe_override_travels_with_the_adapter_and_the_export(
    cli, tiny_recipe, tiny_model_dir, tmp_path
):
    from specialize.models.loading import load_model

    (tmp_path / "plain.jinja").write_text(NAMED_TEMPLATES["chatml"])
    recipe = tiny_recipe(
        chat_template="plain.jinja",
        training={"max_steps": 2, "batch_size": 4, "max_length": 128},
        retention={"suite": "none"},
        output={"dir": str(tmp_path / "run"), "name": "plain"},
    )
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    code, _, err = cli("train", path, "--no-progress")
    assert code == 0, err
    assert (tmp_path / "run" / "adapter" / "chat_template.jinja").read_text() == NAMED_TEMPLATES[
        "chatml"
    ]
    _, loaded = load_model(str(tiny_model_dir), adapter=tmp_path / "run")
    assert loaded.chat_template == NAMED_TEMPLATES["chatml"]
    code, _, err = cli("adapters", "export", "plain", "--out", tmp_path / "peft")
    assert code == 0, err
    assert (tmp_path / "peft" / "chat_template.jinja").read_text() == NAMED_TEMPLATES["chatml"]
    record = json.loads((tmp_path / "peft" / "specialize-export.json").read_text())
    assert record["chat_template"]["overrides_base"] is True
    bad = tiny_recipe(chat_template="nope.jinja", output={"dir": str(tmp_path / "run2")})
    path.write_text(yaml.safe_dump(bad))
    code, _, err = cli("train", path, "--no-progress")
    assert code != 0 and "neither a named template nor a file" in err


def test_data_config_override_is_used_for_token_counts(tmp_path, tiny_model_dir):
    from specialize.data.config import load_data_config
    from specialize.data.prepare import prepare

    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Question {i} about cards?"},
                {"role": "assistant", "content": f"Answer {i}: use the app."},
            ]
        }
        for i in range(4)
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    lengths = {}
    for name in (None, "chatml"):
        body = {"sources": [{"path": "d.jsonl"}], "model": str(tiny_model_dir)}
        body["split"] = {"val": 0, "test": 0}
        if name:
            body["chat_template"] = name
        (tmp_path / "data.yaml").write_text(json.dumps(body))
        manifest = prepare(
            load_data_config(tmp_path / "data.yaml"), tmp_path / f"ds-{name}", progress=False
        )
        lengths[name] = manifest.tokens["train"]["max"]
    assert lengths["chatml"] < lengths[None]  # no default system prompt in plain ChatML
