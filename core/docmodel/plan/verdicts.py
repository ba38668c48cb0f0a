"""A candidate's status: from its evaluation report and the gate's decision, or, for a revision
judged before, from its history entry (the verdict stands)."""

from __future__ import annotations

from docmodel.api import CandidateStatus, HistoryEntry, Metrics
from docmodel.gate import Decision
from docmodel.report import EvalReport, MetricName, Scores


def score_text(value: float | None) -> str | None:
    """A score as status shows it."""
    return None if value is None else f"{value:.4f}"


def _metrics(scores: Scores) -> Metrics:
    return Metrics(exact_match=scores.exact_match, token_f1=scores.token_f1, rouge_l=scores.rouge_l)


def judged_candidate(
    revision: str,
    report: EvalReport,
    decision: Decision,
    metric: MetricName,
    *,
    adapter_uri: str,
    report_uri: str,
) -> CandidateStatus:
    """The candidate as its report scored it and the gate decided."""
    candidate, baseline = report.aggregate["candidate"], report.aggregate["baseline"]
    return CandidateStatus(
        revision=revision,
        adapter_uri=adapter_uri,
        metrics=_metrics(candidate),
        baseline_metrics=_metrics(baseline),
        score=score_text(candidate.get(metric)),
        baseline_score=score_text(baseline.get(metric)),
        verdict=decision.name,
        reason=decision.message,
        report_uri=report_uri,
    )


def restored_candidate(entry: HistoryEntry, metric: MetricName) -> CandidateStatus:
    """The candidate of a revision judged before, from its history entry."""
    return CandidateStatus(
        revision=entry.revision,
        adapter_uri=entry.adapter_uri,
        metrics=entry.metrics,
        baseline_metrics=entry.baseline_metrics,
        score=score_text(None if entry.metrics is None else getattr(entry.metrics, metric)),
        baseline_score=score_text(
            None if entry.baseline_metrics is None else getattr(entry.baseline_metrics, metric)
        ),
        verdict=entry.verdict,
        reason=entry.reason,
        report_uri=entry.report_uri,
    )
