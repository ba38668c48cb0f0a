"""The promotion gate decides on the paired bootstrap interval, table-driven."""

from __future__ import annotations

import pytest

from docmodel.api import EvaluationSpec
from docmodel.gate import decide
from docmodel.stats import paired_bootstrap

POLICY = EvaluationSpec(metric="token_f1", min_improvement=0.05, must_beat_serving=True)
LOOSE = EvaluationSpec(metric="token_f1", min_improvement=0.0, min_questions=5, max_questions=200)


def wins(n: int, wins: int, losses: int = 0) -> tuple[list[float], list[float]]:
    """Per-question scores: the candidate gets 1 where the baseline gets 0 on `wins`
    questions, the reverse on `losses`, and both 0.5 on the rest."""
    cand = [1.0] * wins + [0.0] * losses + [0.5] * (n - wins - losses)
    base = [0.0] * wins + [1.0] * losses + [0.5] * (n - wins - losses)
    return cand, base


CASES = [
    # (name, candidate, baseline, serving, policy, promoted, reason)
    ("clear win, 100 questions", *wins(100, 40), None, POLICY, True, "BeatBaseline"),
    # Mean +0.1 but noisy: many wins and losses, interval reaches below the margin.
    ("noisy win", *wins(100, 30, 20), None, POLICY, False, "BelowBaseline"),
    ("clear loss", *wins(100, 0, 40), None, POLICY, False, "BelowBaseline"),
    ("tie, zero margin", *wins(60, 0), None, LOOSE, False, "BelowBaseline"),
    # The same mean advantage (+0.2 per question) on 5 questions: too few to exclude zero
    # when one of them goes the other way.
    (
        "small eval set",
        [1.0, 1.0, 0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0, 0.0, 0.0],
        None,
        LOOSE,
        False,
        "BelowBaseline",
    ),
    ("fewer than minQuestions", *wins(29, 29), None, POLICY, False, "InsufficientEvidence"),
    ("exactly minQuestions", *wins(30, 30), None, POLICY, True, "BeatBaseline"),
    ("worse than serving", *wins(100, 40), [1.0] * 100, POLICY, False, "WorseThanServing"),
    ("serving tie passes", *wins(100, 40), wins(100, 40)[0], POLICY, True, "BeatBaseline"),
    (
        "serving ignored when not required",
        *wins(100, 40),
        [1.0] * 100,
        POLICY.model_copy(update={"must_beat_serving": False}),
        True,
        "BeatBaseline",
    ),
]


@pytest.mark.parametrize(
    ("candidate", "baseline", "serving", "policy", "promoted", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_decide(candidate, baseline, serving, policy, promoted, reason) -> None:  # type: ignore[no-untyped-def]
    verdict = decide(candidate, baseline, serving, policy)
    assert (verdict.promoted, verdict.reason) == (promoted, reason), verdict.message
    assert verdict.name == ("Promoted" if promoted else "Rejected")
    if reason != "InsufficientEvidence":
        assert verdict.versus_baseline is not None
        low = verdict.versus_baseline.low
        assert (low > policy.min_improvement) == (reason != "BelowBaseline")


def test_point_estimate_above_the_margin_is_not_enough() -> None:
    candidate, baseline = wins(100, 30, 20)
    mean = sum(candidate) / 100 - sum(baseline) / 100
    assert mean > POLICY.min_improvement  # the old point-estimate gate would promote
    assert not decide(candidate, baseline, None, POLICY).promoted


def test_same_seed_same_verdict_and_interval() -> None:
    candidate, baseline = wins(50, 12, 6)
    first = decide(candidate, baseline, None, LOOSE, seed=3)
    again = decide(candidate, baseline, None, LOOSE, seed=3)
    assert first == again
    others = {decide(candidate, baseline, None, LOOSE, seed=s).versus_baseline for s in range(6)}
    assert len(others) > 1  # the seed does drive the resampling


def test_message_names_the_interval_and_the_margin() -> None:
    candidate, baseline = wins(100, 30, 20)
    verdict = decide(candidate, baseline, None, POLICY)
    iv = verdict.versus_baseline
    assert iv is not None
    for text in (f"{iv.low:+.4f}", f"{iv.high:+.4f}", "0.0500", "95% interval", "100 questions"):
        assert text in verdict.message


def test_confidence_widens_the_interval() -> None:
    candidate, baseline = wins(80, 20, 8)
    narrow = paired_bootstrap(candidate, baseline, confidence=0.8)
    wide = paired_bootstrap(candidate, baseline, confidence=0.99)
    assert wide.low < narrow.low < narrow.high < wide.high


def test_bootstrap_of_a_constant_difference_is_exact() -> None:
    iv = paired_bootstrap([0.7] * 20, [0.5] * 20)
    assert iv.low == pytest.approx(0.2) and iv.high == pytest.approx(0.2)
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([0.1], [0.1, 0.2])
