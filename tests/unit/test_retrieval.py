"""The BM25 retriever and the prompts of the three systems."""

from __future__ import annotations

from docmodel.dataset import Chunk
from docmodel_trainer.retrieval import BM25Retriever, question_messages, rag_messages

CHUNKS = [
    Chunk(
        id="c1",
        source="ops/ports.md",
        heading_path=["Ports"],
        text="The billing service listens on port 8101.",
        split="train",
    ),
    Chunk(
        id="c2",
        source="data/retention.md",
        heading_path=["Retention"],
        text="Audit logs are retained for seven years.",
        split="eval",
    ),
    Chunk(
        id="c3",
        source="ops/backups.md",
        heading_path=["Backups", "Schedule"],
        text="Database backups run nightly at 02:00 UTC.",
        split="train",
    ),
]


def test_ranks_the_matching_passage_first() -> None:
    retriever = BM25Retriever(CHUNKS)
    results = retriever.retrieve(
        [
            "Which port does billing listen on?",
            "How long are audit logs retained?",
            "When do backups run?",
        ],
        k=2,
    )
    assert [r[0].id for r in results] == ["c1", "c2", "c3"]
    assert all(len(r) <= 2 for r in results)


def test_headings_are_searchable_and_k_is_capped() -> None:
    retriever = BM25Retriever(CHUNKS)
    (hits,) = retriever.retrieve(["schedule"], k=50)
    assert [c.id for c in hits] == ["c3"]  # only positive scores are returned


def test_stop_word_or_unknown_queries_retrieve_nothing() -> None:
    retriever = BM25Retriever(CHUNKS)
    assert retriever.retrieve(["the of and", "zebra quokka"], k=3) == [[], []]


def test_prompts() -> None:
    assert question_messages("Q?") == [{"role": "user", "content": "Q?"}]
    (message,) = rag_messages("Which port?", CHUNKS[:1])
    assert message["role"] == "user"
    content = message["content"]
    assert "Passage 1 [ops/ports.md (Ports)]" in content
    assert "port 8101" in content and content.endswith("Question: Which port?")
    (empty,) = rag_messages("Which port?", [])
    assert "no passage matched" in empty["content"]
