"""The BM25 retriever and the one prompt builder (core): what training, evaluation and serving
all put in front of the model."""

from __future__ import annotations

from docmodel.dataset import Chunk
from docmodel.retrieval import (
    SYSTEM_PROMPT,
    ChatTemplateTokens,
    context_messages,
    fit_context_messages,
    question_messages,
    with_system,
)
from docmodel.search import BM25Retriever

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
    system = {"role": "system", "content": SYSTEM_PROMPT}
    assert question_messages("Q?") == [system, {"role": "user", "content": "Q?"}]
    first, message = context_messages("Which port?", CHUNKS[:1])
    assert first == system  # every system gets the same instruction
    assert message["role"] == "user"
    content = message["content"]
    assert "Passage 1 [ops/ports.md (Ports)]" in content
    assert "port 8101" in content and content.endswith("Question: Which port?")
    _, empty = context_messages("Which port?", [])
    assert "no passage matched" in empty["content"]


def test_a_clients_own_system_message_is_kept() -> None:
    sent = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q?"}]
    assert with_system(sent) == sent
    assert with_system(sent[1:]) == [{"role": "system", "content": SYSTEM_PROMPT}, sent[1]]


def test_baseline_prompt_is_trimmed_to_the_budget_best_passage_first() -> None:
    from docmodel.retrieval import MIN_TRIMMED_TOKENS
    from docmodel_trainer.tinymodel import build_tokenizer

    counter = ChatTemplateTokens(build_tokenizer())
    prompt_tokens = lambda messages: counter.prompt_tokens(messages)  # noqa: E731
    long = Chunk(id="big", source="big.md", text=" ".join(["Freight moves by rail."] * 80))
    passages = [CHUNKS[0], long, CHUNKS[2]]
    question = "Which port does billing listen on?"
    whole, trimmed = fit_context_messages(counter, question, passages, 10_000)
    assert not trimmed and whole == context_messages(question, passages)

    full = prompt_tokens(whole)
    budget = full - 100
    fitted, trimmed = fit_context_messages(counter, question, passages, budget)
    content = fitted[-1]["content"]
    assert trimmed and prompt_tokens(fitted) <= budget
    assert CHUNKS[0].text in content  # the best passage whole
    assert "Passage 2 [big.md]" in content and CHUNKS[2].text not in content  # cut, rest left out
    assert content.endswith(f"Question: {question}")  # the question is never cut

    # No room for even a short piece of the second passage: it is left out, not cut to nothing.
    tight = prompt_tokens(context_messages(question, passages[:1])) + MIN_TRIMMED_TOKENS // 2
    fitted, trimmed = fit_context_messages(counter, question, passages, tight)
    assert trimmed and "Passage 2" not in fitted[-1]["content"]


def test_equal_scores_rank_in_corpus_order() -> None:
    chunks = [
        Chunk(id=f"c{i}", source=f"doc{i}.md", heading_path=["Payments"], title="T", text=text)
        for i, text in enumerate(
            ["Invoices are generated monthly.", "Unrelated text about lunch."]
            + ["Invoices are generated monthly."] * 4
        )
    ]
    for _ in range(5):
        (hits,) = BM25Retriever(chunks).retrieve(["How often are invoices generated?"], 3)
        assert [c.id for c in hits] == ["c0", "c2", "c3"]
    (hits,) = BM25Retriever(list(reversed(chunks))).retrieve(["invoices generated"], 2)
    assert [c.id for c in hits] == ["c5", "c4"]
