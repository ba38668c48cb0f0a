"""Status helpers (conditions, events, history) and the exit-code table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from docmodel.api import HistoryEntry
from docmodel.failures import (
    BACKOFF_MAX_SECONDS,
    EXIT_CODES,
    FailureClass,
    backoff_seconds,
    classify,
)
from docmodel.status import condition_events, get_condition, record_history, set_condition

T0 = datetime(2026, 12, 1, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)


def test_last_transition_time_moves_only_when_the_status_flips() -> None:
    first = set_condition([], "Trained", "Unknown", "Started", "training", 1, T0)
    same = set_condition(first, "Trained", "Unknown", "Running", "still training", 2, T1)
    flipped = set_condition(same, "Trained", "True", "AdapterTrained", "done", 2, T1)
    assert get_condition(first, "Trained").last_transition_time == T0  # type: ignore[union-attr]
    kept = get_condition(same, "Trained")
    assert kept is not None
    assert (kept.last_transition_time, kept.reason, kept.observed_generation) == (T0, "Running", 2)
    assert get_condition(flipped, "Trained").last_transition_time == T1  # type: ignore[union-attr]


def test_conditions_keep_one_order() -> None:
    conditions = set_condition([], "Ready", "False", "NoRevisionPromoted", "", 1, T0)
    conditions = set_condition(conditions, "DataReady", "True", "DatasetPublished", "", 1, T0)
    conditions = set_condition(conditions, "Promoted", "True", "BeatBaseline", "", 1, T0)
    assert [c.type for c in conditions] == ["DataReady", "Promoted", "Ready"]


def test_events_for_changed_conditions_only() -> None:
    before = set_condition([], "Trained", "Unknown", "Started", "", 1, T0)
    after = set_condition(before, "Trained", "False", "OOMKilled", "out of memory", 1, T1)
    after = set_condition(after, "Ready", "True", "Serving", "serving", 1, T1)
    events = condition_events(before, after)
    assert [(e.type, e.reason) for e in events] == [("Warning", "OOMKilled"), ("Normal", "Serving")]
    assert condition_events(after, after) == []


def test_history_replaces_a_revision_and_is_trimmed() -> None:
    history = [HistoryEntry(revision=r) for r in ("c", "b", "a")]
    again = record_history(history, HistoryEntry(revision="b", verdict="Promoted"), 3)
    assert [(h.revision, h.verdict) for h in again] == [("b", "Promoted"), ("c", None), ("a", None)]
    assert [h.revision for h in record_history(history, HistoryEntry(revision="d"), 2)] == [
        "d",
        "c",
    ]


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (2, "BadInput", FailureClass.PERMANENT),
        (3, "NoUsableData", FailureClass.NO_DATA),
        (4, "StorageError", FailureClass.TEMPORARY),
        (5, "UpstreamError", FailureClass.TEMPORARY),
        (1, "Crashed", FailureClass.BOUNDED),
        (139, "Crashed", FailureClass.BOUNDED),
    ],
)
def test_exit_codes_are_classified(code: int, reason: str, cls: FailureClass) -> None:
    got = classify(code)
    assert (got.reason, got.failure_class) == (reason, cls)


def test_kubernetes_reasons_without_our_exit_code() -> None:
    assert classify(137, "OOMKilled").reason == "OOMKilled"
    assert classify(None, "DeadlineExceeded").failure_class is FailureClass.BOUNDED
    assert classify(None, "ArtifactMissing").failure_class is FailureClass.TEMPORARY
    # Our own exit code wins over Kubernetes' summary of the Job.
    assert classify(2, "BackoffLimitExceeded").reason == "BadInput"


def test_only_permanent_codes_fail_the_job_at_once() -> None:
    assert sorted(c for c, m in EXIT_CODES.items() if m.fails_job_at_once) == [2, 3]


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff_seconds(n) for n in (1, 2, 3)] == [30, 60, 120]
    assert backoff_seconds(50) == BACKOFF_MAX_SECONDS


def test_trainer_exit_codes_are_the_cores() -> None:
    from docmodel import failures
    from docmodel_trainer import common

    for name in ("EXIT_BAD_INPUT", "EXIT_NO_DATA", "EXIT_STORAGE", "EXIT_UPSTREAM"):
        assert getattr(common, name) is getattr(failures, name)


def test_secret_values_are_redacted_from_log_lines() -> None:
    from docmodel.status import redact

    lines = ["key=AKIA123456 secret=s3cr3t-value-long", "token s3cr3t-value", "ok"]
    assert redact(lines, ["s3cr3t-value", "s3cr3t-value-long", "AKIA123456", "ab"]) == [
        "key=[redacted] secret=[redacted]",
        "token [redacted]",
        "ok",
    ]


def test_a_history_entry_carries_every_field_of_its_candidate() -> None:
    from docmodel.api import CandidateStatus, Metrics

    candidate = CandidateStatus(
        revision="r1",
        adapter_uri="s3://a/r1/adapter",
        metrics=Metrics(exact_match=0.5, token_f1=0.8, rouge_l=0.8),
        baseline_metrics=Metrics(exact_match=0.1, token_f1=0.2, rouge_l=0.2),
        score="0.8000",
        baseline_score="0.2000",
        verdict="Promoted",
        reason="beats the baseline",
        report_uri="s3://a/r1/eval/report.json",
    )
    at = datetime(2026, 12, 4, tzinfo=UTC)
    entry = candidate.history_entry(source_digest="sha256:d", completed_at=at, judged_with="j")
    for field in set(HistoryEntry.model_fields) & set(CandidateStatus.model_fields):
        assert getattr(entry, field) == getattr(candidate, field), field
    assert (entry.source_digest, entry.completed_at, entry.judged_with) == ("sha256:d", at, "j")
    with pytest.raises(ValueError, match="without a revision"):
        CandidateStatus().history_entry(source_digest=None, completed_at=at, judged_with="j")
