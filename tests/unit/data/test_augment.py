"""Fact augmentation: seeded phrasings of train questions only, marked, counted, never in val/test."""

import json

import pytest

from specialize.data.augment import (
    TEMPLATES,
    key_facts,
    paraphrase_rows,
    template_rows,
    with_template,
)
from specialize.data.config import load_data_config
from specialize.data.prepare import prepare
from specialize.errors import DataError
from tests.conftest import REPO

NORDVIK = REPO / "examples" / "nordvik" / "data"


def _chat(user, answer, system=None):
    head = [{"role": "system", "content": system}] if system else []
    return {
        "messages": [
            *head,
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ]
    }


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _prepare(tmp_path, sources, augment, **extra):
    body = {"sources": sources, "model": None, "augment": augment, **extra}
    (tmp_path / "data.yaml").write_text(json.dumps(body))
    manifest = prepare(load_data_config(tmp_path / "data.yaml"), tmp_path / "out", progress=False)
    return manifest, tmp_path / "out"


def test_key_facts_are_numbers_and_names():
    facts = key_facts("The Everyday account costs 25 SEK a month; rates publish at 09:00.")
    assert facts == {"Everyday", "25", "SEK", "09:00"}
    assert key_facts("What does it cost?") == set()


def test_templates_rephrase_only_the_question_paragraph_and_are_seeded():
    row = _chat("Classify the ticket.\n\nWhat does a card cost?", "card")
    made = template_rows(row, 3, seed=1, key="k")
    assert len(made) == 3 and len({g.by for g in made}) == 3
    for generated in made:
        user = generated.row["messages"][0]["content"]
        assert user.startswith("Classify the ticket.\n\n") and user != row["messages"][0]["content"]
        assert generated.row["messages"][1] == row["messages"][1]  # the answer is the fact: kept
    assert [g.row for g in template_rows(row, 3, seed=1, key="k")] == [g.row for g in made]
    assert [g.by for g in template_rows(row, 3, seed=2, key="k")] != [g.by for g in made]
    assert with_template("What is it?", "wondering") == "I was wondering, what is it?"
    assert len(template_rows(row, 99, seed=1, key="k")) == len(TEMPLATES)


def test_a_paraphrase_is_kept_only_when_every_key_fact_survives():
    row = _chat("How much is the Everyday account?", "The Everyday account costs 25 SEK.")
    rewrites = {
        "question": "What does the Everyday account cost me?",
        "answer": "It costs 20 SEK a month.",  # a wrong number: dropped
    }
    kept, dropped = paraphrase_rows(row, lambda kind, text: rewrites[kind], answers=True)
    assert [g.by for g in kept] == ["paraphrase:question"]
    assert dropped == ["answer lost key facts: 25, Everyday"]
    kept, dropped = paraphrase_rows(row, lambda kind, text: "How much is it?", answers=False)
    assert not kept and dropped == ["question lost key facts: Everyday"]


def test_prepare_generates_from_train_only_marks_and_counts_every_row(tmp_path):
    sources = [
        {"path": str(NORDVIK / "train.jsonl"), "split": "train"},
        {"path": str(NORDVIK / "val.jsonl"), "split": "val"},
        {"path": str(NORDVIK / "test.jsonl"), "split": "test"},
    ]
    manifest, out = _prepare(tmp_path, sources, {"phrasings": 2, "seed": 3})
    generated = manifest.counts["generated"]
    train = _read(out / "train.jsonl")
    made = [r for r in train if "generated" in r]
    assert len(made) == generated["rows"] == sum(generated["by"].values())
    originals = generated["from_train_rows"]
    assert generated["rows"] + sum(generated["skipped"].values()) == 2 * originals
    assert generated["rows"] > originals  # most phrasings survive the checks
    assert manifest.counts["input"] == manifest.counts["kept"] + manifest.counts["rejected"]
    for split in ("val", "test"):
        assert not any("generated" in r for r in _read(out / f"{split}.jsonl"))
    ids = {r["id"] for r in train if "generated" not in r}
    assert all(r["generated"]["from"] in ids and r["generated"]["by"] for r in made)
    assert "Fact augmentation" in (out / "report.html").read_text()
    test_questions = {r["messages"][-2]["content"] for r in _read(out / "test.jsonl")}
    assert not {r["messages"][-2]["content"] for r in made} & test_questions


def test_a_phrasing_that_asks_a_test_question_is_dropped(tmp_path):
    train = tmp_path / "train.jsonl"
    test = tmp_path / "test.jsonl"
    train.write_text(json.dumps(_chat("Where is the Nordvik head office?", "In Tromsø.")) + "\n")
    # every template applied to the train question; one of them is exactly the test question
    asked = with_template("Where is the Nordvik head office?", "quick")
    test.write_text(json.dumps(_chat(asked, "Tromsø, by the harbour.")) + "\n")
    sources = [{"path": str(train), "split": "train"}, {"path": str(test), "split": "test"}]
    manifest, out = _prepare(tmp_path, sources, {"phrasings": len(TEMPLATES)})
    generated = manifest.counts["generated"]
    assert generated["skipped"]["matches_a_val_or_test_question"] >= 1
    assert asked not in {r["messages"][0]["content"] for r in _read(out / "train.jsonl")}


def test_model_paraphrases_go_through_the_fact_check(tmp_path, tiny_model_dir):
    rows = [
        _chat("How much is the Everyday account at Nordvik?", "It costs 25 SEK."),
        _chat("When does the Nordvik branch in Bergen open?", "At 09:00."),
    ]
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    augment = {"phrasings": 0, "paraphrase": {"model": str(tiny_model_dir), "answers": True}}
    manifest, out = _prepare(
        tmp_path, [{"path": str(path), "split": "train"}], augment, max_length=256
    )
    generated = manifest.counts["generated"]
    # a random tiny model writes noise: every paraphrase loses its facts and none is kept
    assert generated["rows"] == 0
    assert sum(generated["skipped"].values()) == 4
    assert {k.split(" ")[0] for k in generated["skipped"]} == {
        "paraphrase_question",
        "paraphrase_answer",
    }
    assert len(_read(out / "train.jsonl")) == 2


def test_where_augments_only_the_selected_rows_and_every_row_is_counted(tmp_path):
    sources = [
        {"path": str(NORDVIK / "train.jsonl"), "split": "train"},
        {"path": str(NORDVIK / "test.jsonl"), "split": "test"},
    ]
    where = {"task": "policy"}
    manifest, out = _prepare(tmp_path, sources, {"phrasings": 3, "where": where})
    generated = manifest.counts["generated"]
    train = _read(out / "train.jsonl")
    originals = [r for r in train if "generated" not in r]
    policy = sum(r["task"] == "policy" for r in originals)
    assert generated["selected_rows"] == policy and generated["where"] == where
    assert generated["skipped"]["not_selected_by_where"] == len(originals) - policy
    phrasing_skips = sum(n for k, n in generated["skipped"].items() if k != "not_selected_by_where")
    assert generated["rows"] + phrasing_skips == 3 * policy
    made = [r for r in train if "generated" in r]
    assert made and all(r["task"] == "policy" for r in made)


def test_a_where_field_no_row_has_is_an_error_that_lists_the_fields(tmp_path):
    sources = [{"path": str(NORDVIK / "train.jsonl"), "split": "train"}]
    with pytest.raises(DataError) as error:
        _prepare(tmp_path, sources, {"phrasings": 1, "where": {"topic": "policy"}})
    assert "augment.where" in str(error.value) and "'topic'" in str(error.value)
    assert "task" in error.value.fix
