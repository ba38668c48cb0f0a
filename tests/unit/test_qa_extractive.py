"""Extractive QA: short, verbatim answers from definitions, facts, defaults, key/values, tables."""

from __future__ import annotations

import pytest

from docmodel_trainer.chunking import Passage, chunk_document
from docmodel_trainer.parsing import parse_document
from docmodel_trainer.qa.extractive import extract_pairs

from testkit.corpus import CORPUS, TEST_FILES


def pairs_of(markdown: str) -> dict[str, str]:
    doc = parse_document("guide.md", markdown.encode())
    return {q: a for p in chunk_document(doc, 384, 0) for q, a in extract_pairs(p)}


def corpus_passages() -> list[Passage]:
    out = []
    for path in sorted(CORPUS / name for name in TEST_FILES):
        if path.is_file() and not path.name.endswith(".qa.jsonl"):
            doc = parse_document(path.relative_to(CORPUS).as_posix(), path.read_bytes())
            out.extend(chunk_document(doc, 384, 48))
    return out


@pytest.mark.parametrize(
    ("sentence", "question", "answer"),
    [
        (
            "A runbook is a step-by-step guide for one alert.",
            "What is a runbook?",
            "a step-by-step guide for one alert",
        ),
        (
            "The release train is the weekly deploy window.",
            "What is the release train?",
            "the weekly deploy window",
        ),
        (
            "Error budget means the unreliability a service may spend.",
            "What does error budget mean?",
            "the unreliability a service may spend",
        ),
        (
            "The default rollout timeout is 600 seconds.",
            "What is the default rollout timeout?",
            "600 seconds",
        ),
        (
            "Canary traffic defaults to 5 percent.",
            "What is the default canary traffic?",
            "5 percent",
        ),
        (
            "The base currency is EUR, and rates come from the ECB.",
            "What is the base currency?",
            "EUR",
        ),
    ],
)
def test_sentence_patterns(sentence, question, answer):
    assert pairs_of(f"# Guide\n\n{sentence}\n").get(question) == answer


@pytest.mark.parametrize(
    "sentence",
    [
        "It is a good idea to test.",
        "This is important.",
        "Unknown keys are rejected when the manifest is validated.",
        "Restores are tested once per quarter.",
        "There is no default.",
    ],
)
def test_sentences_that_are_not_facts_give_no_sentence_pairs(sentence):
    found = pairs_of(f"# Guide\n\n## Notes\n\n{sentence}\n")
    assert all("cover?" in q for q in found), found


def test_key_value_lines_name_their_section_and_document():
    found = pairs_of(
        "# Billing\n\n## Contacts\n\n- Owner: Billing Platform team\n- Pager: billing-oncall\n"
    )
    assert (
        found['What is the owner in the "Contacts" section of Billing?'] == "Billing Platform team"
    )
    assert found['What is the pager in the "Contacts" section of Billing?'] == "billing-oncall"


def test_tables_ask_for_each_cell_by_row_and_column():
    found = pairs_of(
        "# Envs\n\n| Environment | Cluster | Approval |\n|---|---|---|\n"
        "| dev | kube-dev-1 | none |\n| production | kube-prd-3 | release manager |\n"
    )
    assert found["What is the cluster of the production environment?"] == "kube-prd-3"
    assert found["What is the approval of the production environment?"] == "release manager"
    assert "What is the approval of the dev environment?" not in found  # "none" is no answer


def test_headings_ask_what_a_section_covers():
    found = pairs_of(
        "# Guide\n\n## Rollback\n\nA rollback returns a service to its previous release.\n"
    )
    assert found['What does the "Rollback" section of Guide cover?'] == (
        "A rollback returns a service to its previous release."
    )


def test_code_blocks_give_no_pairs():
    assert pairs_of("# G\n\n```\nOwner: not-a-fact\nX is a thing.\n```\n") == {}


def test_sample_corpus_gives_dozens_of_short_grounded_pairs():
    passages = corpus_passages()
    pairs = [(p, q, a) for p in passages for q, a in extract_pairs(p)]
    assert len(pairs) >= 60
    sources = {p.source for p, _, _ in pairs}
    assert len(sources) == 9  # every document, the PDF and the HTML pages included
    for passage, question, answer in pairs:
        assert question.endswith("?")
        assert answer in passage.text.replace("\n", " ") or answer in passage.text, (
            question,
            answer,
        )
        assert len(answer.split()) <= 25
    short = [a for _, _, a in pairs if len(a.split()) <= 5]
    assert len(short) >= 40


def test_extraction_is_deterministic():
    passages = corpus_passages()
    assert [extract_pairs(p) for p in passages] == [extract_pairs(p) for p in passages]
