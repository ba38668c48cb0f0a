"""Fetch and parse the docs under spec.source, cut them into passages and build the QA dataset.

    docmodel-trainer ingest --docmodel dm.yaml --store ./artifacts --source-dir ./docs \\
        --revision-file ./rev.txt

Steps: list the source prefix (include/exclude globs; files that are empty or over
maxFileBytes are skipped from the listing alone) -> fetch and parse what changed (a parsed-
document cache keyed by key and ETag sits in the artifact store) -> passages by heading, code
and tables whole, with overlap, identical passages kept once -> question/answer pairs
(provided, teacher or extractive; teacher rewrites of passages) -> capped per document ->
train/eval split by question group (`split`) -> leakage checks (`leakage`) -> the passage
index of the spec's retriever (`docmodel.search`: for Dense and Hybrid every passage embedded
once, here, with evaluation.baseline.embeddingModel) -> publish
`dataset/{chunks,rewrites,train,eval}.jsonl`, `passage-index.json` (and `embeddings.npy`) with
a manifest whose details are `DatasetStats`.

Without --revision the revision id is computed from the spec and the source digest, logged,
and written to --revision-file. Exit codes: 2 when the embedding model cannot be found (every
place tried is named), 3 when nothing usable is found (the bucket and prefix are named), 4 for
storage errors, 5 when the teacher model fails.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from docmodel.api import DocModelSpec
from docmodel.artifacts import Manifest, RevisionLayout, publish_dir, software_versions
from docmodel.dataset import (
    CHUNKS,
    EVAL,
    REWRITES,
    TRAIN,
    Chunk,
    DatasetStats,
    QAPair,
    Rewrite,
    SkippedFile,
    write_jsonl,
)
from docmodel.revision import open_source, provided_store
from docmodel.search import PassageIndex, write_passage_index
from docmodel.storage import ObjectStore, S3Store, StorageError
from docmodel_trainer import common, leakage, passage_index
from docmodel_trainer.chunking import Passage, chunk_document, deduplicate
from docmodel_trainer.common import JobError
from docmodel_trainer.leakage import LeakageResult
from docmodel_trainer.parsing import ParsedDocument
from docmodel_trainer.qa.generate import Generated, generate
from docmodel_trainer.qa.teacher import TeacherError
from docmodel_trainer.sources import Fetched, Fetcher, Listing, list_sources
from docmodel_trainer.split import Split, cap_pairs, split_pairs

log = logging.getLogger("docmodel.trainer.ingest")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_job_arguments(parser)
    group = parser.add_argument_group("ingest")
    group.add_argument(
        "--source-dir",
        type=Path,
        help="read documents from this directory instead of spec.source (local mode, tests)",
    )
    group.add_argument("--revision-file", type=Path, help="write the revision id to this file")
    group.add_argument("--workers", type=int, default=8, help="parallel fetches (default 8)")
    group.add_argument(
        "--no-cache", action="store_true", help="ignore and do not write the parsed cache"
    )


@dataclass(frozen=True)
class SourceDocuments:
    """The documents of the source, listed and fetched, and the revision they make."""

    where: str  # the source as messages name it: its bucket and prefix, or its directory
    revision: str
    listing: Listing
    fetched: Fetched
    skipped: list[SkippedFile]  # by the listing or the fetch, in key order


@dataclass(frozen=True)
class Passages:
    """Every document cut into passages, each identical passage kept once."""

    passages: list[Passage]
    deduplicated: int  # identical passages dropped


@dataclass(frozen=True)
class SplitDataset:
    """The dataset's passages and pairs, and how the pairs were capped, split and checked."""

    chunks: list[Chunk]  # every passage; those of documents kept out of training "untrained"
    train: list[QAPair]
    evals: list[QAPair]
    untrained: set[str]  # the documents kept out of training
    capped: dict[str, int]  # document -> pairs over dataset.maxPairsPerDocument
    split: Split
    leak: LeakageResult


