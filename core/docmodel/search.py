"""The retrievers, and the passage index they search: one implementation for the RAG baseline,
a retrieval candidate's training (its distractors), evaluation and serving.

- `BM25`: bm25s (Lucene scoring, English stop words) over the passages' text, headings included.
- `Dense`: cosine similarity of sentence embeddings, exact search (a matrix product in numpy).
  Measured against FAISS (`bench/retrieval.py`): at 100,000 passages of 384 dimensions an
  exact numpy search takes a few milliseconds a query, less than embedding the query, with
  recall 1 by construction and no index to build; an approximate index would trade recall
  for time the query embedding dominates anyway.
- `Hybrid`: both, fused by reciprocal rank (`reciprocal_rank_fusion`, k = 60): each passage
  scores the sum of 1 / (60 + its rank) over the rankings it appears in.

Every ranking breaks ties by corpus position, so training, evaluation and serving pick the same
passages for the same question.

The passage index (`PassageIndex`, `passage-index.json`, with the embeddings in
`embeddings.npy`, float32, one row per passage of `chunks.jsonl`, L2-normalised) is written
once per revision by the ingest step, and copied into a retrieval revision's adapter, so
nothing after ingest embeds the corpus again: evaluation and the server embed queries only,
with the same model, which `check_embedding` verifies (name, dimensions, content digest).

The embedding model itself runs in the images (`docmodel_embedding`); the core sees it as a
`QueryEncoder` and imports no ML library beyond numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Generic, Literal, Protocol, TypeVar

import numpy as np
from pydantic import BaseModel, Field

log = logging.getLogger("docmodel.search")

RetrieverKind = Literal["BM25", "Dense", "Hybrid"]
RETRIEVERS: tuple[RetrieverKind, ...] = ("BM25", "Dense", "Hybrid")
RRF_K = 60
# How deep each ranking goes into the fusion: k alone would let a passage both rankings put
# just below k lose to one only a single ranking found.
FUSION_DEPTH = 50

INDEX_FILE = "passage-index.json"
EMBEDDINGS_FILE = "embeddings.npy"


class EmbeddingMismatch(ValueError):
    """The embedding model at hand is not the one the passages were embedded with."""


class Passage(Protocol):
    """What the retrievers read of a passage (`docmodel.dataset.Chunk` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def heading_path(self) -> list[str]: ...
    @property
    def text(self) -> str: ...


P = TypeVar("P", bound=Passage)


def indexed_text(chunk: Passage) -> str:
    """What is indexed of a passage, by every retriever: its headings, then its text."""
    return " ".join([*chunk.heading_path, chunk.text])


class EmbeddingInfo(BaseModel):
    """Which model embedded the passages, and how; a query must be embedded the same way."""

    name: str = Field(description="The model as the spec names it.")
    identity: str = Field(
        description="Its content (`docmodel.basemodel.identity`): a digest where the files "
        "were on the machine, else the name."
    )
    dimensions: int = Field(ge=1)
    pooling: str = Field(description="mean or cls, from the model's pooling config.")
    normalized: bool = True
    max_seq_length: int = Field(ge=1, description="Tokens embedded per text; longer ones are cut.")


class QueryEncoder(Protocol):
    """An embedding model as the retrievers use it (`docmodel_embedding.SentenceEncoder`)."""

    @property
    def info(self) -> EmbeddingInfo: ...

    def encode(self, texts: Sequence[str], progress: str | None = None) -> np.ndarray:
        """One L2-normalised float32 row per text (with `progress`, logged on long runs)."""
        ...


class PassageIndex(BaseModel):
    """What the ingest step indexed of a revision's passages (`passage-index.json`)."""

    retriever: RetrieverKind
    passages: int = Field(ge=0)
    passage_ids: str = Field(description="sha256 of the passage ids in order (row order).")
    embedding: EmbeddingInfo | None = Field(
        default=None, description="Set when the passages were embedded (Dense, Hybrid)."
    )


def ids_digest(chunks: Sequence[Passage]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(c.id for c in chunks).encode()).hexdigest()


def needs_embeddings(retriever: RetrieverKind) -> bool:
    return retriever != "BM25"


def check_embedding(indexed: EmbeddingInfo, loaded: EmbeddingInfo) -> None:
    """Refuse to embed queries with another model than the passages were embedded with."""
    problems = []
    if indexed.name != loaded.name:
        problems.append(f"model {loaded.name}, the passages were embedded with {indexed.name}")
    if indexed.dimensions != loaded.dimensions:
        problems.append(f"{loaded.dimensions} dimensions, the passages have {indexed.dimensions}")
    # Identities are content digests where the files were on the machine, else the name: two
    # digests must agree; a name (a Hub id or a mirror) is checked by name and dimensions.
    if (
        indexed.identity != loaded.identity
        and indexed.identity.startswith("sha256:")
        and loaded.identity.startswith("sha256:")
    ):
        problems.append(
            f"weights {loaded.identity}, the passages were embedded with {indexed.identity}"
        )
    if indexed.pooling != loaded.pooling:
        problems.append(f"{loaded.pooling} pooling, the passages used {indexed.pooling}")
    if problems:
        raise EmbeddingMismatch(
            "the embedding model does not match the passage index: " + "; ".join(problems)
        )


def write_passage_index(
    directory: Path, index: PassageIndex, vectors: np.ndarray | None = None
) -> None:
    """`passage-index.json`, and `embeddings.npy` when the index has embeddings."""
    directory.mkdir(parents=True, exist_ok=True)
    if index.embedding is not None:
        if vectors is None or vectors.shape != (index.passages, index.embedding.dimensions):
            shape = None if vectors is None else vectors.shape
            raise ValueError(
                f"embeddings of shape {shape} do not fit {index.passages} passages of "
                f"{index.embedding.dimensions} dimensions"
            )
        np.save(directory / EMBEDDINGS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
    (directory / INDEX_FILE).write_text(index.model_dump_json(indent=2) + "\n")


def read_passage_index(
    directory: Path, chunks: Sequence[Passage]
) -> tuple[PassageIndex, np.ndarray | None] | None:
    """The index of `chunks` (None when the directory has none: a dataset written before
    indexes existed). A broken index, or one of other passages, is a `ValueError` that names
    the file."""
    path = directory / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = PassageIndex.model_validate(json.loads(path.read_text()))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: the passage index is unreadable: {exc}") from exc
    if index.passages != len(chunks) or index.passage_ids != ids_digest(chunks):
        raise ValueError(
            f"{path}: indexes {index.passages} passages, not the {len(chunks)} passages beside it"
        )
    if index.embedding is None:
        return index, None
    vectors = load_vectors(directory / EMBEDDINGS_FILE, len(chunks), index.embedding.dimensions)
    return index, vectors


def load_vectors(path: Path, rows: int, dimensions: int) -> np.ndarray:
    try:
        vectors = np.load(path, mmap_mode=None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: the passage embeddings are unreadable: {exc}") from exc
    if vectors.shape != (rows, dimensions) or vectors.dtype != np.float32:
        raise ValueError(
            f"{path}: embeddings of shape {vectors.shape} ({vectors.dtype}), expected "
            f"({rows}, {dimensions}) float32"
        )
    return np.asarray(vectors, dtype=np.float32)


class Retriever(Protocol[P]):
    chunks: list[P]

    def rank(self, queries: Sequence[str], k: int) -> list[list[int]]:
        """The positions of the `k` best passages per query, best first."""
        ...

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[P]]: ...


class _Ranked(Generic[P]):
    chunks: list[P]

    def rank(self, queries: Sequence[str], k: int) -> list[list[int]]:
        raise NotImplementedError

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[P]]:
        """The `k` best passages per query, best first (fewer when the corpus is smaller, or
        when BM25 finds fewer that share a word with the query)."""
        return [[self.chunks[i] for i in row] for row in self.rank(queries, k)]


def _top(scores: np.ndarray, k: int, keep: np.ndarray | None = None) -> list[int]:
    """Positions of the `k` highest scores, ties by position (among `keep`, when given). Only
    the candidates at or above the k-th best score are sorted: the same order as sorting
    everything, at a partition's cost."""
    candidates = np.arange(len(scores)) if keep is None else np.flatnonzero(keep)
    if len(candidates) == 0 or k <= 0:
        return []
    values = scores[candidates]
    if len(candidates) > k:
        kth = np.partition(values, len(values) - k)[len(values) - k]
        at_least = values >= kth  # every tie of the k-th score stays in
        candidates, values = candidates[at_least], values[at_least]
    order = np.lexsort((candidates, -values))
    return [int(candidates[i]) for i in order[:k]]


class BM25Retriever(_Ranked[P]):
    """Top-k passages by BM25 over the passage texts (headings included)."""

    def __init__(self, chunks: Sequence[P]):
        import bm25s

        # bm25s sets its logger to DEBUG on import and logs every index build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        if not chunks:
            raise ValueError("cannot build a retriever over zero chunks")
        self.chunks = list(chunks)
        self._tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        corpus = [indexed_text(c) for c in self.chunks]
        corpus_ids = self._tokenizer.tokenize(corpus, update_vocab=True, show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(corpus_ids, show_progress=False)
        log.info(
            "Indexed chunks count=%d vocabulary=%d", len(corpus), len(self._tokenizer.word_to_id)
        )

    def rank(self, queries: Sequence[str], k: int) -> list[list[int]]:
        """Only passages that share a word with the query rank (a query of stop words or
        unknown words ranks none)."""
        k = min(k, len(self.chunks))
        query_ids = self._tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
        results: list[list[int]] = []
        for ids in query_ids:
            if not ids:
                results.append([])
                continue
            scores = np.asarray(self._bm25.get_scores([int(t) for t in ids]))
            results.append(_top(scores, k, scores > 0))
        return results


class DenseRetriever(_Ranked[P]):
    """Top-k passages by the cosine similarity of their embedding to the query's: exact
    search, one matrix product over the normalised rows."""

    def __init__(self, chunks: Sequence[P], vectors: np.ndarray, encoder: QueryEncoder):
        if not chunks:
            raise ValueError("cannot build a retriever over zero chunks")
        if vectors.shape[0] != len(chunks):
            raise ValueError(f"{vectors.shape[0]} embeddings for {len(chunks)} passages")
        if vectors.shape[1] != encoder.info.dimensions:
            raise EmbeddingMismatch(
                f"the query model {encoder.info.name} gives {encoder.info.dimensions} "
                f"dimensions, the passages have {vectors.shape[1]}"
            )
        self.chunks = list(chunks)
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.encoder = encoder

    def rank(self, queries: Sequence[str], k: int) -> list[list[int]]:
        if not queries:
            return []
        k = min(k, len(self.chunks))
        scores = self.encoder.encode(list(queries)) @ self.vectors.T
        return [_top(row, k) for row in scores]


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[int]], k: int, rrf_k: int = RRF_K
) -> list[int]:
    """The `k` best positions by reciprocal-rank fusion of `rankings` (each best first): a
    position scores the sum of 1 / (rrf_k + rank) over the rankings it is in (rank from 1).
    Equal scores rank by the best rank the position had in any ranking, then by position."""
    scores: dict[int, float] = {}
    best: dict[int, int] = {}
    for ranking in rankings:
        for rank, position in enumerate(ranking, start=1):
            scores[position] = scores.get(position, 0.0) + 1.0 / (rrf_k + rank)
            best[position] = min(best.get(position, rank), rank)
    # Round so float summation order never decides a tie.
    order = sorted(scores, key=lambda p: (-round(scores[p], 12), best[p], p))
    return order[:k]


