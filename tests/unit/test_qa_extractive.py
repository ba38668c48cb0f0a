"""Extractive QA: natural questions with short, verbatim answers from definitions, facts,
defaults, key/value lines, tables and page summaries; awkward patterns give no pair."""

from __future__ import annotations

import re

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
            "Split tunnelling means that only internal traffic uses the VPN.",
            "What does split tunnelling mean?",
            "only internal traffic uses the VPN",
        ),
        (
            "Depot is the analytics warehouse of the company.",
            "What is Depot?",
            "the analytics warehouse of the company",
        ),
        (
            "The default rollout timeout is 600 seconds.",
            "How long is the default rollout timeout?",
            "600 seconds",
        ),
        (
            "The standard probation period is 3 months.",
            "How long is the standard probation period?",
            "3 months",
        ),
        ("The CEO is Ingrid Vos.", "Who is the CEO?", "Ingrid Vos"),
        ("The maximum manifest size is 64 KiB.", "What is the maximum manifest size?", "64 KiB"),
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
        "In production the default is off.",  # a fragment, not a term
        "Most of the time the answer is no.",
        "Once approved, the change is merged.",
        "Team stand-ups are the only meetings booked outside core hours.",
        "Nightly backups are the last line of defence.",
    ],
)
def test_sentences_that_are_not_facts_give_no_pairs(sentence):
    assert pairs_of(f"# Guide\n\n## Notes\n\n{sentence}\n") == {}


@pytest.mark.parametrize(
    ("title", "line", "question", "answer"),
    [
        # Verb-phrase labels ask with the verb.
        (
            "Credit Notes",
            "Requested by: account manager",
            "Who requests credit notes?",
            "account manager",
        ),
        (
            "Credit Notes",
            "Approved by: Finance controller",
            "Who approves credit notes?",
            "Finance controller",
        ),
        ("Expense Policy", "Owned by: Finance", "Who owns the Expense Policy?", "Finance"),
        (
            "Expense Policy",
            "Applies to: all employees and contractors",
            "Who does the Expense Policy apply to?",
            "all employees and contractors",
        ),
        (
            "Expense Policy",
            "Applies to: production clusters",
            "What does the Expense Policy apply to?",
            "production clusters",
        ),
        ("Quarterly Report", "Due: 15 April", "When is the quarterly report due?", "15 April"),
        # People, teams and roles: Who. Owners belong "of" the subject.
        (
            "Invoice Service",
            "Owner: Billing Platform team",
            "Who is the owner of the Invoice Service?",
            "Billing Platform team",
        ),
        ("Leave Policy", "Owner: HR", "Who is the owner of the Leave Policy?", "HR"),
        (
            "Event Streaming",
            "Owner: Data Platform team",
            "Who is the owner of event streaming?",
            "Data Platform team",
        ),
        (
            "Leave Policy",
            "Approver: your line manager",
            "Who is the approver in the Leave Policy?",
            "your line manager",
        ),
        (
            "Contract Review",
            "General Counsel: Amara Osei",
            "Who is the general counsel for contract review?",
            "Amara Osei",
        ),
        (
            "Onboarding",
            "Password manager: 1Password",  # a tool, not a person
            "What is the password manager for onboarding?",
            "1Password",
        ),
        # Things, documents and topics as subjects; lower-case common nouns.
        (
            "Invoice Service",
            "Language: Kotlin",
            "What is the language of the Invoice Service?",
            "Kotlin",
        ),
        (
            "Invoice Service",
            "Supported currencies: EUR, GBP",
            "What are the supported currencies of the Invoice Service?",
            "EUR, GBP",
        ),
        (
            "Leave Policy",
            "Carry-over limit: 5 days",
            "What is the carry-over limit in the Leave Policy?",
            "5 days",
        ),
        (
            "Event Streaming",
            "Schema format: Avro.",  # trailing punctuation is not part of the answer
            "What is the schema format for event streaming?",
            "Avro",
        ),
        (
            "Travel Policy",
            "United Kingdom per diem: GBP 40",
            "What is the United Kingdom per diem in the Travel Policy?",
            "GBP 40",
        ),
        # Durations, times, frequencies and counts.
        (
            "Leave Policy",
            "Self-certification period: 3 days",
            "How long is the self-certification period in the Leave Policy?",
            "3 days",
        ),
        (
            "Passwords",
            "Lockout duration: 30 minutes",
            "How long is the lockout for passwords?",
            "30 minutes",
        ),
        (
            "Onboarding",
            "Stand-up time: 09:30 Central European Time",
            "When is the stand-up for onboarding?",
            "09:30 Central European Time",
        ),
        (
            "On-call Handbook",
            "Handover meeting: Monday at 10:00",
            "When is the handover meeting in the On-call Handbook?",
            "Monday at 10:00",
        ),
        (
            "Data Classification",
            "Policy review: every 12 months",
            "How often is the policy review for data classification?",
            "every 12 months",
        ),
        (
            "Event Streaming",
            "Broker count: 6",
            "How many brokers does event streaming have?",
            "6",
        ),
        (
            "Code Review Guidelines",
            "Approvals for tier 1 services: 2",
            "What is the number of approvals for tier 1 services in the Code Review Guidelines?",
            "2",
        ),
        (
            "Travel Policy",
            "Hotel limit: EUR 160 per night",
            "What is the hotel limit in the Travel Policy?",
            "EUR 160 per night",
        ),
        # Where requests go; labels that already name their subject or qualify themselves.
        (
            "Contract Review",
            "Legal requests: legal@example.com",
            "Where are legal requests sent for contract review?",
            "legal@example.com",
        ),
        ("Purchasing", "Purchasing tool: Ledgerline", "What is the purchasing tool?", "Ledgerline"),
        (
            "Service Ports",
            "Port range for application pods: 1024 to 32767",
            "What is the port range for application pods?",
            "1024 to 32767",
        ),
        (
            "Status Page",
            "Publisher during incidents: the incident commander",
            "Who is the publisher during incidents for the Status Page?",
            "the incident commander",
        ),
    ],
)
def test_key_value_lines(title, line, question, answer):
    assert pairs_of(f"# {title}\n\nSome text.\n\n{line}\n") == {question: answer}


