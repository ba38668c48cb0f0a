"""What identifies a revision and a report: digests of the spec fields that change what is
trained (`TRAINING_FIELDS`), of the source listing, and of the evaluation settings that change
what a report holds.

A revision id is a digest of the spec fields that change what is trained plus the source
digest, so the same docs and settings always give the same revision (and the same child object
names), and a replayed event never starts a second training run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from docmodel import basemodel
from docmodel.api import DocModelSpec, EvaluationSpec
from docmodel.storage import (
    ObjectInfo,
)

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
        "distributed",
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
        "queueName",
    ),
}


# Inside dataset.teacher, only what shapes the questions counts.
TEACHER_FIELDS = ("endpoint", "model", "questionsPerChunk")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


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
    # Several processes multiply the global batch (batchSize x gradientAccumulationSteps x
    # processes); one process, the default, is the single Job every revision id before it had.
    if spec.training.distributed.world_size == 1:
        del relevant["training"]["distributed"]
    # The base model by what it is (its files' digest where this machine has them), not by a
    # path that differs between machines; and the software that trains it.
    relevant["base_model"]["name"] = basemodel.identity(spec.base_model)
    versioned = {
        "dataProtocol": DATA_PROTOCOL,
        "trainer": package_version("docmodel"),
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


def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not-installed"
