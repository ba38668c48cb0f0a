"""A revision from a listing, and what the store holds of a revision: the two observations
both executors (the operator and local mode) make before they ask the planner what to do.

- `resolve_source` is the one rule from a source listing to a revision id (spec digest plus
  the digest of the objects `select_sources` picks); ingest computes its revision with it too,
  so the operator's revision (from a listing, no downloads) equals the one ingest publishes.
- `observe_revision` reads the artifacts' manifests (the commit markers) and the evaluation
  report, when one was scored under the current settings against the current serving adapter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from docmodel.api import DocModelSpec
from docmodel.artifacts import Manifest, RevisionLayout, read_manifest
from docmodel.digests import evaluation_digest, revision_id
from docmodel.report import EvalReport
from docmodel.selection import SourceSelection, select_sources
from docmodel.storage import (
    LocalStore,
    ObjectInfo,
    ObjectStore,
    S3Credentials,
    S3Store,
    StorageError,
)


@dataclass(frozen=True)
class ResolvedSource:
    """A revision's inputs and id, from one listing of the source."""

    selection: SourceSelection
    revision: str

    @property
    def digest(self) -> str:
        return self.selection.digest


def resolve_source(
    spec: DocModelSpec,
    listed: Iterable[ObjectInfo],
    provided: Iterable[ObjectInfo] | None = None,
) -> ResolvedSource:
    """The revision that a listing of the source (and of `providedPrefix`) gives."""
    selection = select_sources(spec, listed, provided)
    return ResolvedSource(selection, revision_id(spec, selection.digest))


def open_source(
    spec: DocModelSpec, source_dir: str | None = None, env: dict[str, str] | None = None
) -> ObjectStore:
    """The documentation: spec.source's bucket prefix, or a directory (local mode's --docs).

    Credentials are the usual `AWS_*` variables (the Jobs get them from `source.secretRef`).
    """
    if source_dir is not None:
        return LocalStore(source_dir)
    env = dict(os.environ) if env is None else env
    src = spec.source
    return S3Store(
        src.bucket,
        src.prefix,
        endpoint=src.endpoint or env.get("AWS_ENDPOINT_URL") or None,
        region=src.region,
        credentials=S3Credentials.from_env(env),
    )


def provided_store(source: ObjectStore, spec: DocModelSpec) -> ObjectStore | None:
    """Where provided pairs live when `providedPrefix` is set: a bucket prefix for S3 (from the
    bucket root), a subdirectory of the source directory in local mode."""
    prefix = spec.dataset.provided_prefix
    if spec.dataset.generator != "provided" or not prefix:
        return None
    if isinstance(source, S3Store):
        return S3Store(
            source.bucket,
            prefix,
            endpoint=source.endpoint,
            region=source.region,
            credentials=source.credentials,
        )
    return source.child(prefix)


def list_source(
    spec: DocModelSpec, source: ObjectStore, provided: ObjectStore | None = None
) -> ResolvedSource:
    """List the source (no downloads) and resolve the revision; raises `StorageError`."""
    return resolve_source(spec, source.list(), None if provided is None else provided.list())


@dataclass(frozen=True)
class SourceCheck:
    """One listing of the source: the revision it gives, or why listing failed."""

    resolved: ResolvedSource | None = None
    error_reason: str | None = None  # a StorageError's reason (AccessDenied, BucketNotFound...)
    error_message: str = ""


def check_source(spec: DocModelSpec, source: ObjectStore) -> SourceCheck:
    """List the source for the planner: the revision, or the storage error naming the place."""
    try:
        return SourceCheck(resolved=list_source(spec, source, provided_store(source, spec)))
    except StorageError as exc:
        where = (
            f"bucket={source.bucket} prefix={source.prefix or '(none)'}"
            if isinstance(source, S3Store)
            else f"directory {source.uri}"
        )
        return SourceCheck(error_reason=exc.reason, error_message=f"cannot list {where}: {exc}")


def report_covers(
    manifest: Manifest,
    *,
    adapter_uri: str,
    serving_uri: str | None,
    evaluation: str | None = None,
) -> bool:
    """Whether an existing eval artifact scored this candidate adapter and this serving adapter
    (or, like the request, none), under these evaluation settings (`evaluation_digest`), so it
    can stand; otherwise the revision is evaluated again. A report without serving scores would
    let the gate skip "must beat what serves now"; one scored with other questions or decoding
    would judge the candidate on stale numbers."""
    return (
        manifest.inputs.get("adapter") == adapter_uri
        and (manifest.inputs.get("serving_adapter") or None) == serving_uri
        and (evaluation is None or manifest.inputs.get("evaluation") == evaluation)
    )


@dataclass(frozen=True)
class RevisionArtifacts:
    """What the artifact store holds of one revision (complete artifacts only)."""

    dataset: bool = False
    adapter: bool = False
    report: EvalReport | None = None  # scored under the current settings and serving adapter


def observe_revision(
    store: ObjectStore,
    spec: DocModelSpec,
    namespace: str,
    name: str,
    revision: str,
    serving_revision: str | None,
    known: RevisionArtifacts | None = None,
) -> RevisionArtifacts:
    """Read the revision's manifests, and its report when it covers today's evaluation.
    `known`: what an earlier call found of the same revision; a revision's dataset and
    adapter never change once written, so they are not read again."""
    layout = RevisionLayout(namespace, name, revision)
    dataset = (known is not None and known.dataset) or read_manifest(
        store, layout, "dataset"
    ) is not None
    adapter = (known is not None and known.adapter) or read_manifest(
        store, layout, "adapter"
    ) is not None
    report = None
    evaluated = read_manifest(store, layout, "eval")
    compared = serving_revision if serving_revision not in (None, revision) else None
    if evaluated is not None and report_covers(
        evaluated,
        adapter_uri=layout.uri(store.uri, "adapter"),
        serving_uri=(
            RevisionLayout(namespace, name, compared).uri(store.uri, "adapter")
            if compared
            else None
        ),
        evaluation=evaluation_digest(spec),
    ):
        report = EvalReport.model_validate_json(store.get_bytes(layout.key("eval", "report.json")))
    return RevisionArtifacts(dataset, adapter, report)
