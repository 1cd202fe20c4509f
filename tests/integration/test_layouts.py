"""Other tools' row layouts: each goes through `data check`, `data prepare` and a short training run.

One SFT run trains on every chat-shaped layout at once, one DPO run on both preference layouts;
the rest checks rows and defects line by line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from specialize.data.layouts import LayoutOptions
from specialize.data.templates import mask_row
from specialize.data.validate import check_file

TOPICS = [
    ("block a card", "Open the app and tap Block card."),
    ("open a savings account", "Choose Savings in the app and confirm with BankID."),
    ("change my address", "Update it under Profile, then Address."),
    ("raise the card limit", "Limits are under Card settings; up to 50,000 kr a day."),
    ("find my IBAN", "It is on the Account page under Details."),
    ("report a lost phone", "Call 020-123 456 and we lock the app at once."),
    ("order a new PIN", "Request it under Card, PIN letter; it arrives in five days."),
    ("close an account", "Empty it first, then choose Close under Account settings."),
    ("pay an invoice abroad", "Use International transfer and enter the BIC code."),
    ("set up a standing order", "Payments, then Recurring, then pick the date and amount."),
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "branch_hours",
        "description": "Opening hours of a branch",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
CITIES = ["Oslo", "Bergen", "Tromsø", "Stavanger", "Bodø", "Ålesund", "Molde", "Hamar"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def sharegpt_rows() -> list[dict]:
    return [
        {
            "conversations": [
                {"from": "human", "value": f"How do I {q}?"},
                {"from": "gpt", "value": a},
            ],
            "system": "You are Nordvik Bank's assistant.",
        }
        for q, a in TOPICS
    ]


def tool_rows() -> list[dict]:
    rows = []
    for index, city in enumerate(CITIES):
        call = {
            "id": f"call_{index}",
            "type": "function",
            "function": {"name": "branch_hours", "arguments": json.dumps({"city": city})},
        }
        rows.append(
            {
                "tools": [WEATHER_TOOL],
                "messages": [
                    {"role": "user", "content": f"When is the {city} branch open?"},
                    {"role": "assistant", "content": None, "tool_calls": [call]},
                    {"role": "tool", "tool_call_id": f"call_{index}", "content": f"9-{10 + index}"},
                    {"role": "assistant", "content": f"The {city} branch opens 9 to {10 + index}."},
                ],
            }
        )
    return rows


def sharegpt_tool_rows() -> list[dict]:
    """LLaMA-Factory's tool layout: function_call / observation turns, tools as a JSON string."""
    return [
        {
            "conversations": [
                {"from": "human", "value": f"Hours in {city} please"},
                {
                    "from": "function_call",
                    "value": json.dumps({"name": "branch_hours", "arguments": {"city": city}}),
                },
                {"from": "observation", "value": f"8-{15 + i % 3}"},
                {"from": "gpt", "value": f"{city}: 8 to {15 + i % 3}, Monday to Friday."},
            ],
            "tools": json.dumps([WEATHER_TOOL["function"]]),
        }
        for i, city in enumerate(CITIES)
    ]


def alpaca_history_rows() -> list[dict]:
    return [
        {
            "instruction": f"And how long does it take to {q}?",
            "input": "",
            "output": f"About {i + 2} minutes.",
            "history": [[f"How do I {q}?", a]],
        }
        for i, (q, a) in enumerate(TOPICS)
    ]


def conversational_pc_rows() -> list[dict]:
    return [
        {
            "prompt": [
                {"role": "system", "content": "Answer as Nordvik Bank."},
                {"role": "user", "content": f"Quick question: can I {q} online?"},
            ],
            "completion": [{"role": "assistant", "content": f"Yes. {a}"}],
        }
        for q, a in TOPICS
    ]


def openai_dpo_rows() -> list[dict]:
    return [
        {
            "input": {"messages": [{"role": "user", "content": f"How can I {q}?"}]},
            "preferred_output": [{"role": "assistant", "content": a}],
            "non_preferred_output": [{"role": "assistant", "content": f"No idea about {q}."}],
        }
        for q, a in TOPICS
    ]


