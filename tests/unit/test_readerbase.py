"""The reader base model's training data: every question answerable from exactly one passage,
held-out names never seen in training, the product's own prompt, and labels on answers only."""

from __future__ import annotations

import random

import pytest

from docmodel.retrieval import context_messages
from docmodel_trainer import readerbase as rb
from docmodel_trainer.metrics import normalize_answer


def _training_examples(count: int, passages: int = 4) -> list[rb.Example]:
    world = rb.World(random.Random("test-train"), heldout=False)
    stage = rb.stage_at(1.0, 0.5)
    return [rb.make_example(world, passages, stage) for _ in range(count)]


def test_the_gold_passage_holds_the_answer_and_no_distractor_answers_the_question() -> None:
    examples = _training_examples(150)
    assert {len(ex.passages) for ex in examples} == {4}
    for ex in examples:
        gold = ex.passages[ex.gold]
        assert normalize_answer(ex.answer) in normalize_answer(gold.text), (ex.question, gold)
        headings = [tuple(p.heading_path) for p in ex.passages]
        assert headings.count(tuple(gold.heading_path)) == 1, ex.question


def test_follow_up_questions_have_distinct_answers_each_found_in_a_passage() -> None:
    for ex in _training_examples(100):
        answers = [normalize_answer(ex.answer), *(normalize_answer(q.answer) for q in ex.more)]
        assert len(answers) == len(set(answers)), answers
        texts = [normalize_answer(p.text) for p in ex.passages]
        for qa in ex.more:
            assert any(normalize_answer(qa.answer) in text for text in texts), qa


def test_heldout_entities_never_appear_in_training_text() -> None:
    heldout = rb.heldout_examples(seed=0, count=40, passages=4)
    train = _training_examples(200)
    train_words = {w for ex in train for p in ex.passages for w in p.text.lower().split()}
    for ex in heldout:
        name = ex.passages[ex.gold].title.split()[0].lower()
        assert rb._heldout_word(name), name
        assert name not in train_words, name
    assert not any(
        rb._heldout_word(w) for w in {ex.passages[ex.gold].title.split()[0].lower() for ex in train}
    )


def test_the_prompt_is_the_products_prompt() -> None:
    ex = _training_examples(1)[0]
    assert rb.prompt_messages(ex) == context_messages(ex.question, ex.passages)


@pytest.fixture(scope="module")
def tokenizer():
    return rb.build_reader_tokenizer(seed=0, vocab_size=600, documents=120)


def test_labels_cover_the_answers_and_their_end_tokens_only(tokenizer) -> None:
    ex = next(e for e in _training_examples(20) if len(e.more) >= 2)
    ids, labels = rb.encode_chat(tokenizer, ex, follow_ups=2)
    assert len(ids) == len(labels)
    learned = [tok for tok, label in zip(ids, labels, strict=True) if label != rb.IGNORE]
    assert learned == [label for label in labels if label != rb.IGNORE]
    text = tokenizer.decode(learned)
    eot = "<|eot_id|>"
    assert text.count(eot) == 3
    replies = [part.strip() for part in text.split(eot) if part.strip()]
    assert replies == [ex.answer, ex.more[0].answer, ex.more[1].answer]
    prompt = tokenizer.apply_chat_template(
        rb.prompt_messages(ex), add_generation_prompt=True, tokenize=False
    )
    assert tokenizer.decode(ids).startswith(prompt)


def test_the_tokenizer_reads_any_text(tokenizer) -> None:
    text = "Zürich: 12 ms (p99) — 日本"
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_copy_and_recall_sequences_learn_only_what_can_be_found_earlier(tokenizer) -> None:
    batcher = rb._Batcher(tokenizer, rb.Recipe())
    for ids, labels, kind in batcher.induction(sequences=4, span=8):
        assert kind == "copy" and len(ids) == len(labels) == 17
        assert ids[1:9] == ids[9:] and labels[10:] == ids[10:]
        assert set(labels[:10]) == {rb.IGNORE}  # the first repeated token cannot be known
    for _ in range(40):
        ids, labels = batcher._copy_or_recall()
        assert len(ids) == len(labels) and ids[0] == tokenizer.bos_token_id
        for i, label in enumerate(labels):
            if label == rb.IGNORE:
                continue
            assert label == ids[i]
            # What is learned follows, somewhere earlier, the token before it.
            before = ids[i - 1]
            assert any(ids[j] == before and ids[j + 1] == label for j in range(i - 1)), (i, ids)
    assert batcher.counts["copy"] > 0 and batcher.counts["recall"] > 0
    assert all(t >= len(rb.SPECIAL_TOKENS) for t in ids[1:])