def run(args: argparse.Namespace) -> int:
    ctx = common.job_context(args)
    spec = ctx.docmodel.spec
    source = read_source(ctx, args.source_dir, use_cache=not args.no_cache, workers=args.workers)
    passages = cut_passages(source.fetched.documents.values(), spec)
    generated = generate_pairs(source, passages, spec)
    dataset = split_dataset(source, passages, generated, spec)
    stats = dataset_stats(source, passages, generated, dataset)
    index, vectors, index_details = passage_index.build(ctx, spec, dataset.chunks)
    manifest = dataset_manifest(spec, source, passages, generated, dataset, stats, index_details)
    layout = RevisionLayout(ctx.namespace, ctx.name, source.revision)
    uri = publish_dataset(ctx, layout, manifest, dataset, generated.rewrites, index, vectors)
    if args.revision_file:
        args.revision_file.parent.mkdir(parents=True, exist_ok=True)
        args.revision_file.write_text(source.revision + "\n")
    _log_published(source, stats, uri)
    return common.EXIT_OK


def read_source(
    ctx: common.JobContext, source_dir: Path | None, *, use_cache: bool, workers: int
) -> SourceDocuments:
    """List the source (spec.source, or `source_dir`), choose the revision, fetch and parse
    what is usable; a source with nothing usable is an error naming it."""
    spec = ctx.docmodel.spec
    source = _source_store(source_dir, spec)
    qa_store = provided_store(source, spec)
    where = _describe(source)
    listing = _list(source, spec, qa_store, where)
    revision = _resolve_revision(ctx.revision, listing)
    fetcher = Fetcher(
        source,
        ctx.store if use_cache else None,
        f"{ctx.namespace}/{ctx.name}/cache/parsed",
        max_file_bytes=spec.source.max_file_bytes,
        workers=max(1, workers),
    )
    try:
        fetched = fetcher.fetch(listing.documents, listing.qa_files, qa_store or source)
    except StorageError as exc:
        raise JobError(f"cannot read {where}: {exc}", exc.reason, common.EXIT_STORAGE) from None
    skipped = sorted([*listing.skipped, *fetched.skipped], key=lambda s: s.key)
    for item in skipped:
        log.warning("Skipped document key=%s reason=%s", item.key, item.reason)
    if not fetched.documents:
        raise JobError(
            f"no usable documents under {where}: {len(skipped)} skipped ({_reasons(skipped)})",
            "NoUsableDocuments",
            common.EXIT_NO_DATA,
        )
    return SourceDocuments(where, revision, listing, fetched, skipped)


def _list(
    source: ObjectStore, spec: DocModelSpec, qa_store: ObjectStore | None, where: str
) -> Listing:
    """The source's listing; none of its documents matching the spec is an error."""
    try:
        listing = list_sources(source, spec, qa_store)
    except StorageError as exc:
        raise JobError(f"cannot list {where}: {exc}", exc.reason, common.EXIT_STORAGE) from None
    log.info(
        "Listed source=%s documents=%d skipped=%d qa_files=%d",
        where,
        len(listing.matched),
        len(listing.skipped),
        len(listing.qa_files),
    )
    if not listing.matched:
        raise JobError(
            f"no documents under {where} match include={spec.source.include}"
            + (f" exclude={spec.source.exclude}" if spec.source.exclude else ""),
            "NoDocuments",
            common.EXIT_NO_DATA,
        )
    return listing


def _resolve_revision(given: str | None, listing: Listing) -> str:
    """The given revision, else the one the listing gives."""
    revision = given or listing.resolved.revision
    log.info(
        "Resolved revision=%s source_digest=%s computed=%s",
        revision,
        listing.resolved.digest,
        not given,
    )
    if revision != listing.resolved.revision:
        # The documents changed after the revision was chosen (or a caller named its own
        # revision): the manifest records the digest actually read.
        log.warning(
            "Listed source gives revision=%s, not the given revision=%s",
            listing.resolved.revision,
            revision,
        )
    return revision


