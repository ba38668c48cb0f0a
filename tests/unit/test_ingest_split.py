"""Train/eval split by document, and question de-duplication."""

from __future__ import annotations

import pytest

from docmodel.dataset import QAPair
from docmodel_trainer.split import deduplicate_pairs, split_documents


def pair(question: str, source: str) -> QAPair:
    return QAPair(id=question, question=question, answer="a", source=source, generator="extractive")


def test_split_is_deterministic_and_depends_on_the_seed():
    docs = [f"doc{i}.md" for i in range(20)]
    first = split_documents(docs, 0.2, seed=7)
    assert first == split_documents(reversed(docs), 0.2, seed=7)
    assert sum(v == "eval" for v in first.values()) == 4
    assert any(split_documents(docs, 0.2, seed=s) != first for s in range(8, 12))


@pytest.mark.parametrize(
    ("n", "fraction", "expected"), [(1, 0.5, 0), (2, 0.01, 1), (3, 0.5, 2), (10, 0.25, 3)]
)
def test_at_least_one_and_at_most_all_but_one_document_is_held_out(n, fraction, expected):
    splits = split_documents([f"d{i}" for i in range(n)], fraction, seed=1)
    assert sum(v == "eval" for v in splits.values()) == expected


def test_adding_a_document_moves_no_other_document_to_eval():
    docs = [f"doc{i}.md" for i in range(30)]
    before = split_documents(docs, 0.2, seed=3)
    after = split_documents([*docs, "new.md"], 0.2, seed=3)
    moved = [d for d in docs if before[d] == "train" and after[d] == "eval"]
    assert len(moved) <= 1


def test_pairs_follow_their_document_and_near_duplicates_are_removed():
    splits = {"a.md": "train", "b.md": "eval"}
    pairs = [
        pair("What is the SLA?", "a.md"),
        pair("what is the  SLA", "a.md"),  # duplicate within train
        pair("What is the SLA ?", "b.md"),  # eval question train already asks
        pair("Who owns billing?", "b.md"),
        pair("Who owns billing?!", "b.md"),  # duplicate within eval
        pair("Where is the FAQ?", "unknown.md"),  # no known document: train only
    ]
    train, evals, removed = deduplicate_pairs(pairs, splits)
    assert [p.question for p in train] == ["What is the SLA?", "Where is the FAQ?"]
    assert [p.question for p in evals] == ["Who owns billing?"]
    assert removed == 3
