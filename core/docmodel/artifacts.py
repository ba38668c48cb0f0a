"""Artifact layout, revision ids and manifests.

One artifact store (an S3 URI, or a directory in local mode) holds every revision of every
DocModel:

    <store>/<namespace>/<name>/rev-<revision>/dataset/   chunks.jsonl, train.jsonl, eval.jsonl, manifest.json
    <store>/<namespace>/<name>/rev-<revision>/adapter/   adapter_model.safetensors, ..., manifest.json
    <store>/<namespace>/<name>/rev-<revision>/eval/      report.json, report.html, manifest.json
    <store>/<namespace>/<name>/rev-<revision>/checkpoints/   training checkpoints (for resuming)
    <store>/<namespace>/<name>/cache/parsed/   parsed documents by ETag (ingest re-runs)

A revision id is a digest of the spec fields that change what is trained plus the source digest, so the same
docs and settings always give the same revision (and the same child object names), and a
replayed event never starts a second training run.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from docmodel import basemodel
from docmodel.api import DocModelSpec, EvaluationSpec
from docmodel.dataset import SkippedFile
from docmodel.modelfacts import ADAPTER_CONFIG
from docmodel.settings import StoreSettings
from docmodel.storage import (
    NotFound,
    ObjectInfo,
    ObjectStore,
    S3Credentials,
    StorageError,
    download_tree,
    matches,
    open_store,
    sha256_file,
)

ArtifactKind = Literal["dataset", "adapter", "eval"]
MANIFEST = "manifest.json"

# The version of the data protocol: how documents become training data and held-out
# questions. It is part of every revision id, so an adapter trained under an older protocol
# (version 1 held out whole documents; version 2 had no passage index) is never reused under a
# newer one.
DATA_PROTOCOL = 3

# The spec fields whose change means a new model must be trained, as
# (section, field names on the wire). Everything else (credentials references, resources,
# scheduling, deadlines, image overrides, teacher concurrency, evaluation and gate settings,
# serving, retraining) changes how a revision is run, judged or served, not what it is. An
# explicit list also keeps revision ids stable when a release adds a defaulted field.
TRAINING_FIELDS: dict[str, tuple[str, ...]] = {
    "source": ("bucket", "prefix", "endpoint", "include", "exclude", "maxFileBytes"),
    "base_model": ("name", "mirror"),
    "dataset": (
        "generator",
        "providedPrefix",
        "teacher",
        "evalFraction",
        "seed",
        "maxPairsPerDocument",
        "rewritesPerPassage",
        "chunking",
    ),
    "training": (
        "method",
        "lora",
        "candidate",
        "epochs",
        "qaFirstEpochs",
        "trainOnDocuments",
        "learningRate",
        "maxSeqLength",
        "packing",
        "batchSize",
        "gradientAccumulationSteps",
    ),
}
# The dataset and training fields that do not change what is trained (a test fails when a
# field of either section is on neither list).
NOT_TRAINING_FIELDS: dict[str, tuple[str, ...]] = {
    "dataset": (),
    "training": (
        "resources",
        "nodeSelector",
        "tolerations",
        "priorityClassName",
        "backoffLimit",
        "activeDeadlineSeconds",
        "image",
    ),
}
# Inside dataset.teacher, only what shapes the questions counts.
TEACHER_FIELDS = ("endpoint", "model", "questionsPerChunk")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


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


def source_digest(objects: Iterable[ObjectInfo]) -> str:
    """Digest of the sorted (key, ETag, size) list: changes exactly when the documents do."""
    rows = sorted((o.key, o.etag, o.size) for o in objects)
    return "sha256:" + hashlib.sha256(canonical_json(rows).encode()).hexdigest()


def spec_digest(spec: DocModelSpec) -> str:
    """Digest of the fields of the spec that change what is trained (`TRAINING_FIELDS`)."""
    relevant: dict[str, dict[str, Any]] = {}
    for section, fields in TRAINING_FIELDS.items():
        wire = getattr(spec, section).model_dump(mode="json", by_alias=True)
        relevant[section] = {name: wire.get(name) for name in fields}
    teacher = relevant["dataset"]["teacher"]
    if teacher is not None:
        relevant["dataset"]["teacher"] = {name: teacher.get(name) for name in TEACHER_FIELDS}
    # The ingest step indexes the passages for the baseline's retriever (embedding them for
    # Dense and Hybrid), so the retriever and the embedding model are part of every revision;
    # a retrieval candidate is also trained on the retriever's own top-k.
    baseline = spec.evaluation.baseline
    relevant["retrieval"] = {"retriever": baseline.retriever}
    if baseline.retriever != "BM25":
        relevant["retrieval"]["embeddingModel"] = {
            "name": basemodel.identity(baseline.embedding_model),
            "mirror": baseline.embedding_model.mirror,
        }
    if spec.training.candidate.kind == "Retrieval":
        relevant["retrieval"]["topK"] = baseline.top_k
    else:
        del relevant["training"]["candidate"]
    # The base model by what it is (its files' digest where this machine has them), not by a
    # path that differs between machines; and the software that trains it.
    relevant["base_model"]["name"] = basemodel.identity(spec.base_model)
    versioned = {
        "dataProtocol": DATA_PROTOCOL,
        "trainer": _version("docmodel"),
        "fields": relevant,
    }
    return "sha256:" + hashlib.sha256(canonical_json(versioned).encode()).hexdigest()


# Evaluation settings that change what a report holds (the gate's metric, margin, confidence,
# minimum questions and must-beat-serving only change the verdict, which is recomputed from the
# report's per-question scores).
REPORT_FIELDS = ("baseline", "maxQuestions", "maxNewTokens")
# The version of the report's contents (systems, diagnostics); part of the digest, so a report
# of an older version is scored again.
REPORT_PROTOCOL = 4


def evaluation_digest(settings: DocModelSpec | EvaluationSpec) -> str:
    """Digest of the evaluation settings a report was scored under: a spec's, or the
    settings an evaluation actually used (after command-line overrides)."""
    evaluation = settings.evaluation if isinstance(settings, DocModelSpec) else settings
    wire = evaluation.model_dump(mode="json", by_alias=True)
    relevant = {name: wire.get(name) for name in REPORT_FIELDS}
    versioned = {"reportProtocol": REPORT_PROTOCOL, "fields": relevant}
    return "sha256:" + hashlib.sha256(canonical_json(versioned).encode()).hexdigest()


def revision_id(spec: DocModelSpec, src_digest: str) -> str:
    """Short, deterministic revision id (10 hex characters)."""
    combined = f"{spec_digest(spec)}|{src_digest}"
    return hashlib.sha256(combined.encode()).hexdigest()[:10]


@dataclass(frozen=True)
class RevisionLayout:
    """Where one revision's artifacts live, relative to the artifact store's root."""

    namespace: str
    name: str
    revision: str

    @property
    def root(self) -> str:
        return f"{self.namespace}/{self.name}/rev-{self.revision}"

    def dir(self, kind: ArtifactKind) -> str:
        return f"{self.root}/{kind}"

    def key(self, kind: ArtifactKind, filename: str) -> str:
        return f"{self.dir(kind)}/{filename}"

    def uri(self, store_uri: str, kind: ArtifactKind, filename: str | None = None) -> str:
        base = f"{store_uri.rstrip('/')}/{self.dir(kind)}"
        return f"{base}/{filename}" if filename else base


class FileEntry(BaseModel):
    path: str
    sha256: str
    size: int


class Manifest(BaseModel):
    """Carried by every artifact, so any served model traces back to its docs and settings."""

    kind: ArtifactKind
    revision: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    inputs: dict[str, str] = Field(
        default_factory=dict, description="Digests or URIs of what this artifact was made from."
    )
    spec: dict[str, Any] = Field(default_factory=dict, description="The settings used.")
    versions: dict[str, str] = Field(default_factory=dict, description="Software versions.")
    metrics: dict[str, Any] = Field(default_factory=dict)
    details: dict[str, Any] = Field(default_factory=dict)
    files: list[FileEntry] = Field(default_factory=list)


def software_versions(packages: Iterable[str] = ()) -> dict[str, str]:
    """Versions of Python and of the named packages that are installed."""
    out = {"python": platform.python_version(), "docmodel": _version("docmodel")}
    for name in packages:
        version = _version(name)
        if version != "not-installed":
            out[name] = version
    return out


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not-installed"


def file_entries(directory: Path) -> list[FileEntry]:
    entries = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        if path.name == MANIFEST:
            continue
        entries.append(
            FileEntry(
                path=path.relative_to(directory).as_posix(),
                sha256=sha256_file(path),
                size=path.stat().st_size,
            )
        )
    return entries


class IntegrityError(StorageError):
    """A downloaded file does not match its manifest entry."""

    reason = "ChecksumMismatch"


def verify_files(
    local: Path, manifest: Manifest, uri: str, only: tuple[str, ...] | None = None
) -> None:
    """Check downloaded files against the manifest's list (those named in `only`, if given):
    each listed file is present, with the listed size and sha256."""
    found = {e.path: e for e in file_entries(local)}
    for want in manifest.files:
        if only is not None and want.path not in only:
            continue
        got = found.get(want.path)
        if got is None:
            problem = "is missing"
        elif got.size != want.size:
            problem = f"has {got.size} bytes, the manifest lists {want.size}"
        elif got.sha256 != want.sha256:
            problem = f"has sha256 {got.sha256}, the manifest lists {want.sha256}"
        else:
            continue
        raise IntegrityError(
            f"file {want.path} of the artifact at {uri} {problem} (corrupted or changed after "
            "the manifest was written)"
        )


def publish_dir(
    directory: Path, store: ObjectStore, layout: RevisionLayout, manifest: Manifest
) -> str:
    """Upload `directory` as the revision's `manifest.kind` artifact, manifest last.

    Writing the manifest last makes it the commit marker: an artifact without a manifest is
    incomplete (a pod died mid-upload) and is redone.
    """
    manifest.files = file_entries(directory)
    prefix = layout.dir(manifest.kind)
    # Republishing (a forced retrain or re-evaluation): withdraw the old commit marker first,
    # so that no reader pairs the old manifest with half-uploaded new files.
    store.delete(f"{prefix}/{MANIFEST}")
    for entry in manifest.files:
        store.upload_file(directory / entry.path, f"{prefix}/{entry.path}")
    store.put_bytes(
        f"{prefix}/{MANIFEST}",
        manifest.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )
    return layout.uri(store.uri, manifest.kind)


def read_manifest(
    store: ObjectStore, layout: RevisionLayout, kind: ArtifactKind
) -> Manifest | None:
    """The artifact's manifest, or None when the artifact is absent or incomplete."""
    try:
        raw = store.get_bytes(layout.key(kind, MANIFEST))  # one request, not a HEAD and a GET
    except NotFound:
        return None
    return Manifest.model_validate_json(raw)


