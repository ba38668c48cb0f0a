"""A retrieval candidate's parts: the RAFT example builder, the documents it is not trained on,
the gate's guard on them, and the one prompt builder that training, evaluation and serving share
(the same text for the same question and passages)."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmodel.api import EvaluationSpec
from docmodel.dataset import Chunk, QAPair
from docmodel.gate import decide
from docmodel.retrieval import (
    SYSTEM_PROMPT,
    ChatTemplateTokens,
    RetrievalIndex,
    context_messages,
    question_messages,
    read_index,
    write_index,
)
from docmodel.search import BM25Retriever
from docmodel_trainer import evaluate, raft, trainset
from docmodel_trainer.split import documents_not_trained, split_pairs

TOPICS = ["billing", "backups", "ports", "retention", "oncall", "rollouts", "invoices", "alerts"]


def corpus() -> tuple[list[Chunk], list[QAPair]]:
    chunks, pairs = [], []
    for i, topic in enumerate(TOPICS):
        for j in range(3):
            cid = f"{topic}-{j}"
            chunks.append(
                Chunk(
                    id=cid,
                    source=f"{topic}.md",
                    heading_path=[topic.title(), f"Part {j}"],
                    text=f"The {topic} setting number {j} is {100 * i + j} units for {topic}.",
                )
            )
            pairs.append(
                QAPair(
                    id=f"q-{cid}",
                    question=f"What is the {topic} setting number {j}?",
                    answer=f"{100 * i + j} units",
                    source=f"{topic}.md",
                    chunk_id=cid,
                    generator="extractive",
                )
            )
    return chunks, pairs


def test_raft_passages_are_the_retrievers_top_k_with_gold_at_the_set_rate() -> None:
    chunks, pairs = corpus()
    k = 3
    contexts = raft.build_contexts(
        pairs, BM25Retriever(chunks), top_k=k, gold_probability=1.0, seed=7
    )
    assert len(contexts) == len(pairs)
    top = BM25Retriever(chunks).retrieve([p.question for p in pairs], k + 1)
    for context, hits in zip(contexts, top, strict=True):
        gold = context.pair.chunk_id
        ids = [c.id for c in context.passages]
        assert len(ids) == k and gold in ids and context.gold_included
        distractors = [i for i in ids if i != gold]
        # Distractors are the retriever's own best non-gold passages, in its order.
        assert distractors == [c.id for c in hits if c.id != gold][: len(distractors)]
        if context.gold_retrieved:
            assert ids == [c.id for c in hits[:k]]  # the retriever's ranking, untouched

    none = raft.build_contexts(pairs, BM25Retriever(chunks), top_k=k, gold_probability=0.0, seed=7)
    assert all(not c.gold_included for c in none)
    assert all(c.pair.chunk_id not in {p.id for p in c.passages} for c in none)
    assert all(len(c.passages) == k for c in none)

    many = [
        QAPair(**{**p.model_dump(), "id": f"{p.id}-{n}"}) for n in range(20) for p in pairs
    ]  # 480 draws
    half = raft.build_contexts(many, BM25Retriever(chunks), top_k=k, gold_probability=0.5, seed=3)
    share = sum(c.gold_included for c in half) / len(half)
    assert 0.4 < share < 0.6
    again = raft.build_contexts(many, BM25Retriever(chunks), top_k=k, gold_probability=0.5, seed=3)
    assert [c.passages for c in again] == [c.passages for c in half]  # seeded


def test_gold_outside_the_top_k_replaces_the_last_passage() -> None:
    chunks, pairs = corpus()
    # A question whose words match other passages better than its own.
    pair = pairs[0].model_copy(update={"question": "What is the alerts setting number 2?"})
    (context,) = raft.build_contexts(
        [pair], BM25Retriever(chunks), top_k=2, gold_probability=1.0, seed=1
    )
    assert not context.gold_retrieved and context.gold_included
    ids = [c.id for c in context.passages]
    assert pair.chunk_id in ids and len(ids) == 2


def test_documents_kept_out_of_a_retrieval_candidates_training() -> None:
    chunks, pairs = corpus()
    docs = {c.source for c in chunks}
    out = documents_not_trained(docs, seed=5)
    assert len(out) == 2  # max(2, 10% of 8)
    assert out == documents_not_trained(docs, seed=5)
    assert len(documents_not_trained([f"d{i}.md" for i in range(40)], seed=5)) == 4
    assert documents_not_trained(["a.md", "b.md", "c.md"], seed=5) == set()  # too few

    split = split_pairs(pairs, chunks, docs, 0.25, 5, keep_documents_out=True)
    assert set(split.documents_not_trained) == out
    assert not any(p.source in out for p in split.train)
    unseen = [p for p in split.eval if p.source in out]
    assert len(unseen) == 6 and all(not p.document_trained for p in unseen)
    assert all(p.document_trained for p in split.eval if p.source not in out)
    closed = split_pairs(pairs, chunks, docs, 0.25, 5)
    assert closed.documents_not_trained == [] and all(p.document_trained for p in closed.eval)


def test_gate_rejects_a_candidate_that_stopped_reading() -> None:
    policy = EvaluationSpec(min_improvement=0.0, min_questions=10, max_questions=200)
    # Far better on 40 trained-document questions, far worse on the 10 it had to read.
    candidate = [1.0] * 40 + [0.0] * 10
    baseline = [0.0] * 40 + [1.0] * 10
    untrained = list(range(40, 50))
    decision = decide(candidate, baseline, None, policy, untrained=untrained)
    assert not decision.promoted and decision.reason == "StoppedReading"
    assert "10 questions about documents it was not trained on" in decision.message
    assert decide(candidate, baseline, None, policy).reason == "BeatBaseline"
    reading = [1.0] * 50
    assert decide(reading, baseline, None, policy, untrained=untrained).promoted


def test_index_round_trip_and_a_broken_index_names_the_file(tmp_path: Path) -> None:
    chunks, _ = corpus()
    index = RetrievalIndex(
        retriever="BM25", top_k=3, passages=len(chunks), documents_not_trained=["alerts.md"]
    )
    write_index(tmp_path, index, chunks)
    loaded = read_index(tmp_path)
    assert loaded is not None and loaded[0] == index and loaded[1] == chunks
    assert read_index(tmp_path / "nowhere") is None
    (tmp_path / "passages.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"passages\.jsonl: 0 passages"):
        read_index(tmp_path)


def test_training_evaluation_and_serving_give_the_model_the_same_text(tmp_path: Path) -> None:
    """For one question and its retrieved passages: the trained example's prompt, the
    evaluation prompt of a retrieval candidate and the server's messages are one text."""
    from docmodel_server.context import RequestContext
    from docmodel_trainer.tinymodel import build_tokenizer

    tokenizer = build_tokenizer()
    chunks, pairs = corpus()
    pair, k = pairs[4], 3
    (hits,) = BM25Retriever(chunks).retrieve([pair.question], k)
    expected = context_messages(pair.question, hits)

    # Training: the example's prompt is the chat template of the core's messages.
    example = trainset.context_example(
        tokenizer, raft.RaftContext(pair, tuple(hits), True, True), max_seq_length=2048
    )
    prompt_len = next(i for i, label in enumerate(example.labels) if label != trainset.IGNORE)
    rendered = tokenizer.apply_chat_template(expected, add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(list(example.input_ids[:prompt_len])) == rendered

    # Evaluation: a retrieval candidate gets the baseline's very prompt.
    prompts = evaluate.system_prompts(
        tokenizer, [pair.question], [hits], 2048, {"candidate": "Retrieval"}
    )
    assert prompts["candidate"][1] == [expected] == prompts["baseline"][1]
    closed = evaluate.system_prompts(
        tokenizer, [pair.question], [hits], 2048, {"candidate": "ClosedBook"}
    )
    assert closed["candidate"][1] == [question_messages(pair.question)]
    assert closed["candidate"][1] == closed["base"][1]
    assert expected[0] == {"role": "system", "content": SYSTEM_PROMPT}

    # Serving: the last user message is replaced, earlier turns kept as sent; a client that
    # sends no system message gets the one the revision was trained and judged with.
    write_index(tmp_path, RetrievalIndex(retriever="BM25", top_k=k, passages=len(chunks)), chunks)
    log = tmp_path / "prompts.jsonl"
    context = RequestContext.load(tmp_path, tokenizer, 2048, log)
    bare = [{"role": "user", "content": pair.question}]
    assert context.messages("r0", "handbook", bare, adapter=True, max_tokens=32) == expected
    sent = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": pair.question},
    ]
    served = context.messages("r1", "handbook", sent, adapter=True, max_tokens=32)
    assert served == [sent[0], expected[-1]]
    assert ChatTemplateTokens(tokenizer).prompt_tokens(served) < 2048
    # The base model's name is served as sent.
    assert context.messages("r2", "base", sent, adapter=False, max_tokens=32) == sent
    import json

    records = [json.loads(line) for line in log.read_text().splitlines()][1:]
    assert records[0]["messages"] == served and records[0]["passages"] == [c.id for c in hits]
    assert records[1]["passages"] == []


