"""Answer metrics (known values) and the paired bootstrap."""

from __future__ import annotations

import pytest

from docmodel.report import METRICS, Scores
from docmodel.stats import paired_bootstrap
from docmodel_trainer import answer_quality

NORMALISED = [
    ("The Cat", "cat"),
    ("  a  quick,  brown fox! ", "quick brown fox"),
    ("An apple; THE pear.", "apple pear"),
    ("theatre", "theatre"),  # articles only as whole words
    ("", ""),
]


@pytest.mark.parametrize(("text", "expected"), NORMALISED)
def test_normalize_answer(text: str, expected: str) -> None:
    assert answer_quality.normalize_answer(text) == expected


# prediction, reference, exact_match, token_f1, rouge_l
KNOWN = [
    ("Port 8105.", "port 8105", 1.0, 1.0, 1.0),
    ("8105", "Port 8105.", 0.0, 2 / 3, 2 / 3),
    ("the cat sat on the mat", "the cat is on the mat", 0.0, 0.75, 0.75),
    # Same bag of words, reversed order: F1 ignores order, ROUGE-L does not.
    ("mat on cat", "cat on mat", 0.0, 1.0, 1 / 3),
    ("thirty days thirty", "thirty days", 0.0, 0.8, 0.8),
    ("nothing alike", "thirty days", 0.0, 0.0, 0.0),
    ("", "", 1.0, 1.0, 1.0),
    ("", "thirty days", 0.0, 0.0, 0.0),
    ("The.", "", 1.0, 1.0, 1.0),  # both normalise to empty
]


@pytest.mark.parametrize(("prediction", "reference", "em", "f1", "rl"), KNOWN)
def test_known_values(prediction: str, reference: str, em: float, f1: float, rl: float) -> None:
    assert answer_quality.exact_match(prediction, reference) == em
    assert answer_quality.token_f1(prediction, reference) == pytest.approx(f1)
    assert answer_quality.rouge_l(prediction, reference) == pytest.approx(rl)
    s = answer_quality.score(prediction, reference)
    assert (s.exact_match, s.token_f1, s.rouge_l) == pytest.approx((em, f1, rl))


# prediction, reference, gold recall, answer words. Recall is token F1's clipped overlap over the
# reference's length; empty strings follow token F1 (SQuAD v2.0): only empty recalls empty.
RECALL = [
    ("the account manager", "account manager", 1.0, 2),
    ("manager", "account manager", 0.5, 1),
    ("Ask the account manager, or the CFO.", "account manager", 1.0, 5),  # extra words: no cost
    ("manager manager manager", "account manager", 0.5, 3),  # counts are clipped
    ("thirty days thirty", "thirty days thirty days", 0.75, 3),
    ("8105", "Port 8105.", 0.5, 1),
    ("nothing alike", "thirty days", 0.0, 2),
    ("", "", 1.0, 0),
    ("The.", "", 1.0, 0),  # both normalise to empty
    ("", "thirty days", 0.0, 0),
    ("thirty days", "", 0.0, 2),  # an empty reference is recalled by an empty answer only
    ("a an the", "the", 1.0, 0),
]


@pytest.mark.parametrize(("prediction", "reference", "recall", "words"), RECALL)
def test_gold_recall_and_answer_words(
    prediction: str, reference: str, recall: float, words: int
) -> None:
    assert answer_quality.gold_recall(prediction, reference) == pytest.approx(recall)
    assert answer_quality.score(prediction, reference).gold_recall == pytest.approx(recall)
    assert answer_quality.answer_words(prediction) == words


def test_shorter_answer_wins_f1_not_gold_recall() -> None:
    """Answer style moves token F1; gold recall shows it."""
    reference = "the account manager approves refunds"
    short, long = "account manager", "the account manager, after checking the ticket history"
    assert answer_quality.token_f1(short, reference) > answer_quality.token_f1(long, reference)
    assert (
        answer_quality.gold_recall(short, reference)
        == answer_quality.gold_recall(long, reference)
        == 0.5
    )
    assert answer_quality.mean_answer_words([short, long]) == pytest.approx((2 + 6) / 2)
    with pytest.raises(ValueError, match="no answers"):
        answer_quality.mean_answer_words([])


