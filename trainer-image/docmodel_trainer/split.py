"""Train/eval split by source document, and question de-duplication.

The split is by whole document: a document's passages and questions are all train or all
eval. Each document's place is decided by a seeded hash of its key, so the same seed gives the
same split, and adding a document moves few others. With two or more candidate documents at
least one (and at most all but one) is held out.

Questions are compared by normalised text (case, punctuation and spacing ignored): duplicates
within a split are dropped, and an eval question that train also asks is dropped from eval.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

from docmodel.dataset import QAPair
from docmodel_trainer.chunking import normalise

TRAIN, EVAL = "train", "eval"


def split_documents(sources: Iterable[str], eval_fraction: float, seed: int) -> dict[str, str]:
    """Map each source key to train or eval."""
    keys = sorted(set(sources))
    if len(keys) < 2:
        return dict.fromkeys(keys, TRAIN)
    n_eval = min(len(keys) - 1, max(1, math.floor(len(keys) * eval_fraction + 0.5)))
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\x1f{k}".encode()).hexdigest())
    held_out = set(ranked[:n_eval])
    return {k: EVAL if k in held_out else TRAIN for k in keys}


def cap_pairs(pairs: Iterable[QAPair], cap: int, seed: int) -> tuple[list[QAPair], dict[str, int]]:
    """At most `cap` pairs per source document, chosen by a seeded hash of each pair (so the
    same seed keeps the same pairs, and adding pairs to a document moves few others), in their
    original order; and how many each capped document lost."""
    pairs = list(pairs)
    by_source: dict[str, list[int]] = {}
    for i, pair in enumerate(pairs):
        by_source.setdefault(pair.source or "", []).append(i)
    keep: set[int] = set()
    dropped: dict[str, int] = {}
    for source, indices in by_source.items():
        if len(indices) <= cap:
            keep.update(indices)
            continue
        ranked = sorted(
            indices,
            key=lambda i: hashlib.sha256(
                f"{seed}\x1f{source}\x1f{normalise(pairs[i].question)}\x1f{i}".encode()
            ).hexdigest(),
        )
        keep.update(ranked[:cap])
        dropped[source] = len(indices) - cap
    return [p for i, p in enumerate(pairs) if i in keep], dropped


def pair_id(source: str, question: str) -> str:
    return hashlib.sha256(f"{source}\x1f{normalise(question)}".encode()).hexdigest()[:16]


def deduplicate_pairs(
    pairs: Iterable[QAPair], splits: dict[str, str]
) -> tuple[list[QAPair], list[QAPair], int]:
    """(train, eval, removed): pairs routed by their source's split, near-duplicates removed.

    A pair whose source has no split (a provided pair that names no known document) goes to
    train: it cannot be shown to be unseen, so it never becomes an eval question.
    """
    train: dict[str, QAPair] = {}
    evals: list[QAPair] = []
    removed = 0
    for pair in pairs:
        key = normalise(pair.question)
        if not key:
            removed += 1
            continue
        if splits.get(pair.source) == EVAL:
            evals.append(pair)
        elif key in train:
            removed += 1
        else:
            train[key] = pair
    eval_kept: dict[str, QAPair] = {}
    for pair in evals:
        key = normalise(pair.question)
        if key in train or key in eval_kept:
            removed += 1
        else:
            eval_kept[key] = pair
    return list(train.values()), list(eval_kept.values()), removed
