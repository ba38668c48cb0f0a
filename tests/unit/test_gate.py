"""The promotion gate, table-driven."""

from __future__ import annotations

import pytest

from docmodel.api import EvaluationSpec
from docmodel.gate import decide
from docmodel.report import Scores


def s(f1: float, em: float = 0.0, rl: float = 0.0) -> Scores:
    return Scores(exact_match=em, token_f1=f1, rouge_l=rl)


POLICY = EvaluationSpec(metric="token_f1", min_improvement=0.05, must_beat_serving=True)


@pytest.mark.parametrize(
    ("candidate", "baseline", "serving", "policy", "promoted", "reason"),
    [
        (s(0.60), s(0.50), None, POLICY, True, "BeatBaseline"),
        (s(0.55), s(0.50), None, POLICY, True, "BeatBaseline"),  # exactly the margin
        (s(0.54), s(0.50), None, POLICY, False, "BelowBaseline"),
        (s(0.40), s(0.50), None, POLICY, False, "BelowBaseline"),
        (s(0.60), s(0.50), s(0.70), POLICY, False, "WorseThanServing"),
        (s(0.60), s(0.50), s(0.60), POLICY, True, "BeatBaseline"),  # a tie with serving passes
        (
            s(0.60),
            s(0.50),
            s(0.70),
            EvaluationSpec(metric="token_f1", min_improvement=0.05, must_beat_serving=False),
            True,
            "BeatBaseline",
        ),
        (
            s(0.50),
            s(0.50),
            None,
            EvaluationSpec(metric="token_f1", min_improvement=0.0),
            False,
            "BelowBaseline",
        ),  # a tie does not beat the baseline, even with no margin
        (
            s(0.0),
            s(0.0),
            None,
            EvaluationSpec(metric="token_f1", min_improvement=0.0),
            False,
            "BelowBaseline",
        ),
        (
            s(0.10, em=0.9),
            s(0.90, em=0.1),
            None,
            EvaluationSpec(metric="exact_match", min_improvement=0.0),
            True,
            "BeatBaseline",
        ),
        (
            s(0.9, rl=0.2),
            s(0.1, rl=0.3),
            None,
            EvaluationSpec(metric="rouge_l", min_improvement=0.0),
            False,
            "BelowBaseline",
        ),
    ],
)
def test_decide(candidate, baseline, serving, policy, promoted, reason) -> None:  # type: ignore[no-untyped-def]
    verdict = decide(candidate, baseline, serving, policy)
    assert (verdict.promoted, verdict.reason) == (promoted, reason)
    assert policy.metric in verdict.message
    assert verdict.name == ("Promoted" if promoted else "Rejected")


def test_message_explains_the_numbers() -> None:
    verdict = decide(s(0.52), s(0.50), None, POLICY)
    assert (
        "0.5200" in verdict.message and "0.5000" in verdict.message and "0.5500" in verdict.message
    )