def test_lcs_is_symmetric_and_bounded() -> None:
    a, b = ["a", "b", "c", "d", "e", "f"], ["x", "b", "y", "d", "z", "f"]
    assert answer_quality._lcs_length(a, b) == answer_quality._lcs_length(b, a) == 3
    assert answer_quality._lcs_length(a, []) == 0


def test_aggregate_is_the_mean() -> None:
    agg = answer_quality.aggregate(
        [
            Scores(exact_match=1, token_f1=1, rouge_l=0.5, gold_recall=1),
            Scores(exact_match=0, token_f1=0.5, rouge_l=0, gold_recall=0.5),
        ]
    )
    assert (agg.exact_match, agg.token_f1, agg.rouge_l, agg.gold_recall) == pytest.approx(
        (0.5, 0.75, 0.25, 0.75)
    )
    with pytest.raises(ValueError, match="no scores"):
        answer_quality.aggregate([])


def test_scores_without_gold_recall_aggregate_and_compare_without_it() -> None:
    """Scores built without gold recall (reports of report protocol 2) keep it absent."""
    old = [
        Scores(exact_match=1, token_f1=1, rouge_l=1),
        Scores(exact_match=0, token_f1=0, rouge_l=0),
    ]
    assert answer_quality.aggregate(old).gold_recall is None
    assert answer_quality.aggregate([*old, answer_quality.score("x", "x")]).gold_recall is None
    assert set(answer_quality.compare(old, old, resamples=50)) == {
        "exact_match",
        "token_f1",
        "rouge_l",
    }
    with pytest.raises(ValueError, match="no gold_recall"):
        old[0].get("gold_recall")


def test_bootstrap_is_reproducible_and_brackets_the_mean() -> None:
    a = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1]
    b = [0, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1]
    first = paired_bootstrap(a, b, seed=7)
    assert first == paired_bootstrap(a, b, seed=7)
    assert first.low <= first.mean <= first.high
    assert first.mean == pytest.approx(4 / 12)
    assert 0.0 <= first.low < first.high <= 1.0
    # Pairing matters: identical systems give a zero-width interval at zero.
    same = paired_bootstrap(a, a)
    assert (same.mean, same.low, same.high) == (0.0, 0.0, 0.0)


def test_bootstrap_rejects_unpaired_input() -> None:
    with pytest.raises(ValueError, match="equally long"):
        paired_bootstrap([1, 0], [1])
    with pytest.raises(ValueError, match="non-empty"):
        paired_bootstrap([], [])


def test_compare_is_the_gates_bootstrap_per_metric() -> None:
    a = [answer_quality.score("Port 8105", "port 8105"), answer_quality.score("x", "y")] * 10
    b = [answer_quality.score("8105", "port 8105"), answer_quality.score("x", "y")] * 10
    diff = answer_quality.compare(a, b, resamples=300, seed=4, confidence=0.9)["exact_match"]
    iv = paired_bootstrap(
        [s.exact_match for s in a],
        [s.exact_match for s in b],
        resamples=300,
        seed=4,
        confidence=0.9,
    )
    assert (diff.mean, diff.ci_low, diff.ci_high, diff.confidence) == (
        iv.mean,
        iv.low,
        iv.high,
        0.9,
    )


def test_compare_covers_every_metric() -> None:
    a = [answer_quality.score("Port 8105", "port 8105"), answer_quality.score("x", "y")]
    b = [answer_quality.score("8105", "port 8105"), answer_quality.score("x", "y")]
    diffs = answer_quality.compare(a, b, resamples=100)
    assert set(diffs) == {"exact_match", "token_f1", "rouge_l", "gold_recall"} == set(METRICS)
    assert diffs["exact_match"].mean == pytest.approx(0.5)
    assert diffs["gold_recall"].mean == pytest.approx(0.25)  # (1 - 0.5) on one of two questions