@pytest.mark.parametrize(
    "line",
    [
        "Must be resolved: before merge",  # modal
        "Not allowed in shipped code: GPL-3.0",  # negated
        "Review required: MPL-2.0, LGPL-3.0",  # ends in a bare participle
        "Interview training: Required before a first interview",  # the value is a condition
        "Password history: the last 10 passwords cannot be reused",  # the value is a clause
        "Eye test: Paid every 2 years",  # so is this one
        "Who to call: the duty lead",  # a question as a label
    ],
)
def test_key_value_lines_that_give_no_pair(line):
    assert pairs_of(f"# Guide\n\nSome text.\n\n{line}\n") == {}


def test_key_values_under_a_template_heading_give_no_pairs():
    found = pairs_of("# Postmortems\n\n## Template\n\nSummary: one paragraph\nImpact: customers\n")
    assert found == {}


def test_names_in_labels_keep_their_capitals_when_the_text_uses_them_as_names():
    found = pairs_of(
        "# Pricing Rules\n\nHead of Sales: Marco Bianchi\n\n"
        "Custom rates need approval from the Head of Sales.\n"
    )
    assert found["Who is the Head of Sales in the Pricing Rules?"] == "Marco Bianchi"
    assert pairs_of("# Pricing Rules\n\nHead of Sales: Marco Bianchi\n") == {
        "Who is the head of sales in the Pricing Rules?": "Marco Bianchi"
    }


