"""Provided QA files: valid lines used, malformed lines skipped with their line numbers."""

from __future__ import annotations

from docmodel.selection import is_qa_file
from docmodel_trainer.qa.provided import parse_qa_file


def test_valid_and_malformed_lines():
    data = b"\n".join(
        [
            b'{"question": "Which SSO provider?", "answer": "Okta", "source": "handbook/onboarding.md"}',
            b"",
            b"{not json",
            b'{"question": "No answer?"}',
            b'["a", "list"]',
            b'{"question": "  Spaced   out? ", "answer": " 09:30 "}',
            b'{"question": "Bad source?", "answer": "x", "source": 7}',
            b'{"question": "", "answer": "empty question"}',
        ]
    )
    parsed = parse_qa_file("faq.qa.jsonl", data)
    assert [(p.question, p.answer, p.source, p.line) for p in parsed.pairs] == [
        ("Which SSO provider?", "Okta", "handbook/onboarding.md", 1),
        ("Spaced out?", "09:30", None, 6),
    ]
    assert [line for line, _ in parsed.malformed] == [3, 4, 5, 7, 8]
    reasons = dict(parsed.malformed)
    assert reasons[3].startswith("invalid JSON")
    assert reasons[4] == "missing or empty 'answer'"
    assert reasons[5] == "not a JSON object"


def test_non_utf8_file_is_reported():
    parsed = parse_qa_file("x.qa.jsonl", b"\xff\xfe\xfa{")
    assert parsed.pairs == [] and parsed.malformed == [(0, "file is not UTF-8")]


def test_qa_file_names():
    assert is_qa_file("a/b/faq.qa.jsonl") and is_qa_file("FAQ.QA.JSONL")
    assert not is_qa_file("a/faq.jsonl")
