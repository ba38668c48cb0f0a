"""The artifact store: where each revision's artifacts live, their manifests, and how they are
published, verified and fetched.

One artifact store (an S3 URI, or a directory in local mode) holds every revision of every
DocModel:

    <store>/<namespace>/<name>/rev-<revision>/dataset/   chunks.jsonl, train.jsonl, eval.jsonl, manifest.json
    <store>/<namespace>/<name>/rev-<revision>/adapter/   adapter_model.safetensors, ..., manifest.json
    <store>/<namespace>/<name>/rev-<revision>/eval/      report.json, report.html, manifest.json
    <store>/<namespace>/<name>/rev-<revision>/checkpoints/   training checkpoints (for resuming)
    <store>/<namespace>/<name>/cache/parsed/   parsed documents by ETag (ingest re-runs)

Every artifact carries its manifest (kind, revision, inputs, files with their sha256); an
artifact without one is incomplete and counts as missing. Revision ids: `docmodel.digests`.
"""

from __future__ import annotations

import platform
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from docmodel.digests import package_version
from docmodel.modelfacts import ADAPTER_CONFIG
from docmodel.settings import StoreSettings
from docmodel.storage import (
    NotFound,
    ObjectStore,
    S3Credentials,
    StorageError,
    download_tree,
    open_store,
    sha256_file,
)

ArtifactKind = Literal["dataset", "adapter", "eval"]


MANIFEST = "manifest.json"


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
    out = {"python": platform.python_version(), "docmodel": package_version("docmodel")}
    for name in packages:
        version = package_version(name)
        if version != "not-installed":
            out[name] = version
    return out


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