def test_a_capitalised_first_word_that_picks_out_one_instance_is_a_name():
    found = pairs_of(
        "# Travel Policy\n\nA per diem is a daily allowance.\n\n"
        "Hotel limit: EUR 160\nLondon hotel limit: GBP 200\nPoland per diem: PLN 150\n"
        "Primary carer leave: 26 weeks\n"
    )
    assert found == {
        "What is a per diem?": "a daily allowance",
        "What is the hotel limit in the Travel Policy?": "EUR 160",
        "What is the London hotel limit in the Travel Policy?": "GBP 200",
        "What is the Poland per diem in the Travel Policy?": "PLN 150",
        "How long is the primary carer leave in the Travel Policy?": "26 weeks",
    }


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        (
            "| Environment | Cluster | Approval |",
            "| production | kube-prd-3 | release manager |",
            {
                "What is the cluster of the production environment?": "kube-prd-3",
                "What is the approval for the production environment?": "release manager",
            },
        ),
        (
            "| Environment | Cluster | Approval |",
            "| dev | kube-dev-1 | none |",  # "none" is no answer
            {"What is the cluster of the dev environment?": "kube-dev-1"},
        ),
        (
            "| Support level | Handled by | Typical requests |",
            "| L1 | Support agents | Tracking questions |",
            {
                "Who handles the L1 support level?": "Support agents",
                "What are the typical requests of the L1 support level?": "Tracking questions",
            },
        ),
        (
            "| Domain | Used for | Managed by |",
            "| larkspur.internal | Internal tools | Network team |",
            {
                "What is the larkspur.internal domain used for?": "Internal tools",
                "Who manages the larkspur.internal domain?": "Network team",
            },
        ),
        (
            "| Stage | Runs on | Timeout |",
            "| lint | every push | 5 minutes |",
            {
                "What does the lint stage run on?": "every push",
                "How long is the timeout for the lint stage?": "5 minutes",
            },
        ),
        (
            "| Signal | Threshold | Sustained for |",
            "| Error rate | above 2 percent | 5 minutes |",
            {
                "What is the threshold for the Error rate signal?": "above 2 percent",
                "How long is the Error rate signal sustained?": "5 minutes",
            },
        ),
        (
            "| Topic | Partitions | Retention |",
            "| shipment.events | 48 | 7 days |",
            {
                "How many partitions does the shipment.events topic have?": "48",
                "How long is the shipment.events topic kept?": "7 days",
            },
        ),
        (
            "| Interview stage | Length | Interviewers |",
            "| Values interview | 45 minutes | The hiring manager |",
            {
                "How long is the Values interview stage?": "45 minutes",
                "Who are the interviewers of the Values interview stage?": "The hiring manager",
            },
        ),
        (
            "| Severity | Draft due | Review meeting | Approver |",
            "| SEV1 | 3 business days | within 5 business days | VP Engineering |",
            {
                "When is the draft due for the SEV1 severity?": "3 business days",
                "When is the review meeting for the SEV1 severity?": "within 5 business days",
                "Who is the approver for the SEV1 severity?": "VP Engineering",
            },
        ),
        (
            "| Label | Meaning | Must be resolved |",
            "| nit | A small style point | optional |",
            {"What does the nit label mean?": "A small style point"},
        ),
        (
            "| Class | Examples | Who may access |",
            "| Public | Press releases | Anyone |",
            {
                "What are examples of the Public class?": "Press releases",
                "Who may access the Public class?": "Anyone",
            },
        ),
        (
            "| Schema | Refresh |",
            "| raw | nightly |",
            {"How often is the raw schema refreshed?": "nightly"},
        ),
        (
            "| Setting | Default | Description |",
            "| max_parallel | 4 | Concurrent pipelines per repository |",
            {
                "What is the default value of the max_parallel setting?": "4",
                "What is the max_parallel setting for?": "Concurrent pipelines per repository",
            },
        ),
        (
            "| Benefit | Eligibility |",
            "| Gym subsidy | All employees |",
            {"Who is eligible for the Gym subsidy benefit?": "All employees"},
        ),
        (
            "| Role | Grants | Max duration |",
            "| db-admin | Write access to databases | 4 hours |",
            {
                "What does the db-admin role grant?": "Write access to databases",
                "What is the maximum duration of the db-admin role?": "4 hours",
            },
        ),
        (
            "| Purchase amount | Approver |",
            "| Above EUR 50,000 | Chief Financial Officer |",
            {
                "Who is the approver for a purchase amount above EUR 50,000?": (
                    "Chief Financial Officer"
                )
            },
        ),
        (
            "| Monthly volume | Discount |",
            "| 100 to 499 pallets | 5 percent |",
            {"What is the discount for a monthly volume of 100 to 499 pallets?": "5 percent"},
        ),
    ],
)
def test_table_cells(header, row, expected):
    separator = "|" + "---|" * header.count(" | ") + "---|"
    assert pairs_of(f"# Tables\n\n{header}\n{separator}\n{row}\n") == expected


@pytest.mark.parametrize(
    ("title", "first", "question"),
    [
        (
            "Purchasing",
            "This page explains how suppliers get paid.",
            "What does the Purchasing page cover?",
        ),
        (
            "API Guidelines",
            "These guidelines apply to every HTTP API.",
            "What do the API Guidelines cover?",
        ),
        (
            "Disaster Recovery Plan",
            "This plan describes how services are restored.",
            "What does the Disaster Recovery Plan cover?",
        ),
    ],
)
def test_pages_that_say_what_they_cover(title, first, question):
    assert pairs_of(f"# {title}\n\n{first}\n") == {question: first.rstrip(".")}


def test_first_sentences_that_do_not_describe_the_page_give_no_pair():
    found = pairs_of("# Guide\n\n## Rollback\n\nRoll back first, ask questions later.\n")
    assert found == {}


def test_code_blocks_give_no_pairs():
    assert pairs_of("# G\n\n```\nOwner: not-a-fact\nX is a thing.\n```\n") == {}


def test_sample_corpus_gives_dozens_of_short_grounded_natural_pairs():
    passages = corpus_passages()
    pairs = [(p, q, a) for p in passages for q, a in extract_pairs(p)]
    assert len(pairs) >= 60
    sources = {p.source for p, _, _ in pairs}
    assert len(sources) == 9  # every document, the PDF and the HTML pages included
    for passage, question, answer in pairs:
        assert re.match(r"(What|Who|When|Where|How) .+\?$", question), question
        assert not re.search(r'"|\bthe the\b|\b(?:by|to|for|on) (?:of|in) the\b', question)
        assert answer in passage.text.replace("\n", " ") or answer in passage.text, (
            question,
            answer,
        )
        assert len(answer.split()) <= 25 and not answer.endswith((".", ",", ";", ":"))
    short = [a for _, _, a in pairs if len(a.split()) <= 5]
    assert len(short) >= 40


def test_extraction_is_deterministic():
    passages = corpus_passages()
    assert [extract_pairs(p) for p in passages] == [extract_pairs(p) for p in passages]
