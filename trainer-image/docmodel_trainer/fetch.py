"""Fetching the artifacts a workload reads: the dataset and an adapter (training checkpoints:
`docmodel_trainer.checkpoints`).

Every error names the URI that was looked at. An artifact without its manifest is incomplete
(its writer died mid-upload) and counts as missing. Every downloaded file is checked against the
size and sha256 its manifest lists; a mismatch is a storage failure (exit 4).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from docmodel import artifacts
from docmodel.artifacts import MANIFEST, Manifest, RevisionLayout
from docmodel.dataset import CHUNKS, EVAL, REWRITES, TRAIN
from docmodel.search import EMBEDDINGS_FILE, INDEX_FILE
from docmodel.storage import NotFound, ObjectStore, StorageError
from docmodel_trainer.common import EXIT_NO_DATA, EXIT_STORAGE, JobError

log = logging.getLogger("docmodel.trainer.fetch")


def manifest_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def fetch_dataset(
    store: ObjectStore, layout: RevisionLayout, dest: Path
) -> tuple[Path, Manifest, str]:
    """Download the revision's dataset; return (directory, manifest, manifest digest)."""
    uri = layout.uri(store.uri, "dataset")
    key = layout.key("dataset", MANIFEST)
    if not store.exists(key):
        raise JobError(
            f"no dataset at {uri} (manifest.json missing: run ingest for revision "
            f"{layout.revision} first)",
            "DatasetMissing",
            EXIT_NO_DATA,
        )
    raw = store.get_bytes(key)
    manifest = Manifest.model_validate_json(raw)
    if store.exists(layout.key("dataset", REWRITES)):  # datasets before rewrites have none
        store.download_file(layout.key("dataset", REWRITES), dest / REWRITES)
    # The passage index (and, for Dense and Hybrid, the passages' embeddings): its absence is
    # the reader's to name (`passage_index.read`).
    indexed = [n for n in (INDEX_FILE, EMBEDDINGS_FILE) if store.exists(layout.key("dataset", n))]
    for name in indexed:
        store.download_file(layout.key("dataset", name), dest / name)
    for name in (CHUNKS, TRAIN, EVAL):
        try:
            store.download_file(layout.key("dataset", name), dest / name)
        except NotFound:
            raise JobError(
                f"dataset at {uri} is missing {name}", "DatasetIncomplete", EXIT_NO_DATA
            ) from None
    verify_files(dest, manifest, uri, only=(CHUNKS, TRAIN, EVAL, *indexed))
    log.info("Fetched dataset uri=%s", uri)
    return dest, manifest, manifest_digest(raw)


def fetch_adapter(uri: str, dest: Path) -> tuple[Path, Manifest]:
    """`docmodel.artifacts.fetch_adapter` (the one fetch and manifest rule the server uses too),
    with its errors as job failures: no adapter is exit 3, anything else of the store exit 4."""
    try:
        fetched = artifacts.fetch_adapter(uri, dest)
    except (artifacts.ArtifactMissing, artifacts.ArtifactIncomplete) as exc:
        raise JobError(str(exc), exc.reason, EXIT_NO_DATA) from None
    except StorageError as exc:
        raise JobError(str(exc), exc.reason, EXIT_STORAGE) from None
    log.info("Fetched adapter uri=%s", uri)
    return fetched


def verify_files(
    local: Path, manifest: Manifest, uri: str, only: tuple[str, ...] | None = None
) -> None:
    """`docmodel.artifacts.verify_files`, failing the job with exit 4 on a mismatch."""
    try:
        artifacts.verify_files(local, manifest, uri, only)
    except artifacts.IntegrityError as exc:
        raise JobError(str(exc), exc.reason, EXIT_STORAGE) from None
