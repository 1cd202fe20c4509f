"""RAFT rows: retrieved chunks as the ladder shows them, distractors, a seeded share without the oracle."""

import json

from specialize.config import build_config
from specialize.data.raft import RaftSettings, augment_with_context
from specialize.data.retrieval import EXCERPTS_HEADER, DocumentRetriever
from specialize.evaluate.tasks import EvalItem
from specialize.ladder.config import LadderConfig
from specialize.ladder.prompts import RungPrompts
from tests.conftest import REPO

NORDVIK = REPO / "examples" / "nordvik"
ROWS = [
    json.loads(line)
    for line in (NORDVIK / "data" / "train.jsonl").read_text().splitlines()
    if line.strip()
]
POLICY = [r for r in ROWS if r["task"] == "policy"]


def _settings(**kw) -> RaftSettings:
    return RaftSettings(documents=str(NORDVIK / "docs"), **kw)


def test_every_chat_row_gets_top_k_plus_distractors_and_a_seeded_share_loses_its_document():
    settings = _settings(top_k=3, distractors=2, p_oracle_dropped=0.3, seed=5)
    result = augment_with_context(POLICY, settings)
    counts = result.counts
    assert counts["rows"] == counts["rows_with_context"] == len(POLICY)
    assert counts["oracle_from_document_field"] == len(POLICY)  # Nordvik rows name their document
    assert 0.15 < counts["oracle_dropped"] / len(POLICY) < 0.45
    for before, after in zip(POLICY, result.rows, strict=True):
        record = after["raft"]
        assert 2 <= len(record["chunks"]) <= 5  # BM25 returns only chunks sharing a word
        assert after["messages"][1:] == before["messages"][1:]  # question and answer untouched
        system = after["messages"][0]["content"]
        assert system.startswith(before["messages"][0]["content"]) and EXCERPTS_HEADER in system
        sources = {c.split("#")[0] for c in record["chunks"]}
        if record["oracle_dropped"]:
            assert before["document"] not in sources
    full = sum(len(r["raft"]["chunks"]) == 5 for r in result.rows)
    assert full / len(POLICY) > 0.8
    kept = [r for r in result.rows if not r["raft"]["oracle_dropped"]]
    found = sum(r["document"] in {c.split("#")[0] for c in r["raft"]["chunks"]} for r in kept)
    assert found / len(kept) > 0.7  # retrieval mostly finds the right document when it may
    assert augment_with_context(POLICY, settings).rows == result.rows  # seeded
    other = augment_with_context(POLICY, _settings(top_k=3, distractors=2, p_oracle_dropped=0.3))
    assert other.rows != result.rows


def test_rows_without_a_document_field_find_their_oracle_by_the_answer_and_non_chat_rows_stay():
    rows = [{k: v for k, v in POLICY[0].items() if k != "document"}, {"text": "raw text"}]
    result = augment_with_context(rows, _settings(p_oracle_dropped=0.0))
    assert result.rows[0]["raft"]["oracle_from"] == "answer_search"
    assert result.rows[0]["raft"]["oracle"] == POLICY[0]["document"]
    assert result.rows[1] == {"text": "raw text"}
    assert result.counts["left_as_is_not_chat"] == 1


def test_training_context_is_formatted_exactly_as_the_tuned_rag_rung_shows_it():
    retriever = DocumentRetriever(NORDVIK / "docs")
    row = POLICY[0]
    trained = augment_with_context(
        [row], _settings(top_k=3, distractors=0, p_oracle_dropped=0.0), retriever
    ).rows[0]
    task = build_config(
        LadderConfig, {"tasks": [{"name": "p", "data": "x"}], "rungs": ["base"]}
    ).tasks[0]
    item = EvalItem("x", row["messages"][:-1], [row["messages"][-1]["content"]])
    shown = RungPrompts(task, None, 0, retriever, 3).build("tuned+rag", item)
    assert shown == trained["messages"][:-1]


def test_share_gives_context_to_a_seeded_share_of_rows_and_leaves_the_rest_as_they_were():
    full = augment_with_context(POLICY, _settings(seed=3))
    result = augment_with_context(POLICY, _settings(seed=3, share=0.25))
    counts = result.counts
    assert counts["rows_with_context"] + counts["left_as_is_by_share"] == counts["rows"]
    assert 0.1 < counts["rows_with_context"] / len(POLICY) < 0.45
    bare = [after for before, after in zip(POLICY, result.rows, strict=True) if after == before]
    assert len(bare) == counts["left_as_is_by_share"]  # untouched, no raft record
    assert all(EXCERPTS_HEADER in r["messages"][0]["content"] for r in result.rows if "raft" in r)
    assert augment_with_context(POLICY, _settings(seed=3, share=0.25)).rows == result.rows
    assert "left_as_is_by_share" not in full.counts  # share 1: every row, as before
    assert full.counts["rows_with_context"] == len(POLICY)