def cut_passages(documents: Iterable[ParsedDocument], spec: DocModelSpec) -> Passages:
    """Every document cut into passages (spec.dataset.chunking), identical passages kept once."""
    chunking = spec.dataset.chunking
    seen: set[str] = set()
    passages: list[Passage] = []
    dropped = 0
    for doc in documents:
        kept, gone = deduplicate(
            chunk_document(doc, chunking.max_tokens, chunking.overlap_tokens), seen
        )
        passages.extend(kept)
        dropped += gone
    return Passages(passages, dropped)


def generate_pairs(source: SourceDocuments, passages: Passages, spec: DocModelSpec) -> Generated:
    """The question/answer pairs (and rewrites) of spec.dataset.generator; none is an error."""
    try:
        generated = generate(spec.dataset, passages.passages, source.fetched.qa_files)
    except TeacherError as exc:
        raise JobError(str(exc), "TeacherFailed", common.EXIT_UPSTREAM) from None
    if not generated.pairs:
        raise JobError(
            f"no question/answer pairs could be made from {len(source.fetched.documents)} "
            f"documents under {source.where} with generator={spec.dataset.generator}",
            "NoQuestions",
            common.EXIT_NO_DATA,
        )
    return generated


def split_dataset(
    source: SourceDocuments, passages: Passages, generated: Generated, spec: DocModelSpec
) -> SplitDataset:
    """Cap the pairs per document, split them into train and eval (a retrieval candidate also
    keeps documents out of training) and drop the eval items that leak."""
    pairs, capped = cap_pairs(
        generated.pairs, spec.dataset.max_pairs_per_document, spec.dataset.seed
    )
    for document, lost in sorted(capped.items()):
        log.debug("Capped pairs document=%s dropped=%d", document, lost)
    if capped:  # a setting the spec chose: one line, not one per document
        log.info(
            "Capped pairs documents=%d dropped=%d max_per_document=%d "
            "(dataset.maxPairsPerDocument)",
            len(capped),
            sum(capped.values()),
            spec.dataset.max_pairs_per_document,
        )
    chunks = [p.chunk() for p in passages.passages]
    split = split_pairs(
        pairs,
        chunks,
        source.fetched.documents,
        spec.dataset.eval_fraction,
        spec.dataset.seed,
        keep_documents_out=spec.training.candidate.kind == "Retrieval",
    )
    untrained = set(split.documents_not_trained)
    chunks = [
        c.model_copy(update={"split": "untrained"}) if c.source in untrained else c for c in chunks
    ]
    if untrained:
        log.info(
            "Kept documents out of training count=%d documents=%s (retrieval candidate: only "
            "retrieved, every question about them held out)",
            len(untrained),
            ",".join(sorted(untrained)),
        )
    leak = leakage.check(split.train, split.eval)
    for drop in leak.dropped:
        log.info(
            "Dropped eval item id=%s check=%s similarity=%.3f ngram_overlap=%.3f nearest_train=%s",
            drop["id"],
            drop["check"],
            drop["similarity"],
            drop["ngram_overlap"],
            drop["nearest_train_id"],
        )
    return SplitDataset(chunks, split.train, leak.kept, untrained, capped, split, leak)


def dataset_stats(
    source: SourceDocuments, passages: Passages, generated: Generated, dataset: SplitDataset
) -> DatasetStats:
    """The figures of the dataset's manifest."""
    return DatasetStats(
        documents_listed=len(source.listing.matched),
        documents_parsed=len(source.fetched.documents),
        documents_skipped=source.skipped,
        chunks=len(passages.passages),
        train_pairs=len(dataset.train),
        eval_pairs=len(dataset.evals),
        train_documents=len({c.source for c in dataset.chunks} - dataset.untrained),
        eval_documents=len({p.source for p in dataset.evals}),
        eval_grouping=dataset.split.grouping,
        train_groups=dataset.split.train_groups,
        eval_groups=dataset.split.eval_groups,
        duplicates_removed=dataset.split.duplicates_removed,
        train_pairs_dropped_same_passage=dataset.split.train_dropped_same_passage,
        eval_items_dropped_for_leakage=len(dataset.leak.dropped),
        documents_not_trained=sorted(dataset.untrained),
        rewrites=len(generated.rewrites),
        bytes_downloaded=source.fetched.bytes_downloaded,
    )


