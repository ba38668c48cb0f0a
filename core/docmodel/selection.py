"""Which objects of a source listing are a revision's inputs: the documents the globs match and
the provided question/answer files, never a key that could name a path outside the work
directory. Shared by ingest and the executors.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from docmodel.api import DocModelSpec
from docmodel.dataset import SkippedFile
from docmodel.digests import source_digest
from docmodel.storage import (
    ObjectInfo,
    matches,
)

QA_SUFFIX = ".qa.jsonl"


def is_qa_file(key: str) -> bool:
    """Provided question/answer files (`*.qa.jsonl`) are inputs, never documents."""
    return key.lower().endswith(QA_SUFFIX)


@dataclass(frozen=True)
class SourceSelection:
    """Which listed objects are a revision's inputs (shared by ingest and the operator)."""

    documents: list[ObjectInfo]  # every document the globs match, skipped ones included
    qa_files: list[ObjectInfo]  # provided QA files that are read
    unsafe: list[SkippedFile] = field(default_factory=list)  # keys never read (`unsafe_key`)

    @property
    def digest(self) -> str:
        return source_digest([*self.documents, *self.qa_files])


def select_sources(
    spec: DocModelSpec,
    listed: Iterable[ObjectInfo],
    provided: Iterable[ObjectInfo] | None = None,
) -> SourceSelection:
    """Pick a revision's inputs from the source listing.

    `provided` is the listing under `dataset.providedPrefix`, when set; otherwise, with the
    `provided` generator, QA files beside the documents count. A document that ingest will skip
    (empty, too large) still counts: fixing it is a change that deserves a new revision. A key
    that could name a path outside the work directory (`unsafe_key`) never counts and is never
    read: it is returned in `unsafe` with the reason.
    """
    src = spec.source
    documents: list[ObjectInfo] = []
    qa_files: list[ObjectInfo] = []
    unsafe: list[SkippedFile] = []
    beside = spec.dataset.generator == "provided" and provided is None

    def safe(obj: ObjectInfo) -> bool:
        reason = unsafe_key(obj.key)
        if reason is not None:
            unsafe.append(SkippedFile(key=obj.key, reason=reason))
        return reason is None

    for obj in listed:
        if not safe(obj):
            continue
        if is_qa_file(obj.key):
            if beside:
                qa_files.append(obj)
        elif matches(obj.key, src.include, src.exclude):
            documents.append(obj)
    if provided is not None:
        qa_files.extend(obj for obj in provided if safe(obj) and is_qa_file(obj.key))
    return SourceSelection(documents, qa_files, unsafe)


def unsafe_key(key: str) -> str | None:
    """Why an object key (relative to the listed prefix) must never be read, or None. S3
    allows any key; a leading `/`, an empty component or a `.`/`..` component could name a
    path outside (or beside) the file it is copied to. MinIO refuses such keys; AWS does not."""
    if not key:
        return "empty object key"
    if key.startswith("/"):
        return "object key starts with '/' (it would name an absolute path)"
    parts = key.split("/")
    if any(p in (".", "..") for p in parts):
        return "object key has a '.' or '..' component (it could name a path outside the work directory)"
    if "" in parts:
        return "object key has an empty component ('//' or a trailing '/')"
    if "\x00" in key:
        return "object key holds a NUL character"
    return None
