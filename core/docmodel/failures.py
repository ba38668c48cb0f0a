"""What a failed step means: one table from exit codes (and Kubernetes' own reasons) to what
happens next. The trainer exits with these codes, the Job builder's podFailurePolicy fails a Job
fast on the permanent ones, and the planner decides from the same table whether a failed step is
retried, waits for the next source check, or fails the revision.

| exit | meaning                                   | class     | what happens                                  |
|------|-------------------------------------------|-----------|-----------------------------------------------|
| 2    | bad input (arguments, config, DocModel)   | permanent | the Job fails at once (podFailurePolicy); the revision is Failed |
| 3    | no usable data in the source              | no-data   | the Job fails at once; `DataReady=False`; re-checked at the next source poll (changed docs give a new revision) |
| 4    | storage (access denied, missing bucket)   | temporary | pods retried by the Job, then the step is started again with back-off |
| 5    | an upstream service (teacher, model hub)  | temporary | as 4                                          |
| 1 or any other, OOMKilled, DeadlineExceeded | unexpected | bounded | pods retried up to `backoffLimit`; then the revision is Failed |
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_BAD_INPUT = 2  # invalid arguments, config or DocModel
EXIT_NO_DATA = 3  # nothing usable in the source (DataReady=False)
EXIT_STORAGE = 4  # access denied, missing bucket, unreachable endpoint
EXIT_UPSTREAM = 5  # a teacher model or other service failed


class FailureClass(StrEnum):
    PERMANENT = "Permanent"  # never retried for this revision
    NO_DATA = "NoData"  # not retried until the source changes
    TEMPORARY = "Temporary"  # retried with back-off, without limit
    BOUNDED = "Bounded"  # the Job's own retries (backoffLimit) were the bound

    @property
    def retried(self) -> bool:
        return self is FailureClass.TEMPORARY


@dataclass(frozen=True)
class ExitMeaning:
    code: int
    reason: str  # CamelCase, for conditions and lastFailure
    failure_class: FailureClass
    summary: str

    @property
    def fails_job_at_once(self) -> bool:
        """Whether the Job fails on the first pod with this code (podFailurePolicy FailJob)."""
        return self.failure_class in (FailureClass.PERMANENT, FailureClass.NO_DATA)


EXIT_CODES: dict[int, ExitMeaning] = {
    m.code: m
    for m in (
        ExitMeaning(EXIT_BAD_INPUT, "BadInput", FailureClass.PERMANENT, "bad input"),
        ExitMeaning(EXIT_NO_DATA, "NoUsableData", FailureClass.NO_DATA, "no usable data"),
        ExitMeaning(EXIT_STORAGE, "StorageError", FailureClass.TEMPORARY, "storage failed"),
        ExitMeaning(EXIT_UPSTREAM, "UpstreamError", FailureClass.TEMPORARY, "upstream failed"),
    )
}
UNEXPECTED = ExitMeaning(EXIT_UNEXPECTED, "Crashed", FailureClass.BOUNDED, "unexpected failure")

# Reasons for a failure that no exit code of ours explains: Kubernetes' own, and a step that
# finished without publishing its artifact (retried: an object store may lag).
OTHER_REASONS: dict[str, tuple[FailureClass, str]] = {
    "OOMKilled": (FailureClass.BOUNDED, "the container ran out of memory"),
    "DeadlineExceeded": (FailureClass.BOUNDED, "the Job ran past activeDeadlineSeconds"),
    "BackoffLimitExceeded": (FailureClass.BOUNDED, "every retry of the pod failed"),
    "Evicted": (FailureClass.BOUNDED, "the pod was evicted from its node"),
    "ArtifactMissing": (FailureClass.TEMPORARY, "the step finished without its artifact"),
}

# Temporary failures are retried after BACKOFF_BASE_SECONDS x 2^(attempt-1), at most this much.
BACKOFF_BASE_SECONDS = 30.0
BACKOFF_MAX_SECONDS = 1800.0


@dataclass(frozen=True)
class Classified:
    reason: str
    failure_class: FailureClass
    summary: str


def classify(exit_code: int | None, reason: str | None = None) -> Classified:
    """What a failed step means: our exit codes first, then the reason Kubernetes (or the
    executor) gave, then "Crashed" (an unexpected exit, bounded by the Job's retries)."""
    if exit_code is not None and exit_code in EXIT_CODES:
        meaning = EXIT_CODES[exit_code]
        return Classified(meaning.reason, meaning.failure_class, meaning.summary)
    if reason is not None and reason in OTHER_REASONS:
        failure_class, summary = OTHER_REASONS[reason]
        return Classified(reason, failure_class, summary)
    summary = UNEXPECTED.summary if exit_code is None else f"exit code {exit_code}"
    return Classified(reason or UNEXPECTED.reason, FailureClass.BOUNDED, summary)


def backoff_seconds(attempt: int) -> float:
    """Delay before retry number `attempt` (1 = the first retry) of a temporary failure."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2.0 ** max(0, attempt - 1))
