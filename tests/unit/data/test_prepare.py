"""The data stage end to end on a messy file: every row accounted for, leaks kept out of train."""

import json

import pytest

from specialize.data.config import load_data_config
from specialize.data.prepare import prepare
from specialize.errors import ConfigError

TOPICS = [
    "PIN codes",
    "card limits",
    "savings accounts",
    "mortgage rates",
    "lost cards",
    "travel notices",
    "overdrafts",
    "direct debits",
    "salary accounts",
    "currency exchange",
    "app logins",
    "loan applications",
]


def chat(user, answer):
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }


def unique_rows():
    return [
        chat(
            f"What should I know about {t} at Nordvik Bank?",
            f"Everything about {t}: rule {i} applies, see section {i * 7}.",
        )
        for i, t in enumerate(TOPICS)
    ]


def write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def config(tmp_path, sources, **extra):
    body = {"sources": sources, "model": None, "split": {"val": 0.0, "test": 0.0}, **extra}
    path = tmp_path / "data.yaml"
    path.write_text(json.dumps(body))  # JSON is YAML
    return load_data_config(path)


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_messy_file_every_row_accounted_for(tmp_path):
    good = unique_rows()
    test_row = chat("How much does an international transfer cost?", "It costs 50 SEK.")
    messy = good + [
        '{"messages": [',
        chat("Tell me about PIN codes", ""),
        good[0],  # exact duplicate
        chat(
            good[1]["messages"][0]["content"] + " ", good[1]["messages"][1]["content"] + "!"
        ),  # near duplicate
        chat(
            "How much does an international transfer cost?", "50 SEK per transfer."
        ),  # leaked test question
        chat("Mail me at anna@example.se please", "We will write to you at that address."),
    ]
    train_file = write(tmp_path / "train.jsonl", messy)
    test_file = write(tmp_path / "test.jsonl", [test_row])
    manifest = prepare(
        config(tmp_path, [{"path": str(train_file)}, {"path": str(test_file), "split": "test"}]),
        tmp_path / "out",
        progress=False,
    )
    counts = manifest.counts
    assert counts["input"] == len(messy) + 1 == counts["kept"] + counts["rejected"]
    assert counts["rejected_by_reason"] == {
        "malformed_json": 1,
        "empty_content": 1,
        "duplicate": 1,
        "near_duplicate": 1,
        "leak_exact": 1,
    }
    assert counts["changed_by_reason"] == {"pii_masked": 1, "normalised": 1}  # the trailing space
    rejects = read(tmp_path / "out" / "rejects.jsonl")
    assert {r["where"].rsplit(":", 1)[1] for r in rejects} == {"13", "14", "15", "16", "17"}
    train = read(tmp_path / "out" / "train.jsonl")
    assert all("international transfer" not in r["messages"][0]["content"] for r in train)
    assert any("[EMAIL]" in r["messages"][0]["content"] for r in train)
    assert manifest.outputs["train"]["rows"] == len(train) == 13
    assert (tmp_path / "out" / "report.html").read_text().count(
        "<img"
    ) == 0  # no tokenizer, no histogram


def test_eval_file_leak_is_removed_from_train(tmp_path):
    rows = unique_rows()
    eval_file = write(
        tmp_path / "eval.jsonl",
        [chat(rows[3]["messages"][0]["content"].replace("?", " ?"), "x y z")],
    )
    cfg = config(
        tmp_path,
        [{"path": str(write(tmp_path / "t.jsonl", rows))}],
        leakage={"eval_files": [str(eval_file)]},
    )
    manifest = prepare(cfg, tmp_path / "out", progress=False)
    assert (
        manifest.leakage["removed_from_train"]["exact"]
        + manifest.leakage["removed_from_train"]["near"]
        == 1
    )
    assert manifest.counts["kept_by_split"]["train"] == len(rows) - 1


