"""When the source is listed again, which revision is the target, and the key a verdict was
reached under."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from croniter import croniter

from docmodel.api import (
    DocModelSpec,
    DocModelStatus,
    duration_seconds,
)
from docmodel.digests import canonical_json, evaluation_digest, revision_id
from docmodel.revision import SourceCheck


def next_source_check(spec: DocModelSpec, status: DocModelStatus) -> datetime | None:
    """When the source is next due to be listed (None: only on a spec change)."""
    last = status.source_checked_at
    if last is None:
        return None
    due: list[datetime] = []
    failure = status.last_failure
    if failure is not None and failure.stage == "source" and failure.retry_at is not None:
        due.append(failure.retry_at)
    if spec.retraining.on_source_change:
        due.append(last + timedelta(seconds=duration_seconds(spec.retraining.poll_interval)))
    if spec.retraining.schedule:
        due.append(croniter(spec.retraining.schedule, last).get_next(datetime))
    return min(due) if due else None


def source_check_due(
    spec: DocModelSpec, status: DocModelStatus, generation: int | None, now: datetime
) -> bool:
    """Whether the source must be listed now: never listed, a new generation of the spec, the
    poll interval elapsed, the cron schedule fired, or a failed listing is due for a retry."""
    if status.source_checked_at is None or status.source_digest is None:
        return True
    if generation is not None and generation != status.observed_generation:
        return True
    due = next_source_check(spec, status)
    return due is not None and due <= now


def target_revision(
    spec: DocModelSpec, status: DocModelStatus, check: SourceCheck | None
) -> str | None:
    """The revision to work on: the listing's, else the last known digest under today's spec."""
    if check is not None and check.resolved is not None:
        return check.resolved.revision
    if status.source_digest is None:
        return None
    return revision_id(spec, status.source_digest)


def judgement_key(spec: DocModelSpec) -> str:
    """What a verdict depends on besides the revision: evaluation settings and gate policy."""
    gate = spec.evaluation.model_dump(
        mode="json",
        by_alias=True,
        include={"metric", "min_improvement", "must_beat_serving", "confidence", "min_questions"},
    )
    combined = canonical_json([evaluation_digest(spec), gate])
    return hashlib.sha256(combined.encode()).hexdigest()[:12]
