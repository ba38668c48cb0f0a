"""The training data: QA with loss on answers only, every passage as text (in windows when
long), the questions-first order, and the record of what the trainer's batches held."""

from __future__ import annotations

import itertools

import pytest
import torch

from docmodel.dataset import Chunk, QAPair, Rewrite
from docmodel.retrieval import question_messages
from docmodel_trainer import trainset
from docmodel_trainer.tinymodel import build_tokenizer

PAIRS = [
    QAPair(id=f"p{i}", question=q, answer=a, source="ops.md", chunk_id="c1", generator="provided")
    for i, (q, a) in enumerate(
        [
            ("Which port does billing use?", "Port 8101."),
            ("How long are logs kept?", "Thirty days."),
            ("Who owns the search service?", "Bruno."),
        ]
    )
]
CHUNKS = [
    Chunk(
        id="c1",
        source="ops.md",
        title="Ops",
        heading_path=["Ops", "Ports"],
        text="Billing uses port 8101.",
    ),
    Chunk(
        id="c2",
        source="ops.md",
        title="Ops",
        heading_path=["Ops", "Logs"],
        text="Logs are kept thirty days.",
    ),
    Chunk(
        id="c3",
        source="team.md",
        title="Team",
        heading_path=["Team"],
        text=" ".join(["Bruno owns search."] * 60),
    ),
]


@pytest.fixture(scope="module")
def tok():  # type: ignore[no-untyped-def]
    return build_tokenizer()


def build(tok, **kw):  # type: ignore[no-untyped-def]
    args = dict(
        max_seq_length=128,
        epochs=2,
        qa_first_epochs=1,
        train_on_documents=True,
        packing=True,
        seed=0,
    )
    args.update(kw)
    return trainset.build(tok, PAIRS, CHUNKS, [], **args)


def test_qa_loss_is_on_the_answer_only(tok) -> None:  # type: ignore[no-untyped-def]
    ex = trainset.qa_example(tok, PAIRS[0])
    labelled = [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != trainset.IGNORE]
    assert tok.decode(labelled, skip_special_tokens=True).strip() == "Port 8101."
    prompt = tok.apply_chat_template(
        question_messages(PAIRS[0].question), add_generation_prompt=True, tokenize=False
    )
    assert tok.decode(list(ex.input_ids)).startswith(prompt)


def test_passages_have_their_header_and_a_loss_on_every_token(tok) -> None:  # type: ignore[no-untyped-def]
    data = build(tok, max_seq_length=2048)
    passage = next(e for e in data.examples if e.key == "passage:c1")
    assert passage.labels == passage.input_ids
    text = tok.decode(list(passage.input_ids), skip_special_tokens=True)
    assert text.startswith("Ops\nPorts\n\nBilling uses port 8101.")


def test_a_long_passage_is_trained_in_full_in_windows(tok) -> None:  # type: ignore[no-untyped-def]
    data = build(tok, max_seq_length=64)
    windows = [e for e in data.examples if e.key.startswith("passage:c3")]
    assert len(windows) > 1 and data.passage_windows["c3"] == [e.key for e in windows]
    assert all(len(e.input_ids) <= 64 for e in data.examples)
    body = tok(CHUNKS[2].text, add_special_tokens=False)["input_ids"]
    header = tok(trainset.passage_header("Team", ["Team"]), add_special_tokens=False)["input_ids"]
    rebuilt = [t for e in windows for t in e.input_ids[1 + len(header) : -1]]
    assert rebuilt == body  # every token of the passage, once, in order
    assert data.mix["passages_split_into_windows"] == 1