def test_group_key_keeps_related_rows_together(tmp_path):
    rows = [
        {**chat(f"Question {i} about {t}?", f"Answer {i} on {t} in detail."), "customer": t}
        for t in TOPICS
        for i in range(3)
    ]
    cfg = config(
        tmp_path,
        [{"path": str(write(tmp_path / "g.jsonl", rows))}],
        split={"val": 0.3, "test": 0.3, "group_key": "customer", "seed": 2},
        clean={"dedup_near": False},
    )
    prepare(cfg, tmp_path / "out", progress=False)
    where = {}
    for split in ("train", "val", "test"):
        for row in read(tmp_path / "out" / f"{split}.jsonl"):
            where.setdefault(row["customer"], set()).add(split)
    assert all(len(splits) == 1 for splits in where.values())
    assert len({s for v in where.values() for s in v}) >= 2


def test_token_stats_and_histogram_with_a_tokenizer(tmp_path, tiny_model_dir):
    rows = unique_rows() + [chat("Long one?", "word " * 300)]
    cfg = config(
        tmp_path,
        [{"path": str(write(tmp_path / "t.jsonl", rows))}],
        model=str(tiny_model_dir),
        max_length=128,
    )
    manifest = prepare(cfg, tmp_path / "out", progress=False)
    assert manifest.counts["rejected_by_reason"] == {"too_long": 1}
    assert manifest.tokens["train_tokens_per_epoch"] > 0 and manifest.tokens["train"]["max"] <= 128
    assert "<img" in (tmp_path / "out" / "report.html").read_text()


def test_mixing_ratios_and_rejects_for_unused_rows(tmp_path):
    domain = write(tmp_path / "d.jsonl", unique_rows()[:8])
    import random

    words = [
        "river",
        "mountain",
        "copper",
        "violin",
        "orbit",
        "tulip",
        "glacier",
        "lantern",
        "cobalt",
        "meadow",
        "falcon",
        "harbor",
    ]
    rng = random.Random(0)
    general = write(
        tmp_path / "g.jsonl", [{"text": " ".join(rng.choices(words, k=12))} for _ in range(40)]
    )
    cfg = config(
        tmp_path,
        [{"path": str(domain), "ratio": 0.8}, {"path": str(general), "ratio": 0.2, "kind": "text"}],
    )
    manifest = prepare(cfg, tmp_path / "out", progress=False)
    assert (
        manifest.mixing[str(domain)]["drawn"] == 8 and manifest.mixing[str(general)]["drawn"] == 2
    )
    assert manifest.counts["rejected_by_reason"] == {"mixing_ratio": 38}
    assert manifest.counts["input"] == manifest.counts["kept"] + manifest.counts["rejected"]


def test_personal_data_counts_by_kind_and_scheme_in_the_manifest_and_report(tmp_path):
    rows = unique_rows()
    rows[0] = chat("My personnummer is 811228-9874, what now?", "We never ask for it by mail.")
    rows[1] = chat("Call me on 08-123 456 78", "We will call you back, Anna Svensson.")
    rows[2] = chat("Is Dr. Berg my adviser?", "Yes, Dr. Berg handles mortgage rates.")
    source = write(tmp_path / "d.jsonl", rows)
    path = config(tmp_path, [{"path": str(source)}], clean={"pii_names": True})
    manifest = prepare(path, tmp_path / "ds", progress=False)
    counts = manifest.counts
    assert counts["pii_rows_by_kind"] == {"name": 2, "national_id": 1, "phone": 1}
    assert counts["pii_rows_by_detail"] == {"se.personnummer": 1, "phone:SE": 1}
    train = "\n".join(json.dumps(r) for r in read(tmp_path / "ds" / "train.jsonl"))
    assert (
        "[NATIONAL_ID]" in train and "[PHONE]" in train and "We will call you back, [NAME]" in train
    )
    assert "811228-9874" not in train and "Berg" not in train
    assert "se.personnummer" in (tmp_path / "ds" / "report.html").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        json.dumps({"sources": [{"path": str(source)}], "clean": {"phone_regions": ["XX"]}})
    )
    with pytest.raises(ConfigError, match="phone_regions"):
        load_data_config(bad)
