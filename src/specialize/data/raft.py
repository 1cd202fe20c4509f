"""Retrieval-augmented fine-tuning (RAFT): training rows that carry retrieved document chunks.

An adapter that never saw retrieved context in training breaks its format when `tuned+rag` adds
it, and learns nothing about using documents. RAFT (Zhang et al., 2024) trains with context:
each chat row's system prompt gets the top-k chunks retrieved for its question, plus distractor
chunks drawn at random, and for a seeded share of rows the right document ("oracle") is left out,
so the model learns to use documents when they help and its own knowledge when they do not.
With `share` below 1 only that seeded share of rows gets context: the adapter also keeps the bare
layout the `tuned` rung shows, and training costs fewer tokens (context is most of a row).

The chunks are retrieved and formatted exactly as the ladder's rag rungs do it
(`specialize.data.retrieval`), so `tuned+rag` presents context as training did.

The oracle of a row is the document its `document` field names when it has one, else the
document of the best chunk for question + answer (recorded per row as `raft.oracle_from`).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from specialize.data.retrieval import Chunk, DocumentRetriever, with_excerpts


@dataclass(frozen=True)
class RaftSettings:
    documents: str
    top_k: int = 3
    distractors: int = 1
    p_oracle_dropped: float = 0.2
    chunk_words: int = 40
    share: float = 1.0
    seed: int = 0

    @property
    def chunks_per_row(self) -> int:
        """How many chunks a row shows; tuned+rag retrieves as many at inference."""
        return self.top_k + self.distractors


@dataclass
class RaftResult:
    rows: list[dict]
    counts: dict


def augment_with_context(
    rows: list[dict], settings: RaftSettings, retriever: DocumentRetriever | None = None
) -> RaftResult:
    """Return rows with retrieved chunks in their system prompt, and counts of what happened."""
    retriever = retriever or DocumentRetriever(settings.documents, max_words=settings.chunk_words)
    rng = random.Random(settings.seed)
    # its own stream, so share=1 draws exactly the distractors and drops it always did
    chosen = random.Random(f"{settings.seed}:share")
    counts: Counter = Counter()
    out = []
    for row in rows:
        messages = row.get("messages")
        question = _last(messages, "user")
        answer = _last(messages, "assistant")
        if not question or not answer or messages[-1].get("role") != "assistant":
            counts["left_as_is_not_chat"] += 1
            out.append(row)
            continue
        if settings.share < 1 and chosen.random() >= settings.share:
            counts["left_as_is_by_share"] += 1
            out.append(row)
            continue
        oracle, found_by = _oracle(row, question, answer, retriever)
        drop = oracle is not None and rng.random() < settings.p_oracle_dropped
        chunks = _context(question, oracle if drop else None, settings, retriever, rng)
        counts[f"oracle_from_{found_by}"] += 1
        counts["oracle_dropped" if drop else "oracle_kept"] += 1
        counts["oracle_in_context"] += any(c.source == oracle for c in chunks)
        counts["rows_with_context"] += 1
        out.append(_with_context(row, chunks, oracle, found_by, drop))
    counts["rows"] = len(rows)
    counts["chunks"] = len(retriever.chunks)
    return RaftResult(out, dict(sorted(counts.items())))


def _last(messages, role: str) -> str | None:
    if not isinstance(messages, list):
        return None
    found = [m.get("content") for m in messages if isinstance(m, dict) and m.get("role") == role]
    return found[-1] if found and isinstance(found[-1], str) else None


def _oracle(
    row: dict, question: str, answer: str, retriever: DocumentRetriever
) -> tuple[str | None, str]:
    sources = {c.source for c in retriever.chunks}
    named = row.get("document")
    if isinstance(named, str):
        for candidate in (named, Path(named).name):
            if candidate in sources:
                return candidate, "document_field"
    best = retriever.search(f"{question} {answer}", 1)
    return (best[0].source, "answer_search") if best else (None, "not_found")


def _context(
    question: str,
    left_out: str | None,
    settings: RaftSettings,
    retriever: DocumentRetriever,
    rng: random.Random,
) -> list[Chunk]:
    """Top-k retrieved chunks (none from `left_out`), distractors inserted at random places."""
    wanted = settings.top_k
    pool = retriever.search(question, wanted + (len(retriever.chunks) if left_out else 0))
    retrieved = [c for c in pool if c.source != left_out][:wanted]
    taken = {(c.source, c.index) for c in retrieved}
    others = [
        c for c in retriever.chunks if (c.source, c.index) not in taken and c.source != left_out
    ]
    chunks = list(retrieved)
    for distractor in rng.sample(others, min(settings.distractors, len(others))):
        chunks.insert(rng.randint(0, len(chunks)), distractor)
    return chunks


def _with_context(
    row: dict, chunks: list[Chunk], oracle: str | None, found_by: str, dropped: bool
) -> dict:
    messages = [dict(m) for m in row["messages"]]
    if not chunks:
        return {**row, "raft": {"oracle": oracle, "oracle_from": found_by, "chunks": []}}
    system = next((m for m in messages if m.get("role") == "system"), None)
    extended = with_excerpts(system["content"] if system else "", chunks)
    if system is not None:
        system["content"] = extended
    else:
        messages.insert(0, {"role": "system", "content": extended})
    record = {
        "oracle": oracle,
        "oracle_from": found_by,
        "oracle_dropped": dropped,
        "chunks": [f"{c.source}#{c.index}" for c in chunks],
    }
    return {**row, "messages": messages, "raft": record}
