"""The promotion gate: a pure function of (candidate, baseline, serving, policy).

A candidate is promoted only when it beats the RAG baseline on the gating metric (strictly) by
at least the margin, and (when asked) scores no worse than the revision serving now. Every verdict
comes with a reason a human can read. No I/O here: the operator and local mode both call it.
"""

from __future__ import annotations

from dataclasses import dataclass

from docmodel.api import EvaluationSpec
from docmodel.report import EvalReport, MetricName, Scores


@dataclass(frozen=True)
class Verdict:
    promoted: bool
    reason: str  # CamelCase, for conditions
    message: str  # for people

    @property
    def name(self) -> str:
        return "Promoted" if self.promoted else "Rejected"


def decide(
    candidate: Scores,
    baseline: Scores,
    serving: Scores | None,
    policy: EvaluationSpec,
) -> Verdict:
    """Decide whether `candidate` may replace what is serving."""
    metric: MetricName = policy.metric
    c, b = candidate.get(metric), baseline.get(metric)
    needed = b + policy.min_improvement
    # Round to avoid float noise deciding a tie (scores are means of at most 10k questions).
    # "Beat" is strict: with a zero margin a tie with the baseline is still a rejection.
    if round(c, 9) < round(needed, 9) or round(c, 9) <= round(b, 9):
        return Verdict(
            False,
            "BelowBaseline",
            f"candidate {metric}={c:.4f} did not beat the RAG baseline {b:.4f} by the "
            f"required margin {policy.min_improvement:.4f} (needed {needed:.4f})",
        )
    if policy.must_beat_serving and serving is not None:
        s = serving.get(metric)
        if round(c, 9) < round(s, 9):
            return Verdict(
                False,
                "WorseThanServing",
                f"candidate {metric}={c:.4f} beat the baseline {b:.4f} but scored below the "
                f"serving revision {s:.4f}",
            )
    serving_note = "" if serving is None else f", serving {serving.get(metric):.4f}"
    return Verdict(
        True,
        "BeatBaseline",
        f"candidate {metric}={c:.4f} beat the RAG baseline {b:.4f} by "
        f"{c - b:+.4f} (margin {policy.min_improvement:.4f}{serving_note})",
    )


def decide_report(report: EvalReport, policy: EvaluationSpec) -> Verdict:
    """`decide` on an evaluation report."""
    return decide(
        report.aggregate["candidate"],
        report.aggregate["baseline"],
        report.aggregate.get("serving"),
        policy,
    )
