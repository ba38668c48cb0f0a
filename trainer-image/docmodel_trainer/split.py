"""Train/eval split of the question/answer pairs by question group, and the per-document cap.

Every document's text is trained on (see `trainset`); what is held out is questions. Pairs are
grouped by the document they came from or, when fewer than `SECTION_GROUPING_BELOW` documents
have pairs, by the section (document and heading path of the passage they came from), so a
small corpus still yields several groups. A seeded hash of each group's key decides which
groups are held out, so the same seed gives the same split and adding a group moves few others;
with two or more groups at least one (and at most all but one) is held out.

Then, in order:
- a pair with no question text is dropped;
- a pair whose source is not a known document goes to train: it cannot be shown unseen;
- duplicates by normalised question (case, punctuation and spacing ignored) are dropped within
  train; an eval question that train also asks, or that eval already has, is dropped from eval;
- a train pair whose passage an eval answer comes from is dropped, so the passage an eval item
  is about is trained on only as text, never through a question about it.
The leakage checks (`leakage`) run after this on what is left.

A retrieval candidate (`training.candidate.kind: Retrieval`) also keeps whole documents out of
training (`documents_not_trained`: max(2, 10%) of the documents with pairs, by a seeded hash):
their passages stay in the retrieval index, every question about them is held out, and they are
never trained on, so the evaluation can show whether the candidate still reads its context.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from docmodel.dataset import Chunk, QAPair
from docmodel_trainer.chunking import normalise

TRAIN, EVAL = "train", "eval"
SECTION_GROUPING_BELOW = 10


@dataclass
class Split:
    train: list[QAPair]
    eval: list[QAPair]
    grouping: str  # document | section
    train_groups: int
    eval_groups: int
    duplicates_removed: int
    train_dropped_same_passage: int
    documents_not_trained: list[str]

    @property
    def eval_documents(self) -> int:
        return len({p.source for p in self.eval})


def hold_out(keys: Iterable[str], eval_fraction: float, seed: int) -> set[str]:
    """The keys held out: a seeded choice of round(n x fraction), at least 1, at most n - 1."""
    keys = sorted(set(keys))
    if len(keys) < 2:
        return set()
    n_eval = min(len(keys) - 1, max(1, math.floor(len(keys) * eval_fraction + 0.5)))
    ranked = sorted(keys, key=lambda k: hashlib.sha256(f"{seed}\x1f{k}".encode()).hexdigest())
    return set(ranked[:n_eval])


UNTRAINED_FRACTION, MIN_UNTRAINED = 0.1, 2


def documents_not_trained(documents: Iterable[str], seed: int) -> set[str]:
    """The documents a retrieval candidate is never trained on: max(2, 10%) of `documents`,
    by a seeded hash; none when that would leave fewer than two to train on."""
    keys = sorted(set(documents))
    n = max(MIN_UNTRAINED, math.floor(len(keys) * UNTRAINED_FRACTION + 0.5))
    if len(keys) - n < 2:
        return set()
    ranked = sorted(
        keys, key=lambda k: hashlib.sha256(f"{seed}\x1funtrained\x1f{k}".encode()).hexdigest()
    )
    return set(ranked[:n])


def split_pairs(
    pairs: Sequence[QAPair],
    chunks: Sequence[Chunk],
    documents: Iterable[str],
    eval_fraction: float,
    seed: int,
    *,
    keep_documents_out: bool = False,
) -> Split:
    """Split `pairs` (see the module docstring); `documents` are the parsed source keys.
    With `keep_documents_out` (retrieval candidates), some documents are not trained at all."""
    known = set(documents)
    sections = {c.id: (c.source, tuple(c.heading_path)) for c in chunks}
    usable = [p for p in pairs if normalise(p.question)]
    removed = len(pairs) - len(usable)
    untrained = (
        documents_not_trained({p.source for p in usable if p.source in known}, seed)
        if keep_documents_out
        else set()
    )
    with_pairs = {p.source for p in usable if p.source in known and p.source not in untrained}
    grouping = "document" if len(with_pairs) >= SECTION_GROUPING_BELOW else "section"

    def group(pair: QAPair) -> str:
        if grouping == "section" and pair.chunk_id in sections:
            source, path = sections[pair.chunk_id]
            return "\x1f".join([source, *path])
        return pair.source

    groups = {group(p) for p in usable if p.source in known and p.source not in untrained}
    held = hold_out(groups, eval_fraction, seed)

    train: dict[str, QAPair] = {}
    evals: list[QAPair] = []
    for pair in usable:
        key = normalise(pair.question)
        if pair.source in untrained:
            evals.append(pair.model_copy(update={"document_trained": False}))
        elif pair.source in known and group(pair) in held:
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
    eval_passages = {p.chunk_id for p in eval_kept.values() if p.chunk_id}
    kept_train = [p for p in train.values() if p.chunk_id not in eval_passages]
    return Split(
        train=kept_train,
        eval=list(eval_kept.values()),
        grouping=grouping,
        train_groups=len(groups - held),
        eval_groups=len(held),
        duplicates_removed=removed,
        train_dropped_same_passage=len(train) - len(kept_train),
        documents_not_trained=sorted(untrained),
    )


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