def test_a_closed_book_question_reaches_the_model_as_the_same_ids_everywhere() -> None:
    """Training's closed-book example, the evaluation prompt of the base model and of a
    closed-book candidate, and a served closed-book revision's prompt are one token sequence:
    the core's system message, then the question, in the model's chat template."""
    from docmodel_server.context import RequestContext
    from docmodel_server.engine import LocalEngine
    from docmodel_trainer.generation import prompt_ids
    from docmodel_trainer.tinymodel import build_tokenizer

    tokenizer = build_tokenizer()
    _, pairs = corpus()
    pair = pairs[0]

    example = trainset.qa_example(tokenizer, pair)
    prompt_len = next(i for i, label in enumerate(example.labels) if label != trainset.IGNORE)
    trained = list(example.input_ids[:prompt_len])

    prompts = evaluate.system_prompts(
        tokenizer, [pair.question], [[]], 2048, {"candidate": "ClosedBook"}
    )
    (judged,) = prompt_ids(tokenizer, prompts["candidate"][1])
    (base,) = prompt_ids(tokenizer, prompts["base"][1])

    context = RequestContext(None, 2048)  # a closed-book revision: no passage index
    messages = context.messages(
        "r1", "handbook", [{"role": "user", "content": pair.question}], adapter=True, max_tokens=32
    )
    served = LocalEngine(object(), tokenizer, 2048).chat_prompt(messages)
    assert trained == judged == base == served
    assert SYSTEM_PROMPT in tokenizer.decode(served)
