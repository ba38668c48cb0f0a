"""Provided question/answer pairs: JSONL files with `question`, `answer` and optional `source`.

    {"question": "Which SSO provider do we use?", "answer": "Okta", "source": "handbook/onboarding.md"}

Files are `*.qa.jsonl` beside the documents or under `spec.dataset.providedPrefix`. A line that
is not a JSON object with non-empty string `question` and `answer` is skipped and reported with
its line number; the rest of the file is used.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath

from pydantic import BaseModel, Field

from docmodel.selection import QA_SUFFIX

MAX_QUESTION_CHARS = 2000
MAX_ANSWER_CHARS = 4000


class ProvidedPair(BaseModel):
    question: str
    answer: str
    source: str | None
    file: str
    line: int


class ProvidedFile(BaseModel):
    key: str
    pairs: list[ProvidedPair] = Field(default_factory=list)
    malformed: list[tuple[int, str]] = Field(default_factory=list)


def default_source(qa_key: str) -> str:
    """`guides/deploy.qa.jsonl` -> `guides/deploy`: the stem documents beside it may carry."""
    return qa_key[: -len(QA_SUFFIX)]


def parse_qa_file(key: str, data: bytes) -> ProvidedFile:
    out = ProvidedFile(key=key)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        out.malformed.append((0, "file is not UTF-8"))
        return out
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            out.malformed.append((number, f"invalid JSON ({exc.msg})"))
            continue
        problem = _problem(record)
        if problem:
            out.malformed.append((number, problem))
            continue
        source = record.get("source")
        out.pairs.append(
            ProvidedPair(
                question=" ".join(record["question"].split()),
                answer=record["answer"].strip(),
                source=str(PurePosixPath(source)) if source else None,
                file=key,
                line=number,
            )
        )
    return out


def _problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    for name, limit in (("question", MAX_QUESTION_CHARS), ("answer", MAX_ANSWER_CHARS)):
        value = record.get(name)
        if not isinstance(value, str) or not value.strip():
            return f"missing or empty {name!r}"
        if len(value) > limit:
            return f"{name!r} longer than {limit} characters"
    source = record.get("source")
    if source is not None and (not isinstance(source, str) or not source.strip()):
        return "'source' must be a non-empty string"
    return None
