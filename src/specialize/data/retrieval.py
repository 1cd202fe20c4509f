"""Retrieval: chunked documents, BM25 (bm25s), and the one way retrieved chunks enter a prompt.

Used by the ladder's RAG rungs and few-shot search, and by retrieval-augmented fine-tuning
(data.raft), so that the tuned+rag rung presents context exactly as training did.

Documents are split on blank lines into paragraphs, and paragraphs are merged up to a word budget,
so a chunk is a few related sentences with its document's name. Ranking is BM25 over stemmed
English words without stop words.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from specialize.errors import UserFileError

DOCUMENT_SUFFIXES = (".md", ".txt")
EXCERPTS_HEADER = "Relevant excerpts from the knowledge documents:"


@dataclass(frozen=True)
class Chunk:
    source: str  # the document's file name
    index: int  # position of the chunk within its document
    text: str

    def cited(self) -> str:
        return f"[{self.source}] {self.text}"


def chunk_documents(folder: str | Path, *, max_words: int = 40) -> list[Chunk]:
    """Return the chunks of every .md/.txt file under folder, in file order."""
    root = Path(folder)
    files = sorted(p for p in root.rglob("*") if p.suffix in DOCUMENT_SUFFIXES and p.is_file())
    if not files:
        raise UserFileError(
            "no documents (.md or .txt) found",
            where=str(root),
            fix="point rag.documents at a folder of knowledge documents",
        )
    chunks = []
    for path in files:
        name = str(path.relative_to(root))
        for index, text in enumerate(
            _merge(_paragraphs(path.read_text(encoding="utf-8")), max_words)
        ):
            chunks.append(Chunk(name, index, text))
    return chunks


def _paragraphs(text: str) -> list[str]:
    # Headings are kept out of chunks: the document's name already says where a chunk is from.
    blocks = (" ".join(block.split()) for block in text.split("\n\n"))
    return [b for b in blocks if b and not b.startswith("#")]


def _merge(paragraphs: list[str], max_words: int) -> list[str]:
    merged: list[str] = []
    for paragraph in paragraphs:
        if merged and len(merged[-1].split()) + len(paragraph.split()) <= max_words:
            merged[-1] = f"{merged[-1]} {paragraph}"
        else:
            merged.append(paragraph)
    return merged


class BM25Index:
    """BM25 over a list of texts; `search` returns the indices of the best matches, best first."""

    def __init__(self, texts: list[str]):
        import bm25s
        import Stemmer

        # bm25s sets its logger to DEBUG on import and logs every index build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        self._stemmer = Stemmer.Stemmer("english")
        self._size = len(texts)
        self._bm25 = bm25s.BM25()
        self._bm25.index(self._tokens(texts), show_progress=False)

    def _tokens(self, texts: list[str]) -> list[list[str]]:
        import bm25s

        return bm25s.tokenize(
            texts, stopwords="en", stemmer=self._stemmer, return_ids=False, show_progress=False
        )

    def search(self, query: str, k: int) -> list[int]:
        k = min(k, self._size)
        tokens = self._tokens([query])
        if k == 0 or not tokens[0]:
            return []
        indices, scores = self._bm25.retrieve(tokens, k=k, show_progress=False)
        return [int(i) for i, s in zip(indices[0], scores[0], strict=True) if s > 0]


class DocumentRetriever:
    """Chunks of a folder of documents, searchable by a question."""

    def __init__(self, folder: str | Path, *, max_words: int = 40):
        self.max_words = max_words
        self.chunks = chunk_documents(folder, max_words=max_words)
        self._index = BM25Index([f"{c.source} {c.text}" for c in self.chunks])

    def search(self, question: str, k: int) -> list[Chunk]:
        return [self.chunks[i] for i in self._index.search(question, k)]


def with_excerpts(system: str, chunks: list[Chunk]) -> str:
    """Return the system prompt extended with retrieved chunks (unchanged when there are none).

    The one format of retrieved context: RAG rungs and RAFT training rows both use it.
    """
    if not chunks:
        return system
    excerpts = "\n".join(c.cited() for c in chunks)
    return (
        f"{system}\n\n{EXCERPTS_HEADER}\n{excerpts}" if system else f"{EXCERPTS_HEADER}\n{excerpts}"
    )
