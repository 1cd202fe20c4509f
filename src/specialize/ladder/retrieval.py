"""Retrieval lives in `specialize.data.retrieval` (training uses it too); re-exported here."""

from specialize.data.retrieval import (
    EXCERPTS_HEADER,
    BM25Index,
    Chunk,
    DocumentRetriever,
    chunk_documents,
    with_excerpts,
)

__all__ = [
    "EXCERPTS_HEADER",
    "BM25Index",
    "Chunk",
    "DocumentRetriever",
    "chunk_documents",
    "with_excerpts",
]
