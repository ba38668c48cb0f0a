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
from pathlib import Path

from docmodel.api import DocModelSpec
from docmodel.artifacts import Manifest, RevisionLayout, publish_dir, software_versions
from docmodel.dataset import (
    CHUNKS,
    EVAL,
    REWRITES,
    TRAIN,
    DatasetStats,
    SkippedFile,
    write_jsonl,
)
from docmodel.revision import open_source, provided_store
from docmodel.search import write_passage_index
from docmodel.storage import ObjectStore, S3Store, StorageError
from docmodel_trainer import common, leakage, passage_index
from docmodel_trainer.chunking import Passage, chunk_document, deduplicate
from docmodel_trainer.common import JobError
from docmodel_trainer.parsing import ParsedDocument
from docmodel_trainer.qa.generate import generate
from docmodel_trainer.qa.teacher import TeacherError
from docmodel_trainer.sources import Fetcher, list_sources
from docmodel_trainer.split import cap_pairs, split_pairs

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


def run(args: argparse.Namespace) -> int:
    ctx = common.job_context(args)
    spec = ctx.docmodel.spec
    source = _source_store(args.source_dir, spec)
    qa_store = provided_store(source, spec)
    where = _describe(source)

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

    digest = listing.resolved.digest
    revision = ctx.revision or listing.resolved.revision
    log.info(
        "Resolved revision=%s source_digest=%s computed=%s", revision, digest, not ctx.revision
    )
    if revision != listing.resolved.revision:
        # The documents changed after the revision was chosen (or a caller named its own
        # revision): the manifest records the digest actually read.
        log.warning(
            "Listed source gives revision=%s, not the given revision=%s",
            listing.resolved.revision,
            revision,
        )
    layout = RevisionLayout(ctx.namespace, ctx.name, revision)

    fetcher = Fetcher(
        source,
        None if args.no_cache else ctx.store,
        f"{ctx.namespace}/{ctx.name}/cache/parsed",
        max_file_bytes=spec.source.max_file_bytes,
        workers=max(1, args.workers),
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

    passages, passages_dropped = _passages(fetched.documents.values(), spec)
    try:
        generated = generate(spec.dataset, passages, fetched.qa_files)
    except TeacherError as exc:
        raise JobError(str(exc), "TeacherFailed", common.EXIT_UPSTREAM) from None
    if not generated.pairs:
        raise JobError(
            f"no question/answer pairs could be made from {len(fetched.documents)} documents "
            f"under {where} with generator={spec.dataset.generator}",
            "NoQuestions",
            common.EXIT_NO_DATA,
        )

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
    chunks = [p.chunk() for p in passages]
    split = split_pairs(
        pairs,
        chunks,
        fetched.documents,
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
    train, evals = split.train, leak.kept
    for drop in leak.dropped:
        log.info(
            "Dropped eval item id=%s check=%s similarity=%.3f ngram_overlap=%.3f nearest_train=%s",
            drop["id"],
            drop["check"],
            drop["similarity"],
            drop["ngram_overlap"],
            drop["nearest_train_id"],
        )
    stats = DatasetStats(
        documents_listed=len(listing.matched),
        documents_parsed=len(fetched.documents),
        documents_skipped=skipped,
        chunks=len(passages),
        train_pairs=len(train),
        eval_pairs=len(evals),
        train_documents=len({c.source for c in chunks} - untrained),
        eval_documents=len({p.source for p in evals}),
        eval_grouping=split.grouping,
        train_groups=split.train_groups,
        eval_groups=split.eval_groups,
        duplicates_removed=split.duplicates_removed,
        train_pairs_dropped_same_passage=split.train_dropped_same_passage,
        eval_items_dropped_for_leakage=len(leak.dropped),
        documents_not_trained=sorted(untrained),
        rewrites=len(generated.rewrites),
        bytes_downloaded=fetched.bytes_downloaded,
    )
    details = stats.model_dump(mode="json") | {
        "source": where,
        "source_digest": digest,
        "generator": spec.dataset.generator,
        "cache_hits": fetched.cache_hits,
        "passages_deduplicated": passages_dropped,
        "malformed_qa_lines": generated.malformed_lines,
        "teacher_failed_passages": generated.failed_passages,
        "teacher_requests": generated.teacher_requests,
        "unattributed_pairs": generated.unattributed,
        "pairs_generated": len(generated.pairs),
        "pairs_dropped_by_cap": capped,  # document -> pairs over dataset.maxPairsPerDocument
        "leakage": leak.figures(),
        "decoded_with_fallback": sorted(
            k for k, d in fetched.documents.items() if d.encoding not in ("utf-8", "pdf")
        ),
    }
    index, vectors, index_details = passage_index.build(ctx, spec, chunks)
    details["passage_index"] = index_details
    manifest = Manifest(
        kind="dataset",
        revision=revision,
        inputs={"source": digest},
        spec=spec.model_dump(mode="json", by_alias=True),
        versions=software_versions(
            ["pypdf", "markdown-it-py", "selectolax", "httpx", "bm25s", "torch", "transformers"]
        ),
        metrics={
            "train_pairs": len(train),
            "eval_pairs": len(evals),
            "chunks": len(passages),
            "eval_items_dropped_for_leakage": len(leak.dropped),
        },
        details=details,
    )
    with tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="dataset-") as tmp:
        out = Path(tmp)
        write_jsonl(out / CHUNKS, chunks)
        write_jsonl(out / REWRITES, generated.rewrites)
        write_jsonl(out / TRAIN, train)
        write_jsonl(out / EVAL, evals)
        write_passage_index(out, index, vectors)
        uri = publish_dir(out, ctx.store, layout, manifest)

    if args.revision_file:
        args.revision_file.parent.mkdir(parents=True, exist_ok=True)
        args.revision_file.write_text(revision + "\n")
    log.info(
        "Published dataset revision=%s uri=%s documents=%d skipped=%d chunks=%d train_pairs=%d "
        "eval_pairs=%d eval_documents=%d grouping=%s leakage_dropped=%d rewrites=%d "
        "bytes_downloaded=%d",
        revision,
        uri,
        stats.documents_parsed,
        len(skipped),
        stats.chunks,
        stats.train_pairs,
        stats.eval_pairs,
        stats.eval_documents,
        stats.eval_grouping,
        stats.eval_items_dropped_for_leakage,
        stats.rewrites,
        stats.bytes_downloaded,
    )
    return common.EXIT_OK


def _passages(documents: Iterable[ParsedDocument], spec: DocModelSpec) -> tuple[list[Passage], int]:
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
    return passages, dropped


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