def dataset_manifest(
    spec: DocModelSpec,
    source: SourceDocuments,
    passages: Passages,
    generated: Generated,
    dataset: SplitDataset,
    stats: DatasetStats,
    index_details: dict[str, Any],
) -> Manifest:
    """The dataset's manifest: its inputs, the spec, and every figure of how it was made."""
    fetched = source.fetched
    details = stats.model_dump(mode="json") | {
        "source": source.where,
        "source_digest": source.listing.resolved.digest,
        "generator": spec.dataset.generator,
        "cache_hits": fetched.cache_hits,
        "passages_deduplicated": passages.deduplicated,
        "malformed_qa_lines": generated.malformed_lines,
        "teacher_failed_passages": generated.failed_passages,
        "teacher_requests": generated.teacher_requests,
        "unattributed_pairs": generated.unattributed,
        "pairs_generated": len(generated.pairs),
        "pairs_dropped_by_cap": dataset.capped,  # document -> pairs over maxPairsPerDocument
        "leakage": dataset.leak.figures(),
        "decoded_with_fallback": sorted(
            k for k, d in fetched.documents.items() if d.encoding not in ("utf-8", "pdf")
        ),
        "passage_index": index_details,
    }
    return Manifest(
        kind="dataset",
        revision=source.revision,
        inputs={"source": source.listing.resolved.digest},
        spec=spec.model_dump(mode="json", by_alias=True),
        versions=software_versions(
            ["pypdf", "markdown-it-py", "selectolax", "httpx", "bm25s", "torch", "transformers"]
        ),
        metrics={
            "train_pairs": len(dataset.train),
            "eval_pairs": len(dataset.evals),
            "chunks": len(passages.passages),
            "eval_items_dropped_for_leakage": len(dataset.leak.dropped),
        },
        details=details,
    )


def publish_dataset(
    ctx: common.JobContext,
    layout: RevisionLayout,
    manifest: Manifest,
    dataset: SplitDataset,
    rewrites: list[Rewrite],
    index: PassageIndex,
    vectors: np.ndarray | None,
) -> str:
    """Write the dataset's files and publish them with `manifest`; the dataset's URI."""
    with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="dataset-") as tmp:
        out = Path(tmp)
        write_jsonl(out / CHUNKS, dataset.chunks)
        write_jsonl(out / REWRITES, rewrites)
        write_jsonl(out / TRAIN, dataset.train)
        write_jsonl(out / EVAL, dataset.evals)
        write_passage_index(out, index, vectors)
        return publish_dir(out, ctx.store, layout, manifest)


def _log_published(source: SourceDocuments, stats: DatasetStats, uri: str) -> None:
    log.info(
        "Published dataset revision=%s uri=%s documents=%d skipped=%d chunks=%d train_pairs=%d "
        "eval_pairs=%d eval_documents=%d grouping=%s leakage_dropped=%d rewrites=%d "
        "bytes_downloaded=%d",
        source.revision,
        uri,
        stats.documents_parsed,
        len(source.skipped),
        stats.chunks,
        stats.train_pairs,
        stats.eval_pairs,
        stats.eval_documents,
        stats.eval_grouping,
        stats.eval_items_dropped_for_leakage,
        stats.rewrites,
        stats.bytes_downloaded,
    )


def _source_store(source_dir: Path | None, spec: DocModelSpec) -> ObjectStore:
    if source_dir is not None and not source_dir.is_dir():
        raise JobError(f"--source-dir {source_dir} is not a directory", "BadSourceDir", 2)
    return open_source(spec, None if source_dir is None else str(source_dir))


def _describe(store: ObjectStore) -> str:
    if isinstance(store, S3Store):
        return f"bucket={store.bucket} prefix={store.prefix or '(none)'}"
    return f"directory {store.uri}"


def _reasons(skipped: list[SkippedFile]) -> str:
    counts: dict[str, int] = {}
    for item in skipped:
        reason = item.reason.split(" (")[0]
        counts[reason] = counts.get(reason, 0) + 1
    return ", ".join(f"{n} {r}" for r, n in sorted(counts.items())) or "none"
