"""The children's names (deterministic per DocModel, revision and step) and the owner
reference and metadata every child carries."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from docmodel.api import API_VERSION, KIND, DocModel
from docmodel.digests import canonical_json, evaluation_digest

Step = Literal["ingest", "train", "evaluate"]


STEPS: tuple[Step, ...] = ("ingest", "train", "evaluate")


STEP_SUFFIX: dict[Step, str] = {"ingest": "ingest", "train": "train", "evaluate": "eval"}


MAX_NAME = 63


class NameTooLong(ValueError):
    """A child name would exceed 63 characters (the DocModel's name is over 40)."""


def child_name(name: str, revision: str | None = None, suffix: str | None = None) -> str:
    """`<name>[-<revision>][-<suffix>]`, refused past 63 characters."""
    out = "-".join(part for part in (name, revision, suffix) if part)
    if len(out) > MAX_NAME:
        raise NameTooLong(f"child name {out!r} has {len(out)} characters, more than {MAX_NAME}")
    return out


def short_digest(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode()).hexdigest()[:5]


def job_name(dm: DocModel, step: Step, revision: str, serving_revision: str | None = None) -> str:
    """The Job of one step of one revision.

    An evaluation is named after what it scores under (the evaluation settings and the serving
    revision it is compared with), so a changed setting or a new serving revision gets a Job
    of its own instead of finding the finished one.
    """
    suffix = STEP_SUFFIX[step]
    if step == "evaluate":
        compared = serving_revision if serving_revision != revision else None
        suffix += "-" + short_digest([evaluation_digest(dm.spec), compared])
    return child_name(dm.metadata.name, revision, suffix)


def deployment_name(name: str, revision: str) -> str:
    return child_name(name, revision)


def service_name(name: str) -> str:
    return child_name(name)


@dataclass(frozen=True)
class Owner:
    """The DocModel object that owns the children (its uid comes from the API server)."""

    name: str
    namespace: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def child_metadata(
    owner: Owner, name: str, lbls: dict[str, str], annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": lbls,
        "ownerReferences": [owner.reference()],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta
