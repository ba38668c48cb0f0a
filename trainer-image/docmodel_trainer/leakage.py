"""Leakage checks between held-out (eval) and training question/answer pairs.

Each eval item (its normalised question + answer) is measured against every train item, and
dropped when it is over a threshold; the figures go into `eval.jsonl`, the dataset manifest and
the evaluation report.

- Provenance: every pair names the passage it came from; `split` already keeps train pairs off
  the passage of an eval answer (same-passage paraphrases are caught there).
- Exact duplicates: the same normalised question + answer in train (similarity 1.0).
- Word n-gram overlap (`NGRAM_N`-grams, as lm-eval-harness's decontamination, with a short n
  because these items are short): the share of the eval item's n-grams that occur in some train
  item. Over `NGRAM_THRESHOLD` the item is dropped: most of its wording was trained on.
- Lexical similarity: TF-IDF cosine (unigrams, sublinear tf, smoothed idf, fitted on train and
  eval together), the largest over train items. At or over `SIMILARITY_THRESHOLD` the item is
  dropped: a light rewording of a train item (words reordered, a few swapped).

What these checks cannot catch: the same fact asked about in other words from another
passage (a glossary entry and the configuration page it summarises, say, with a train question
"How long are logs kept?" and an eval question "What is the log retention period?"). Provenance
differs, and the shared words are too few for n-grams or TF-IDF (the LMSYS "Rethinking
Benchmark and Contamination" paraphrases); finding those needs a semantic model.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from docmodel.dataset import QAPair
from docmodel_trainer.chunking import normalise

NGRAM_N = 6
NGRAM_THRESHOLD = 0.5
SIMILARITY_THRESHOLD = 0.8


def item_text(pair: QAPair) -> str:
    return normalise(f"{pair.question} {pair.answer}")


def ngrams(words: Sequence[str], n: int = NGRAM_N) -> set[tuple[str, ...]]:
    """The item's word n-grams; an item shorter than n is one n-gram (its whole text)."""
    if len(words) < n:
        return {tuple(words)} if words else set()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def ngram_overlap(evals: Sequence[str], train: Sequence[str], n: int = NGRAM_N) -> list[float]:
    """For each eval text, the share of its n-grams found in any train text."""
    seen: set[tuple[str, ...]] = set()
    for text in train:
        seen |= ngrams(text.split(), n)
    out = []
    for text in evals:
        grams = ngrams(text.split(), n)
        out.append(len(grams & seen) / len(grams) if grams else 0.0)
    return out


def max_similarity(evals: Sequence[str], train: Sequence[str]) -> list[tuple[float, int]]:
    """For each eval text, the largest TF-IDF cosine to a train text and that text's index
    (-1 when train is empty)."""
    docs = [Counter(t.split()) for t in [*train, *evals]]
    df: Counter[str] = Counter()
    for d in docs:
        df.update(d.keys())
    total = len(docs)
    idf = {w: math.log((1 + total) / (1 + c)) + 1.0 for w, c in df.items()}

    def vector(counts: Counter[str]) -> dict[str, float]:
        v = {w: (1.0 + math.log(c)) * idf[w] for w, c in counts.items()}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {w: x / norm for w, x in v.items()}

    train_vectors = [vector(d) for d in docs[: len(train)]]
    postings: dict[str, list[tuple[int, float]]] = {}
    for i, v in enumerate(train_vectors):
        for w, x in v.items():
            postings.setdefault(w, []).append((i, x))
    out = []
    for counts in docs[len(train) :]:
        scores: dict[int, float] = {}
        for w, x in vector(counts).items():
            for i, y in postings.get(w, ()):
                scores[i] = scores.get(i, 0.0) + x * y
        best = max(scores.items(), key=lambda kv: (kv[1], -kv[0]), default=(-1, 0.0))
        out.append((min(best[1], 1.0), best[0]))
    return out


@dataclass
class LeakageResult:
    kept: list[QAPair]
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        by_check = Counter(d["check"] for d in self.dropped)
        sims = [p.max_train_similarity or 0.0 for p in self.kept]
        overlaps = [p.max_train_ngram_overlap or 0.0 for p in self.kept]
        return {
            "ngram_n": NGRAM_N,
            "ngram_threshold": NGRAM_THRESHOLD,
            "similarity_threshold": SIMILARITY_THRESHOLD,
            "eval_items_checked": len(self.kept) + len(self.dropped),
            "eval_items_dropped_for_leakage": len(self.dropped),
            "dropped_by_check": dict(sorted(by_check.items())),
            "dropped": self.dropped,
            "kept_max_similarity": max(sims, default=0.0),
            "kept_mean_similarity": sum(sims) / len(sims) if sims else 0.0,
            "kept_max_ngram_overlap": max(overlaps, default=0.0),
        }


def check(train: Sequence[QAPair], evals: Sequence[QAPair]) -> LeakageResult:
    """Measure every eval item against train; drop those over a threshold (see the module)."""
    train_texts = [item_text(p) for p in train]
    eval_texts = [item_text(p) for p in evals]
    overlaps = ngram_overlap(eval_texts, train_texts)
    similarities = max_similarity(eval_texts, train_texts)
    exact = set(train_texts)
    result = LeakageResult(kept=[])
    for pair, text, overlap, (sim, nearest) in zip(
        evals, eval_texts, overlaps, similarities, strict=True
    ):
        measured = pair.model_copy(
            update={
                "max_train_similarity": round(sim, 4),
                "max_train_ngram_overlap": round(overlap, 4),
            }
        )
        reason = (
            "exact_duplicate"
            if text in exact
            else "ngram_overlap"
            if overlap > NGRAM_THRESHOLD
            else "similarity"
            if sim >= SIMILARITY_THRESHOLD
            else None
        )
        if reason is None:
            result.kept.append(measured)
            continue
        result.dropped.append(
            {
                "id": pair.id,
                "check": reason,
                "similarity": round(sim, 4),
                "ngram_overlap": round(overlap, 4),
                "nearest_train_id": train[nearest].id if nearest >= 0 else None,
            }
        )
    return result