def implicit_preference_rows() -> list[dict]:
    return [
        {
            "chosen": [
                {"role": "user", "content": f"Is it possible to {q}?"},
                {"role": "assistant", "content": a},
            ],
            "rejected": [
                {"role": "user", "content": f"Is it possible to {q}?"},
                {"role": "assistant", "content": "Figure it out yourself."},
            ],
        }
        for q, a in TOPICS
    ]


def renamed_rows() -> list[dict]:
    """Column mapping: the conversation is in "dialog", speakers in "speaker"/"text", tag "bot"."""
    return [
        {
            "dialog": [
                {"speaker": "customer", "text": f"Tell me how to {q}"},
                {"speaker": "bot", "text": a},
            ]
        }
        for q, a in TOPICS
    ]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)  # ChatML without tools: the fallback


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    from datasets import Dataset, DatasetDict

    root = tmp_path_factory.mktemp("layouts")
    out = {
        "sharegpt": write_jsonl(root / "sharegpt.jsonl", sharegpt_rows()),
        "tools": write_jsonl(root / "tools.jsonl", tool_rows()),
        "alpaca_history": write_jsonl(root / "alpaca.jsonl", alpaca_history_rows()),
        "conversational_pc": write_jsonl(root / "cpc.jsonl", conversational_pc_rows()),
        "openai_dpo": write_jsonl(root / "openai_dpo.jsonl", openai_dpo_rows()),
        "implicit": write_jsonl(root / "implicit.jsonl", implicit_preference_rows()),
        "renamed": write_jsonl(root / "renamed.jsonl", renamed_rows()),
    }
    out["sharegpt_tools"] = root / "sharegpt_tools.json"  # one JSON document, as LLaMA-Factory's
    out["sharegpt_tools"].write_text(json.dumps(sharegpt_tool_rows()))
    saved = root / "saved"
    DatasetDict(
        {"train": Dataset.from_list(tool_rows()[:6]), "test": Dataset.from_list(tool_rows()[6:])}
    ).save_to_disk(str(saved))
    out["saved"] = saved
    Dataset.from_list(sharegpt_rows()).save_to_disk(str(root / "single"))
    out["arrow"] = next((root / "single").glob("*.arrow"))
    return out


def test_every_layout_checks_clean(files):
    expected = {
        "sharegpt": ("chat", "sharegpt", 10),
        "tools": ("chat", None, 8),
        "sharegpt_tools": ("chat", "sharegpt", 8),
        "alpaca_history": ("chat", "alpaca_history", 10),
        "conversational_pc": ("chat", "conversational_prompt_completion", 10),
        "openai_dpo": ("preference", "openai_dpo", 10),
        "implicit": ("preference", "implicit_prompt_preference", 10),
        "saved": ("chat", None, 8),
        "arrow": ("chat", "sharegpt", 10),
    }
    for name, (kind, layout, rows) in expected.items():
        checked = list(check_file(files[name]))
        assert len(checked) == rows, name
        for row in checked:
            assert row.defects == [] and row.row is not None, (name, row.defects)
            assert (row.kind, row.layout) == (kind, layout), name


def test_sharegpt_rows_become_chat_with_the_system_prompt(files):
    first = next(check_file(files["sharegpt"])).row
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant"]
    assert first["messages"][0]["content"] == "You are Nordvik Bank's assistant."
    assert "conversations" not in first and "system" not in first


def test_alpaca_history_turns_are_kept_and_trained(files, tokenizer):
    row = next(check_file(files["alpaca_history"])).row
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"] * 2
    trained = trained_text(tokenizer, row)
    assert TOPICS[0][1] in trained and "About 2 minutes." in trained
    context_only = LayoutOptions(train_history=False)
    row = next(check_file(files["alpaca_history"], layout=context_only)).row
    trained = trained_text(tokenizer, row)
    assert TOPICS[0][1] not in trained and "About 2 minutes." in trained
    assert TOPICS[0][1] in tokenizer.decode(mask_row(tokenizer, row).input_ids)  # still context


def test_conversational_prompt_completion_trains_on_the_completion_only(files, tokenizer):
    row = next(check_file(files["conversational_pc"])).row
    assert trained_text(tokenizer, row).strip() == f"Yes. {TOPICS[0][1]}<|im_end|>"