def open_artifact_store(uri: str, env: dict[str, str] | None = None) -> ObjectStore:
    """The artifact store.

    For S3, `DOCMODEL_STORE_ENDPOINT`, `DOCMODEL_STORE_AWS_ACCESS_KEY_ID` and
    `DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY` configure it when the artifact store is not the
    source's store; otherwise the usual `AWS_*` variables apply.
    """
    settings = StoreSettings.from_env(env)
    secret = settings.aws_secret_access_key
    own = (
        S3Credentials(settings.aws_access_key_id, secret.get_secret_value())
        if settings.aws_access_key_id and secret is not None
        else None
    )
    return open_store(uri, endpoint=settings.endpoint, credentials=own)


class ArtifactMissing(StorageError):
    """No artifact (no manifest, its commit marker) at the URI."""

    reason = "AdapterMissing"


class ArtifactIncomplete(StorageError):
    """The artifact lacks a file its kind needs."""

    reason = "AdapterIncomplete"


def fetch_adapter(uri: str, dest: Path) -> tuple[Path, Manifest]:
    """Download the adapter at `uri` (an artifact store URI or a directory) into `dest`, fresh,
    and return it with its manifest. The one rule, for training, evaluation and serving alike:
    the manifest (written last by the trainer, the commit marker) is required, and every file
    it lists must match its size and sha256. Raises `ArtifactMissing` (no manifest),
    `IntegrityError` (a file does not match), `ArtifactIncomplete` (no adapter_config.json) or
    another `StorageError`, each naming the URI."""
    import shutil

    try:
        store = open_artifact_store(uri)
        raw = store.get_bytes(MANIFEST)
    except (NotFound, ValueError):
        raise ArtifactMissing(
            f"no adapter at {uri} (manifest.json missing: has the revision been trained?)"
        ) from None
    try:
        manifest = Manifest.model_validate_json(raw)
    except ValueError as exc:
        raise ArtifactMissing(
            f"the manifest of the adapter at {uri} is unreadable: {exc}"
        ) from None
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    try:
        download_tree(store, "", dest)
    except OSError as exc:
        raise StorageError(f"cannot fetch the adapter from {uri}: {exc}") from None
    verify_files(dest, manifest, uri)
    if not (dest / ADAPTER_CONFIG).is_file():
        raise ArtifactIncomplete(
            f"the adapter at {uri} has no {ADAPTER_CONFIG}; is it a PEFT adapter?"
        )
    return dest, manifest
