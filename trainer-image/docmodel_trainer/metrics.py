"""Answer-quality metrics and the paired bootstrap.

SQuAD-style normalisation (lowercase, strip punctuation and the articles a/an/the, collapse
whitespace) is applied before every metric:

- `exact_match`: 1.0 when the normalised answer equals the normalised reference.
- `token_f1`: harmonic mean of token precision and recall over the bag of normalised tokens
  (the SQuAD v2.0 evaluation script's definition: an empty answer against an empty reference
  scores 1.0, where the v1.1 script gives 0.0).
- `rouge_l`: F-measure of the longest common subsequence of normalised tokens (Lin, 2004,
  with beta = 1, the form `rouge-score` reports as `fmeasure`).

Two empty strings agree perfectly (1.0); an empty string against a non-empty one scores 0.0.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence

import numpy as np

from docmodel.report import METRICS, Difference, MetricName, Scores

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and articles, collapse whitespace (SQuAD v1.1)."""
    text = text.lower().translate(_PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence, in O(len(a) * len(b)) time, O(len(b)) memory."""
    if len(a) < len(b):
        a, b = b, a
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[-1]))
        previous = current
    return previous[-1]


def rouge_l(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    lcs = _lcs_length(pred, ref)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


METRIC_FUNCTIONS = {"exact_match": exact_match, "token_f1": token_f1, "rouge_l": rouge_l}


def score(prediction: str, reference: str) -> Scores:
    """Every metric for one answer."""
    return Scores(**{name: METRIC_FUNCTIONS[name](prediction, reference) for name in METRICS})


def aggregate(per_question: Sequence[Scores]) -> Scores:
    """Mean of each metric over the questions."""
    if not per_question:
        raise ValueError("no scores to aggregate")
    return Scores(**{name: float(np.mean([s.get(name) for s in per_question])) for name in METRICS})


def paired_bootstrap(
    system: Sequence[float],
    other: Sequence[float],
    *,
    resamples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Difference:
    """Percentile bootstrap CI of mean(system - other), resampling questions with replacement.

    Paired: each resample draws the same questions for both systems, so the per-question
    difference is what varies. A fixed seed makes the interval reproducible.
    """
    a, b = np.asarray(system, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equally long, non-empty score lists (got {a.shape}, {b.shape})")
    diff = a - b
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, diff.size, size=(resamples, diff.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Difference(
        mean=float(diff.mean()),
        ci_low=float(low),
        ci_high=float(high),
        confidence=confidence,
        resamples=resamples,
    )


def compare(
    system: Sequence[Scores], other: Sequence[Scores], *, resamples: int = 2000, seed: int = 0
) -> dict[MetricName, Difference]:
    """`paired_bootstrap` of every metric."""
    return {
        name: paired_bootstrap(
            [s.get(name) for s in system],
            [s.get(name) for s in other],
            resamples=resamples,
            seed=seed,
        )
        for name in METRICS
    }