class HybridRetriever(_Ranked[P]):
    """BM25 and dense rankings fused by reciprocal rank."""

    def __init__(self, chunks: Sequence[P], vectors: np.ndarray, encoder: QueryEncoder):
        self.lexical: BM25Retriever[P] = BM25Retriever(chunks)
        self.dense: DenseRetriever[P] = DenseRetriever(chunks, vectors, encoder)
        self.chunks = self.dense.chunks

    def rank(self, queries: Sequence[str], k: int) -> list[list[int]]:
        depth = min(max(k, FUSION_DEPTH), len(self.chunks))
        lexical = self.lexical.rank(queries, depth)
        dense = self.dense.rank(queries, depth)
        return [
            reciprocal_rank_fusion([a, b], min(k, len(self.chunks)))
            for a, b in zip(lexical, dense, strict=True)
        ]


def open_retriever(
    kind: RetrieverKind,
    chunks: Sequence[P],
    vectors: np.ndarray | None = None,
    encoder: QueryEncoder | None = None,
) -> BM25Retriever[P] | DenseRetriever[P] | HybridRetriever[P]:
    """The retriever of `kind` over `chunks` (and their embeddings, row for row)."""
    if kind == "BM25":
        return BM25Retriever(chunks)
    if vectors is None or encoder is None:
        raise ValueError(
            f"retriever {kind} needs the passages' embeddings and the embedding model; this "
            "passage index has none (it was built for BM25)"
        )
    if kind == "Dense":
        return DenseRetriever(chunks, vectors, encoder)
    return HybridRetriever(chunks, vectors, encoder)


def recall_at(
    rankings: Sequence[Sequence[str]], gold: Sequence[str | None], ks: Sequence[int]
) -> dict[str, float | None]:
    """Share of questions (with a gold passage) whose gold passage id is in the first k of
    their ranking, per k (keys `"1"`, `"3"`, ...)."""
    known = [(r, g) for r, g in zip(rankings, gold, strict=True) if g]
    return {
        str(k): (sum(1 for r, g in known if g in r[:k]) / len(known)) if known else None for k in ks
    }
