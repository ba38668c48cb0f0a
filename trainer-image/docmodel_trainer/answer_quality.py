"""Answer-quality metrics, their paired comparison, answer cost and retrieval recall.

SQuAD-style normalisation (lowercase, strip punctuation and the articles a/an/the, collapse
whitespace) is applied before every metric:

- `exact_match`: 1.0 when the normalised answer equals the normalised reference.
- `token_f1`: harmonic mean of token precision and recall over the bag of normalised tokens
  (the SQuAD v2.0 evaluation script's definition: an empty answer against an empty reference
  scores 1.0, where the v1.1 script gives 0.0).
- `rouge_l`: F-measure of the longest common subsequence of normalised tokens (Lin, 2004,
  with beta = 1, the form `rouge-score` reports as `fmeasure`).
- `gold_recall`: the share of the reference's normalised tokens present in the answer, over
  the bag of tokens with clipped counts (token F1's overlap divided by the reference's length):
  "the account manager" against "account manager" is 1.0, "manager" 0.5. Reported, never
  gating: extra words never lower it.

Two empty strings agree perfectly (1.0); an empty string against a non-empty one scores 0.0
(for gold recall too: an empty reference is recalled only by an empty answer, the SQuAD v2.0
convention token F1 follows).

`answer_words` counts an answer's words after the same normalisation (descriptive, not a score).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from docmodel.dataset import Chunk, QAPair
from docmodel.report import METRICS, Difference, MetricName, Scores, SystemCost
from docmodel.stats import DEFAULT_RESAMPLES, paired_bootstrap, percentile
from docmodel_trainer.generation import AnswerStats

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


def gold_recall(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    return sum((Counter(pred) & Counter(ref)).values()) / len(ref)


def answer_words(text: str) -> int:
    """An answer's length in words, after the metrics' normalisation."""
    return len(normalize_answer(text).split())


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


METRIC_FUNCTIONS = {
    "exact_match": exact_match,
    "token_f1": token_f1,
    "rouge_l": rouge_l,
    "gold_recall": gold_recall,
}


def score(prediction: str, reference: str) -> Scores:
    """Every metric for one answer."""
    return Scores(**{name: METRIC_FUNCTIONS[name](prediction, reference) for name in METRICS})


def scored_metrics(*scores: Sequence[Scores]) -> list[MetricName]:
    """The metrics every one of these scores has (gold recall is absent from scores built
    without it)."""
    return [
        name
        for name in METRICS
        if all(getattr(s, name) is not None for group in scores for s in group)
    ]


def aggregate(per_question: Sequence[Scores]) -> Scores:
    """Mean of each metric over the questions (a metric some question lacks stays absent)."""
    if not per_question:
        raise ValueError("no scores to aggregate")
    return Scores(
        **{
            name: float(np.mean([s.get(name) for s in per_question]))
            for name in scored_metrics(per_question)
        }
    )


def mean_answer_words(answers: Sequence[str]) -> float:
    """Mean answer length in normalised words."""
    if not answers:
        raise ValueError("no answers to measure")
    return float(np.mean([answer_words(a) for a in answers]))


def compare(
    system: Sequence[Scores],
    other: Sequence[Scores],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[MetricName, Difference]:
    """The paired bootstrap (`docmodel.stats`, the gate's own) of every metric both have."""
    out: dict[MetricName, Difference] = {}
    for name in scored_metrics(system, other):
        iv = paired_bootstrap(
            [s.get(name) for s in system],
            [s.get(name) for s in other],
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
        out[name] = Difference(
            mean=iv.mean,
            ci_low=iv.low,
            ci_high=iv.high,
            confidence=iv.confidence,
            resamples=iv.resamples,
        )
    return out


def cost(stats: Sequence[AnswerStats], trimmed: int) -> SystemCost:
    """Mean prompt and answer tokens, and latency p50/p99, of one system's answers."""
    latencies = sorted(s.latency_s for s in stats)
    return SystemCost(
        questions=len(stats),
        mean_prompt_tokens=float(np.mean([s.prompt_tokens for s in stats])),
        mean_answer_tokens=float(np.mean([s.answer_tokens for s in stats])),
        latency_p50_s=percentile(latencies, 0.50),
        latency_p99_s=percentile(latencies, 0.99),
        prompts_trimmed=trimmed,
    )


def retrieval_recall(
    pairs: Sequence[QAPair], retrieved: Sequence[Sequence[Chunk]]
) -> dict[str, Any]:
    """Did the baseline's retriever find the passage (and the document) each answer came from."""
    with_passage = [(p, r) for p, r in zip(pairs, retrieved, strict=True) if p.chunk_id]
    found = sum(1 for p, r in with_passage if p.chunk_id in {c.id for c in r})
    documents = sum(
        1 for p, r in zip(pairs, retrieved, strict=True) if p.source in {c.source for c in r}
    )
    return {
        "retrieval_recall_at_k": found / len(with_passage) if with_passage else None,
        "retrieval_document_recall_at_k": documents / len(pairs) if pairs else None,
        "questions_with_passage": len(with_passage),
    }
