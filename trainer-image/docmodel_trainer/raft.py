"""Retrieval training examples for a retrieval candidate (RAFT: Zhang et al. 2024, "Adapting
Language Model to Domain Specific RAG").

For every training question, the passages are the production retriever's own top-k for that
question (the same retriever, BM25, Dense or Hybrid, and k as the baseline and the server, over
the passages that may be trained on), so the distractors are the hard ones the model will meet when serving. With
probability `gold_probability` (a seeded draw per question) the passage the answer comes from
is among them: where the retriever ranked it in the top-k it stays where it was; otherwise it
replaces the last one, at a seeded position. In the other examples it is taken out and the next
passage fills in, so the model also learns to answer from its weights when retrieval misses.
The answer is the pair's answer, which comes from (is grounded in) the gold passage.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

from docmodel.dataset import Chunk, QAPair
from docmodel.search import Retriever


@dataclass(frozen=True)
class RaftContext:
    pair: QAPair
    passages: tuple[Chunk, ...]
    gold_included: bool
    gold_retrieved: bool  # the retriever itself ranked the gold passage in its top-k


def _draw(seed: int, pair: QAPair) -> random.Random:
    digest = hashlib.sha256(f"{seed}\x1fraft\x1f{pair.id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def build_contexts(
    pairs: Sequence[QAPair],
    retriever: Retriever[Chunk],
    *,
    top_k: int,
    gold_probability: float,
    seed: int,
) -> list[RaftContext]:
    """One context per pair that has a gold passage among the retriever's passages (pairs
    whose passage is not trainable are left out). The retriever searches the passages
    training may show: a retrieval candidate's untrained documents are not among them."""
    chunks = retriever.chunks
    if not chunks:
        return []
    by_id = {c.id: c for c in chunks}
    usable = [p for p in pairs if p.chunk_id in by_id]
    if not usable:
        return []
    ranked = retriever.retrieve([p.question for p in usable], min(top_k + 1, len(chunks)))
    out = []
    for pair, hits in zip(usable, ranked, strict=True):
        gold = by_id[pair.chunk_id or ""]
        rng = _draw(seed, pair)
        with_gold = rng.random() < gold_probability
        retrieved = any(c.id == gold.id for c in hits[:top_k])
        others = [c for c in hits if c.id != gold.id]
        if with_gold:
            if retrieved:
                passages = list(hits[:top_k])
            else:
                passages = others[: top_k - 1]
                passages.insert(rng.randrange(len(passages) + 1), gold)
        else:
            passages = others[:top_k]
        out.append(RaftContext(pair, tuple(passages), with_gold, retrieved))
    return out