def test_openai_dpo_and_implicit_prompt_become_prompt_chosen_rejected(files):
    dpo = next(check_file(files["openai_dpo"])).row
    assert dpo["prompt"] == [{"role": "user", "content": f"How can I {TOPICS[0][0]}?"}]
    assert dpo["chosen"] == [{"role": "assistant", "content": TOPICS[0][1]}]
    implicit = next(check_file(files["implicit"])).row
    assert [m["role"] for m in implicit["prompt"]] == ["user"]
    assert implicit["rejected"] == [{"role": "assistant", "content": "Figure it out yourself."}]


def trained_text(tokenizer, row: dict) -> str:
    masked = mask_row(tokenizer, row)
    return tokenizer.decode([i for i, m in zip(masked.input_ids, masked.mask, strict=True) if m])


def test_tool_calls_are_trained_and_tool_results_are_not(files, tokenizer):
    row = next(check_file(files["tools"])).row
    text = tokenizer.decode(mask_row(tokenizer, row).input_ids)
    assert '"name": "branch_hours"' in text.split("<|im_start|>user")[0]  # schemas in the system
    trained = trained_text(tokenizer, row)
    assert '<tool_call>\n{"name": "branch_hours", "arguments": {"city": "Oslo"}}' in trained
    assert "The Oslo branch opens 9 to 10." in trained
    assert (
        "9-10" not in trained and "tool_response" not in trained and "Opening hours" not in trained
    )
    sharegpt = next(check_file(files["sharegpt_tools"])).row
    assert sharegpt["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Oslo"}
    assert "8-15" not in trained_text(tokenizer, sharegpt)


NATIVE_TOOL_TEMPLATE = (
    "{% if tools %}<|im_start|>system\nTOOLS{% for t in tools %} {{ t.function.name }}{% endfor %}"
    "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
    "{% if m.tool_calls %}{% for c in m.tool_calls %}CALL {{ c.function.name }}"
    "{{ c.function.arguments | tojson }}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def test_a_template_that_knows_tools_renders_them_itself(files, tokenizer):
    import copy

    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = NATIVE_TOOL_TEMPLATE
    row = next(check_file(files["tools"])).row
    text = tokenizer.decode(mask_row(tokenizer, row).input_ids)
    assert text.startswith("<|im_start|>system\nTOOLS branch_hours<|im_end|>")
    trained = trained_text(tokenizer, row)
    assert 'CALL branch_hours{"city": "Oslo"}' in trained and "9-10" not in trained


@pytest.mark.parametrize(
    ("row", "category", "field"),
    [
        (
            {"conversations": [{"from": "bot", "value": "hi"}]},
            "unknown_role",
            "conversations[0].from",
        ),
        (
            {
                "conversations": [
                    {"from": "human", "value": "hours?"},
                    {"from": "function_call", "value": "{not json"},
                ]
            },
            "bad_tool_call",
            "conversations[1].value",
        ),
        (
            {"instruction": "a", "output": "b", "history": [["only one"]]},
            "wrong_type",
            "history[0]",
        ),
        (
            {
                "chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                "rejected": [
                    {"role": "user", "content": "c"},
                    {"role": "assistant", "content": "d"},
                ],
            },
            "no_shared_prompt",
            "chosen",
        ),
        (
            {"input": {"messages": [{"role": "user", "content": "q"}]}, "preferred_output": []},
            "missing_field",
            "non_preferred_output",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "tool", "content": "r"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "turn_order",
            "messages[1].role",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {
                        "role": "assistant",
                        "tool_calls": [{"function": {"name": "f", "arguments": "{x"}}],
                    },
                ]
            },
            "bad_tool_call",
            "messages[1].tool_calls[0].function.arguments",
        ),
        ({"messages": [{"role": "user", "content": "q"}], "tools": "{x"}, "bad_tools", "tools"),
    ],
)
def test_layout_defects_name_line_and_field(tmp_path, row, category, field):
    good = sharegpt_rows()[0]
    path = write_jsonl(tmp_path / "d.jsonl", [good, row])
    ok, bad = check_file(path)
    assert ok.row is not None
    assert bad.row is None and bad.errors[0].category == category, bad.defects
    assert bad.errors[0].where == f"{path}:2" and bad.errors[0].field == field


