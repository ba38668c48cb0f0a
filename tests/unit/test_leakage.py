"""Leakage checks: planted duplicates and light rewordings are caught at the documented
thresholds; unrelated questions are kept with their figures recorded."""

from __future__ import annotations

from docmodel.dataset import QAPair
from docmodel_trainer import leakage


def qa(pid: str, question: str, answer: str) -> QAPair:
    return QAPair(id=pid, question=question, answer=answer, source="d.md", generator="teacher")


TRAIN = [
    qa("t1", "What is the default retention period for audit logs?", "90 days"),
    qa("t2", "Which team owns the invoice service?", "The billing platform team"),
    qa("t3", "What port does the metrics exporter listen on?", "9102"),
    qa("t4", "Who approves production access requests?", "The on-call lead"),
]


def test_exact_duplicate_is_dropped():
    result = leakage.check(
        TRAIN, [qa("e1", "What is the default retention period for audit logs", "90 days.")]
    )
    assert result.kept == []
    assert result.dropped[0]["check"] == "exact_duplicate"
    assert result.dropped[0]["nearest_train_id"] == "t1"


def test_long_shared_word_sequence_is_caught_by_ngram_overlap():
    item = qa("e1", "So, which team owns the invoice service?", "The billing platform team")
    result = leakage.check(TRAIN, [item])
    assert [d["check"] for d in result.dropped] == ["ngram_overlap"]
    assert result.dropped[0]["ngram_overlap"] > leakage.NGRAM_THRESHOLD


def test_light_rewording_is_caught_by_similarity():
    # Words reordered: few shared 6-grams, the same words.
    item = qa("e1", "For audit logs, what is the period of retention by default?", "90 days")
    result = leakage.check(TRAIN, [item])
    assert [d["check"] for d in result.dropped] == ["similarity"]
    assert result.dropped[0]["similarity"] >= leakage.SIMILARITY_THRESHOLD
    assert result.dropped[0]["ngram_overlap"] <= leakage.NGRAM_THRESHOLD


def test_unrelated_questions_are_kept_with_their_figures():
    items = [
        qa("e1", "How many replicas does the search cluster run?", "Three"),
        qa("e2", "What is the escalation phone number?", "555-0100"),
    ]
    result = leakage.check(TRAIN, items)
    assert [p.id for p in result.kept] == ["e1", "e2"]
    for p in result.kept:
        assert (
            p.max_train_similarity is not None
            and p.max_train_similarity < leakage.SIMILARITY_THRESHOLD
        )
        assert p.max_train_ngram_overlap == 0.0
    figures = result.figures()
    assert figures["eval_items_checked"] == 2 and figures["eval_items_dropped_for_leakage"] == 0
    assert figures["kept_max_similarity"] == max(p.max_train_similarity for p in result.kept)


def test_paraphrase_from_another_passage_is_not_caught():
    # The documented blind spot: the same fact in other words shares too few words.
    item = qa("e1", "How long are audit records kept?", "Ninety days")
    assert [p.id for p in leakage.check(TRAIN, [item]).kept] == ["e1"]


def test_similarity_is_one_for_identical_text_and_zero_for_disjoint():
    sims = leakage.max_similarity(
        ["alpha beta gamma", "delta epsilon"], ["alpha beta gamma", "zeta"]
    )
    assert abs(sims[0][0] - 1.0) < 1e-9 and sims[0][1] == 0
    assert sims[1] == (0.0, -1)