def test_questions_come_first_then_questions_mixed_with_documents(tok) -> None:  # type: ignore[no-untyped-def]
    data = build(tok)
    qa_phase, mixed = data.mix["phases"]
    assert (qa_phase["name"], qa_phase["passes"]) == ("qa", 1)
    assert qa_phase["examples_per_pass"] == {"qa": 3}
    assert (mixed["name"], mixed["passes"]) == ("mixed", 2)
    assert mixed["examples_per_pass"]["qa"] == 3 and mixed["examples_per_pass"]["passage"] >= 3
    # The first rows hold questions only: no passage text before the mixed phase starts.
    first_rows = data.rows[: qa_phase["rows"]]
    passage_ids = {trainset.ids_key(e.input_ids) for e in data.examples if e.kind != "qa"}
    for row in first_rows:
        starts = [0]
        for n in row["seq_lengths"]:
            starts.append(starts[-1] + n)
        for a, b in itertools.pairwise(starts):
            assert trainset.ids_key(row["input_ids"][a:b]) not in passage_ids
    assert data.mix["order"] == "qa-first-then-mixed"
    assert build(tok, qa_first_epochs=0).mix["order"] == "mixed"


def test_documents_can_be_left_out_and_rewrites_count_as_text(tok) -> None:  # type: ignore[no-untyped-def]
    assert build(tok, train_on_documents=False).mix["phases"][-1]["examples_per_pass"] == {"qa": 3}
    rewrites = [
        Rewrite(chunk_id="c1", source="ops.md", index=i, text=f"Port 8101 is billing's ({i}).")
        for i in range(2)
    ]
    data = trainset.build(
        tok,
        PAIRS,
        CHUNKS,
        rewrites,
        max_seq_length=128,
        epochs=1,
        qa_first_epochs=0,
        train_on_documents=True,
        packing=False,
        seed=0,
    )
    assert data.mix["phases"][0]["examples_per_pass"]["rewrite"] == 2


def test_same_seed_same_rows(tok) -> None:  # type: ignore[no-untyped-def]
    assert build(tok, seed=5).rows == build(tok, seed=5).rows
    assert build(tok, seed=5).rows != build(tok, seed=6).rows


def test_seen_counts_only_what_the_batches_held(tok) -> None:  # type: ignore[no-untyped-def]
    data = build(tok, max_seq_length=2048)
    eval_q = ["Which port does billing use?", "What is the escalation number?"]
    nothing = data.seen_report(trainset.Seen(), tok, eval_q)
    assert nothing["documents_trained_fraction"] == 0.0 and nothing["examples_seen"] == 0

    seen = trainset.Seen()
    for row in data.rows:  # padding-free batches: one flattened row, positions restart per example
        positions = [p for n in row["seq_lengths"] for p in range(n)]
        seen.add_batch(torch.tensor([row["input_ids"]]), torch.tensor([positions]))
    report = data.seen_report(seen, tok, eval_q)
    assert report["documents_trained_fraction"] == 1.0
    assert report["passages_trained"] == report["passages_total"] == 3
    # The first question is a training question here, so it is found; the second never is.
    assert report["eval_questions_seen_in_training"] == 1

    partial = trainset.Seen()
    c3 = next(e for e in data.examples if e.key == "passage:c3")
    partial.add_batch(
        torch.tensor([list(c3.input_ids)]), attention_mask=torch.ones(1, len(c3.input_ids))
    )
    report = data.seen_report(partial, tok, [])
    assert report["documents_trained_fraction"] == 0.5  # team.md in full, ops.md not
    assert report["documents_not_trained_in_full"] == ["ops.md"]


def test_without_documents_no_passage_counts_as_trained(tok) -> None:  # type: ignore[no-untyped-def]
    data = build(tok, train_on_documents=False)
    seen = trainset.Seen()
    for row in data.rows:
        positions = [p for n in row["seq_lengths"] for p in range(n)]
        seen.add_batch(torch.tensor([row["input_ids"]]), torch.tensor([positions]))
    report = data.seen_report(seen, tok, [])
    assert (report["passages_trained"], report["passages_total"]) == (0, 3)
    assert report["documents_trained_fraction"] == 0.0
    assert report["documents_not_trained_in_full"] == ["ops.md", "team.md"]