def test_column_mapping_and_role_tags(files):
    options = LayoutOptions(
        columns={"messages": "dialog", "role": "speaker", "content": "text"},
        roles={"customer": "user", "bot": "assistant"},
    )
    (first, *_) = check_file(files["renamed"], layout=options)
    assert first.row["messages"][1] == {"role": "assistant", "content": TOPICS[0][1]}
    unmapped = next(check_file(files["renamed"]))
    assert unmapped.errors[0].category == "unknown_kind"
    missing = next(check_file(files["sharegpt"], layout=LayoutOptions(columns={"prompt": "q"})))
    assert missing.errors[0].field == "q" and "columns.prompt" in missing.errors[0].message


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def test_cli_check_prepare_and_train_on_every_chat_layout(cli, files, tmp_path, tiny_model_dir):
    code, out, err = cli("data", "check", files["sharegpt"], files["saved"], files["tools"])
    assert code == 0, err
    assert "26 rows: 26 valid" in out and "sharegpt: 10" in out
    sources = [
        {"path": str(files[name])}
        for name in (
            "sharegpt",
            "tools",
            "sharegpt_tools",
            "alpaca_history",
            "conversational_pc",
            "saved",
            "arrow",
        )
    ]
    sources.append(
        {
            "path": str(files["renamed"]),
            "columns": {"messages": "dialog", "role": "speaker", "content": "text"},
            "roles": {"customer": "user", "bot": "assistant"},
        }
    )
    config = write_yaml(
        tmp_path / "data.yaml",
        {
            "sources": sources,
            "model": str(tiny_model_dir),
            "split": {"val": 0.1, "test": 0.0},
            "clean": {"dedup_near": False, "pii": "keep"},
        },
    )
    code, out, err = cli("data", "prepare", config, "--out", tmp_path / "ds")
    assert code == 0, err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    counts = manifest["counts"]
    # the saved folder and the .arrow file repeat the tool and ShareGPT rows: one copy is kept
    assert counts["input"] == 74 and counts["rejected_by_reason"] == {"duplicate": 18}, counts
    train_rows = [json.loads(x) for x in (tmp_path / "ds" / "train.jsonl").read_text().splitlines()]
    assert any("tools" in r and r["messages"][1].get("tool_calls") for r in train_rows)
    recipe = {
        "model": str(tiny_model_dir),
        "method": "sft",
        "data": {"train": [str(tmp_path / "ds")]},
        "training": {"epochs": 1, "batch_size": 8, "learning_rate": 5e-3, "max_length": 384},
        "eval": {"every_steps": 100, "patience": None},
        "retention": {"suite": "none"},
        "output": {"dir": str(tmp_path / "run")},
    }
    code, out, err = cli("train", write_yaml(tmp_path / "r.yaml", recipe), "--no-progress")
    assert code == 0, err
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_cli_prepare_and_dpo_on_both_preference_layouts(cli, files, tmp_path, tiny_model_dir):
    config = write_yaml(
        tmp_path / "data.yaml",
        {
            "sources": [{"path": str(files["openai_dpo"])}, {"path": str(files["implicit"])}],
            "model": str(tiny_model_dir),
            "split": {"val": 0.1, "test": 0.0},
            "clean": {"dedup_near": False},
        },
    )
    code, _, err = cli("data", "prepare", config, "--out", tmp_path / "ds")
    assert code == 0, err
    manifest = json.loads((tmp_path / "ds" / "manifest.json").read_text())
    assert manifest["counts"]["input"] == 20 and manifest["counts"]["rejected"] == 0
    recipe = {
        "model": str(tiny_model_dir),
        "method": "dpo",
        "data": {"train": [str(tmp_path / "ds")]},
        "training": {"epochs": 1, "batch_size": 4, "learning_rate": 5e-4, "max_length": 128},
        "eval": {"every_steps": 100, "patience": None},
        "retention": {"suite": "none"},
        "output": {"dir": str(tmp_path / "run")},
    }
    code, _, err = cli("train", write_yaml(tmp_path / "r.yaml", recipe), "--no-progress")
    assert code == 0, err
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
