"""The trainer's side of the passage index (`docmodel.search`): built once per revision by the
ingest step, read back by training (a retrieval candidate's distractors) and evaluation (the
baseline's passages, recall diagnostics), which embed questions only."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from docmodel import basemodel
from docmodel.api import DocModelSpec, EmbeddingModelSpec
from docmodel.dataset import Chunk
from docmodel.modelfacts import usable_cpus
from docmodel.search import (
    EmbeddingMismatch,
    PassageIndex,
    QueryEncoder,
    RetrieverKind,
    check_embedding,
    ids_digest,
    indexed_text,
    needs_embeddings,
    open_retriever,
    read_passage_index,
)
from docmodel_trainer.common import EXIT_BAD_INPUT, JobContext, JobError

log = logging.getLogger("docmodel.trainer.index")

_encoders: dict[str, Any] = {}


def load_encoder(spec: EmbeddingModelSpec, workdir: Path, endpoint: str | None) -> QueryEncoder:
    """The embedding model (loaded once per process); a missing one is a `JobError` naming
    every place tried."""
    import docmodel_embedding

    key = spec.model_dump_json()
    if key not in _encoders:
        try:
            _encoders[key] = docmodel_embedding.load(spec, workdir, endpoint, usable_cpus())
        except (basemodel.ModelNotFound, ValueError) as exc:
            raise JobError(str(exc), "EmbeddingModelMissing", EXIT_BAD_INPUT) from None
    encoder: QueryEncoder = _encoders[key]
    return encoder


def build(
    ctx: JobContext, spec: DocModelSpec, chunks: Sequence[Chunk]
) -> tuple[PassageIndex, np.ndarray | None, dict[str, Any]]:
    """The index of the spec's retriever over `chunks`: for Dense and Hybrid, every passage
    embedded (the one time the corpus is)."""
    baseline = spec.evaluation.baseline
    index = PassageIndex(
        retriever=baseline.retriever, passages=len(chunks), passage_ids=ids_digest(chunks)
    )
    if not needs_embeddings(baseline.retriever):
        log.info("Indexed passages retriever=BM25 count=%d (no embeddings)", len(chunks))
        return index, None, {"retriever": "BM25", "passages": len(chunks)}
    encoder = load_encoder(baseline.embedding_model, ctx.workdir, spec.source.endpoint)
    started = time.monotonic()
    vectors = encoder.encode([indexed_text(c) for c in chunks], progress="passages")
    seconds = time.monotonic() - started
    index = index.model_copy(update={"embedding": encoder.info})
    log.info(
        "Embedded passages retriever=%s count=%d model=%s dimensions=%d seconds=%.1f rate=%.0f/s",
        baseline.retriever,
        len(chunks),
        encoder.info.name,
        encoder.info.dimensions,
        seconds,
        len(chunks) / seconds if seconds > 0 else 0.0,
    )
    details = {
        "retriever": baseline.retriever,
        "passages": len(chunks),
        "embedding": encoder.info.model_dump(mode="json"),
        "embedding_seconds": round(seconds, 3),
    }
    return index, vectors, details


def read(
    data_dir: Path, chunks: Sequence[Chunk], where: str
) -> tuple[PassageIndex, np.ndarray | None]:
    """The dataset's passage index; a dataset without one, or with a broken one, is an error
    naming the dataset."""
    try:
        found = read_passage_index(data_dir, chunks)
    except ValueError as exc:
        raise JobError(f"dataset at {where}: {exc}", "BadPassageIndex", EXIT_BAD_INPUT) from None
    if found is None:
        raise JobError(
            f"dataset at {where} has no passage index (written by an older ingest step); "
            "run the ingest step again",
            "NoPassageIndex",
            EXIT_BAD_INPUT,
        )
    return found


def retriever(
    kind: RetrieverKind,
    spec: DocModelSpec,
    workdir: Path,
    chunks: Sequence[Chunk],
    index: PassageIndex,
    vectors: np.ndarray | None,
    where: str,
    rows: Sequence[int] | None = None,
) -> Any:
    """The retriever of `kind` over the indexed passages (or the `rows` of them), embedding
    queries with the model the passages were embedded with."""
    if not needs_embeddings(kind):
        return open_retriever("BM25", [chunks[i] for i in rows] if rows is not None else chunks)
    if index.embedding is None or vectors is None:
        raise JobError(
            f"retriever {kind} needs the passages' embeddings, and the dataset at {where} was "
            f"indexed for {index.retriever} (a changed retriever is a new revision: ingest again)",
            "RetrieverUnavailable",
            EXIT_BAD_INPUT,
        )
    model = spec.evaluation.baseline.embedding_model
    encoder = load_encoder(model, workdir, spec.source.endpoint)
    try:
        check_embedding(index.embedding, encoder.info)
    except EmbeddingMismatch as exc:
        raise JobError(f"dataset at {where}: {exc}", "EmbeddingMismatch", EXIT_BAD_INPUT) from None
    if rows is not None:
        return open_retriever(kind, [chunks[i] for i in rows], vectors[list(rows)], encoder)
    return open_retriever(kind, chunks, vectors, encoder)
