"""Retrieval over the Nordvik documents finds what policy questions ask about."""

import json

import pytest

from specialize.errors import UserFileError
from specialize.evaluate.metrics import contains
from specialize.ladder.retrieval import DocumentRetriever, chunk_documents
from tests.conftest import REPO

NORDVIK = REPO / "examples" / "nordvik"


def _policy_rows():
    for split in ("train", "val", "test"):
        for line in (NORDVIK / "data" / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            if row["task"] == "policy":
                yield row


def test_the_right_document_is_in_the_top_3_for_nine_in_ten_policy_questions():
    retriever = DocumentRetriever(NORDVIK / "docs")
    rows = list(_policy_rows())
    found = sum(
        row["document"] in [c.source for c in retriever.search(row["messages"][1]["content"], 3)]
        for row in rows
    )
    assert len(rows) >= 80
    assert found / len(rows) >= 0.9


def test_the_chunk_with_the_answer_is_retrieved_for_nine_in_ten_eval_questions():
    from tests.unit.ladder.test_generator import FACTS

    answers = {fact[0]: fact[2] for fact in FACTS}
    retriever = DocumentRetriever(NORDVIK / "docs")
    rows = [r for r in _policy_rows() if "aliases" in r]
    hits = sum(
        any(
            contains(c.text, answers[r["fact_id"]])
            for c in retriever.search(r["messages"][1]["content"], 3)
        )
        for r in rows
    )
    assert hits / len(rows) >= 0.9


def test_chunks_keep_paragraphs_within_the_word_budget(tmp_path):
    (tmp_path / "a.md").write_text("# Title\n\none two three\n\nfour five\n\n" + "word " * 50)
    chunks = chunk_documents(tmp_path, max_words=6)
    assert [c.text for c in chunks[:1]] == ["one two three four five"]
    assert all(c.source == "a.md" for c in chunks) and chunks[1].index == 1


def test_an_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(UserFileError, match="no documents"):
        chunk_documents(tmp_path)
