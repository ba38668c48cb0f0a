"""The promotion gate: a pure function of the per-question scores and the policy.

A candidate is promoted only on evidence:
- at least `evaluation.minQuestions` held-out questions were scored (else `InsufficientEvidence`);
- the lower bound of the paired bootstrap interval (`evaluation.confidence`) of
  (candidate - baseline) on the gating metric is above `evaluation.minImprovement`
  (else `BelowBaseline`);
- for a retrieval candidate, the interval of (candidate - baseline) on the questions about the
  documents it was not trained on does not lie wholly below zero (else `StoppedReading`: a
  model that answers from its weights and ignores the passages does worse than the base model
  reading them, exactly where the weights cannot know the answer);
- with `mustBeatServing`, the interval of (candidate - serving) does not lie wholly below zero
  (else `WorseThanServing`).
The interval is computed here, from the report's per-question scores, with the report's seed,
so the same report always gets the same verdict. Every verdict comes with a reason a human can
read. No I/O: the operator and local mode both call it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from docmodel.api import EvaluationSpec, Verdict
from docmodel.report import EvalReport, MetricName, SystemName
from docmodel.stats import Interval, paired_bootstrap

# Every reason a decision can carry (conditions, events and metrics use them).
REASONS = (
    "BeatBaseline",
    "InsufficientEvidence",
    "BelowBaseline",
    "StoppedReading",
    "WorseThanServing",
)


@dataclass(frozen=True)
class Decision:
    """The gate's decision; its `name` is the API's `Verdict`."""

    promoted: bool
    reason: str  # CamelCase, for conditions
    message: str  # for people
    versus_baseline: Interval | None = None

    @property
    def name(self) -> Verdict:
        return "Promoted" if self.promoted else "Rejected"


def _interval_text(iv: Interval) -> str:
    return f"{iv.mean:+.4f}, {iv.confidence:.0%} interval [{iv.low:+.4f}, {iv.high:+.4f}]"


def decide(
    candidate: Sequence[float],
    baseline: Sequence[float],
    serving: Sequence[float] | None,
    policy: EvaluationSpec,
    *,
    seed: int = 0,
    untrained: Sequence[int] = (),
) -> Decision:
    """Decide whether the candidate may replace what is serving, from per-question scores of
    the gating metric (the same questions, in the same order, for every system); `untrained`
    are the positions of the questions about documents a retrieval candidate was not trained
    on (empty for a closed-book candidate)."""
    metric: MetricName = policy.metric
    n = len(candidate)
    rag = f"RAG baseline ({policy.baseline.retriever} top-{policy.baseline.top_k})"
    if n < policy.min_questions:
        return Decision(
            False,
            "InsufficientEvidence",
            f"only {n} held-out questions were scored; a verdict needs at least "
            f"evaluation.minQuestions={policy.min_questions} (more documents or questions, or a "
            "larger dataset.evalFraction, give more)",
        )
    c_mean, b_mean = sum(candidate) / n, sum(baseline) / n
    vs_base = paired_bootstrap(candidate, baseline, confidence=policy.confidence, seed=seed)
    # Round so float noise never decides a tie; "above" is strict: a lower bound equal to the
    # margin is a rejection.
    if round(vs_base.low, 9) <= round(policy.min_improvement, 9):
        return Decision(
            False,
            "BelowBaseline",
            f"candidate {metric}={c_mean:.4f} vs {rag} {b_mean:.4f} on {n} questions: "
            f"difference {_interval_text(vs_base)}; the lower bound is not above the margin "
            f"{policy.min_improvement:.4f}",
            vs_base,
        )
    if untrained:
        vs_unseen = paired_bootstrap(
            [candidate[i] for i in untrained],
            [baseline[i] for i in untrained],
            confidence=policy.confidence,
            seed=seed,
        )
        if vs_unseen.high < 0:
            return Decision(
                False,
                "StoppedReading",
                f"candidate {metric}={c_mean:.4f} beat the {rag} {b_mean:.4f} overall, but "
                f"on the {len(untrained)} questions about documents it was not trained on it "
                f"reads the retrieved passages worse than the baseline: difference "
                f"{_interval_text(vs_unseen)} lies wholly below zero",
                vs_base,
            )
    serving_note = ""
    if policy.must_beat_serving and serving is not None:
        vs_serving = paired_bootstrap(candidate, serving, confidence=policy.confidence, seed=seed)
        s_mean = sum(serving) / n
        if vs_serving.high < 0:
            return Decision(
                False,
                "WorseThanServing",
                f"candidate {metric}={c_mean:.4f} beat the {rag} {b_mean:.4f} but is "
                f"worse than the serving revision {s_mean:.4f}: difference "
                f"{_interval_text(vs_serving)} lies wholly below zero",
                vs_base,
            )
        serving_note = f"; vs serving {s_mean:.4f}: {_interval_text(vs_serving)}"
    return Decision(
        True,
        "BeatBaseline",
        f"candidate {metric}={c_mean:.4f} beat the {rag} {b_mean:.4f} on {n} questions: "
        f"difference {_interval_text(vs_base)}, lower bound above the margin "
        f"{policy.min_improvement:.4f}{serving_note}",
        vs_base,
    )


def per_question(report: EvalReport, system: SystemName, metric: MetricName) -> list[float]:
    return [q.scores[system].get(metric) for q in report.questions]


def decide_report(report: EvalReport, policy: EvaluationSpec) -> Decision:
    """`decide` on an evaluation report's per-question scores, with the report's seed."""
    metric = policy.metric
    has_serving = bool(report.questions) and all("serving" in q.scores for q in report.questions)
    return decide(
        per_question(report, "candidate", metric),
        per_question(report, "baseline", metric),
        per_question(report, "serving", metric) if has_serving else None,
        policy,
        seed=report.bootstrap_seed,
        untrained=[i for i, q in enumerate(report.questions) if not q.document_trained]
        if report.kinds.get("candidate") == "Retrieval"
        else (),
    )
