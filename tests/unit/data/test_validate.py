"""One test per defect category, each checking the line and field path it reports."""

import json

import pytest

from specialize.data.validate import check_file, check_files


def chat(user="How do I block my card?", answer="Open the app and tap Block card.", **extra):
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}],
        **extra,
    }


def write_jsonl(path, rows):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def only_defect(tmp_path, bad_row, *, good_first=True):
    rows = ([chat()] if good_first else []) + [bad_row]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    checked = list(check_file(path))
    assert len(checked) == len(rows)
    last = checked[-1]
    assert last.row is None and len(last.errors) == 1, last.defects
    defect = last.errors[0]
    assert defect.where == f"{path}:{len(rows)}"
    return defect


@pytest.mark.parametrize(
    ("bad", "category", "field"),
    [
        ('{"messages": [', "malformed_json", ""),
        ("[1, 2]", "unknown_kind", ""),
        (
            {"messages": [{"role": "bot", "content": "x"}, {"role": "assistant", "content": "y"}]},
            "unknown_role",
            "messages[0].role",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "  "},
                    {"role": "assistant", "content": "y"},
                ]
            },
            "empty_content",
            "messages[0].content",
        ),
        ({"messages": [{"role": "user", "content": "q"}]}, "no_assistant_turn", "messages"),
        (
            {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]},
            "turn_order",
            "messages[0].role",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "system", "content": "s"},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "turn_order",
            "messages[1].role",
        ),
        (
            {"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]},
            "missing_field",
            "messages[0].role",
        ),
        ({"messages": "hello"}, "wrong_type", "messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": "q"},
                    {"role": "assistant", "content": "a", "weight": 2},
                ]
            },
            "bad_weight",
            "messages[1].weight",
        ),
        ({"text": "raw"}, "mixed_kinds", ""),
    ],
)
def test_each_defect_category_is_named_with_line_and_field(tmp_path, bad, category, field):
    defect = only_defect(tmp_path, bad)
    assert (defect.category, defect.field) == (category, field)


def test_not_utf8(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(json.dumps(chat()).encode() + b"\n" + b'{"text": "caf\xe9"}\n')
    checked = list(check_file(path))
    assert checked[1].errors[0].category == "not_utf8" and checked[1].raw.line == 2


def test_missing_and_unreadable_media(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    rows = [
        {
            "messages": [
                {"role": "user", "content": "What is this?", "image": "nope.png"},
                {"role": "assistant", "content": "A card."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image", "path": "broken.png"}]},
                {"role": "assistant", "content": "A card."},
            ]
        },
    ]
    path = write_jsonl(tmp_path / "mm.jsonl", rows)
    first, second = check_file(path)
    assert first.errors[0].category == "missing_media" and "nope.png" in first.errors[0].message
    assert second.errors[0].category == "unreadable_media"
    assert second.errors[0].field == "messages[0].content[0].path"


def test_valid_multimodal_row_resolves_media(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "cheque.png")
    row = {
        "messages": [
            {"role": "user", "content": "What is this?", "image": "cheque.png"},
            {"role": "assistant", "content": "A cheque."},
        ]
    }
    (checked,) = check_file(write_jsonl(tmp_path / "mm.jsonl", [row]))
    assert checked.kind == "multimodal" and checked.row["images"] == [str(tmp_path / "cheque.png")]


def test_conversions_follow_trl_conventions(tmp_path):
    cases = {
        "instruction": (
            {"instruction": "Translate", "input": "hej", "output": "hello"},
            {"messages"},
        ),
        "prompt_completion": ({"prompt": "2+2=", "completion": "4"}, {"prompt", "completion"}),
        "preference": (
            {"prompt": "Hi", "chosen": "Hello! How can I help?", "rejected": "What."},
            {"prompt", "chosen", "rejected"},
        ),
        "text": ({"text": "Nordvik Bank was founded in 1871."}, {"text"}),
    }
    for kind, (row, keys) in cases.items():
        (checked,) = check_file(write_jsonl(tmp_path / f"{kind}.jsonl", [row]))
        assert checked.kind == kind and set(checked.row) == keys, checked.defects
    (inst,) = check_file(tmp_path / "instruction.jsonl")
    assert inst.row["messages"][0]["content"] == "Translate\n\nhej"


def test_legacy_function_keys_are_ignored_with_a_warning(tmp_path):
    row = chat(functions=[{"name": "f"}])
    (checked,) = check_file(write_jsonl(tmp_path / "t.jsonl", [row]))
    assert checked.row is not None and "functions" not in checked.row
    assert [d.category for d in checked.defects] == ["ignored_field"]


def test_too_long_uses_the_models_tokenizer(tmp_path, tiny_model_dir):
    from specialize.data.validate import LengthLimit
    from specialize.models.loading import load_tokenizer

    path = write_jsonl(tmp_path / "d.jsonl", [chat(), chat(answer="word " * 200)])
    limit = LengthLimit(load_tokenizer(str(tiny_model_dir)), 64)
    short, long = check_file(path, limit=limit)
    assert short.defects == [] and short.tokens < 64
    assert long.defects[0].category == "too_long" and long.tokens > 64


def test_csv_and_json_and_parquet_and_text_folders(tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(tmp_path / "d.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["prompt", "completion"])
        writer.writerow(["multi\nline prompt", "yes"])
        writer.writerow(["p2", ""])
    (tmp_path / "d.json").write_text(json.dumps([chat(), {"messages": []}]))
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": ""}]), tmp_path / "d.parquet")
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.md").write_text("# Fees\nNo fee.")
    summary = check_files([tmp_path / "d.csv", tmp_path / "d.json", tmp_path / "d.parquet", folder])
    assert summary.rows == 7 and summary.valid == 4
    csv_rows = list(check_file(tmp_path / "d.csv"))
    assert [c.raw.line for c in csv_rows] == [3, 4]  # the first record spans lines 2-3
    assert csv_rows[1].errors[0].field == "completion"


def test_check_keeps_a_bounded_sample(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", ['{"x"'] * 100)
    summary = check_files([path])
    assert summary.errors["malformed_json"] == 100 and len(summary.samples["malformed_json"]) == 20
