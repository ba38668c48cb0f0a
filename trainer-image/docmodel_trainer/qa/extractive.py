"""Question/answer pairs read off the text itself: deterministic, no model needed.

Five patterns, each giving a short answer that is a verbatim span of the passage:

- definitions   "A runbook is a step-by-step guide ..."     -> What is a runbook?
                "Error budget means ..."                     -> What does error budget mean?
- facts         "The base currency is EUR"                   -> What is the base currency?
- defaults      "Canary traffic defaults to 5 percent"       -> What is the default canary traffic?
- key/value     "Owner: Billing Platform team" (section X)   -> What is the owner in the "X" section of T?
- tables        row "dev | kube-dev-1" under "Environment | Cluster"
                                                             -> What is the cluster of the dev environment?
- headings      "## Rollback" + first sentence               -> What does the "Rollback" section of T cover?

This is what tests and air-gapped clusters use, so it errs on the side of fewer, cleaner pairs.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from docmodel_trainer.chunking import Passage
from docmodel_trainer.parsing import Block

MAX_ANSWER_WORDS = 25
MAX_CELL_WORDS = 12
EMPTY_CELLS = {"", "-", "—", "n/a", "na", "none", "no", "yes", "tbd", "?"}

_KEY_VALUE = re.compile(r"^[-*\u2022]?\s*([A-Za-z][\w /()'&.+-]{0,48}?)\s*:\s+(\S.{0,150})$")
_DEFINITION = re.compile(
    r"^(?:(?P<article>an?|the)\s+)?(?P<term>[A-Za-z][\w`'/-]*(?:\s+[A-Za-z0-9][\w`'/-]*){0,4})\s+"
    r"(?P<verb>is|are|means|refers to)\s+(?P<rest>.+)$",
    re.IGNORECASE,
)
_DEFAULTS_TO = re.compile(
    r"^(?:(?P<article>the)\s+)?(?P<term>[A-Za-z`][\w`'/ -]{1,60}?)\s+defaults?\s+to\s+(?P<value>.+)$",
    re.IGNORECASE,
)
_CLAUSE_SPLIT = re.compile(r";\s+|,\s+(?:and|but|while|so)\s+|\s+and\s+(?=the\s)|,\s+which\s+")
_BAD_TERMS = {
    "it",
    "this",
    "that",
    "there",
    "these",
    "those",
    "they",
    "he",
    "she",
    "we",
    "you",
    "what",
    "which",
    "who",
    "every",
    "each",
    "all",
    "here",
    "one",
    "its",
    "our",
}
_BAD_TERM_WORDS = {"not", "also", "only", "usually", "always", "never", "then", "now", "still"}
_DEF_START = re.compile(r"^(an?|the)\s", re.IGNORECASE)
_PASSIVE = re.compile(r"^(\w+ed|\w+en|required|optional|available|responsible|used|run|set)\b")


def extract_pairs(passage: Passage) -> list[tuple[str, str]]:
    """(question, answer) pairs from one passage, duplicates removed, in reading order."""
    out: dict[str, tuple[str, str]] = {}
    for block in passage.blocks:
        if block.kind == "code":
            continue
        found = _table(block, passage) if block.kind == "table" else _prose(block, passage)
        for question, answer in found:
            key = question.lower()
            if key not in out and _good_answer(answer):
                out[key] = (question, answer)
    heading = _heading(passage)
    if heading and heading[0].lower() not in out:
        out[heading[0].lower()] = heading
    return list(out.values())


def _good_answer(answer: str) -> bool:
    words = answer.split()
    return 0 < len(words) <= MAX_ANSWER_WORDS and any(c.isalnum() for c in answer)


def _topic(passage: Passage) -> str:
    """How a question names where a key/value line sits: section and document."""
    section = passage.heading_path[-1] if passage.heading_path else ""
    title = passage.title or (passage.heading_path[0] if passage.heading_path else "")
    if section and title and section != title:
        return f'in the "{section}" section of {title}'
    return f"of {title or section or passage.source}"


def _soft_lower(text: str) -> str:
    """Lower-case ordinary capitalised words; keep acronyms and code as they are."""
    return " ".join(w.lower() if w[:1].isupper() and w[1:].islower() else w for w in text.split())


def _prose(block: Block, passage: Passage) -> Iterator[tuple[str, str]]:
    for key, value in _key_values(block):
        yield f"What {_be(key)} the {_soft_lower(key)} {_topic(passage)}?", value
    for sentence in re.split(r"(?<=[.!?])\s+", _running_text(block)):
        yield from _sentence(sentence.strip())


def _key_values(block: Block) -> list[tuple[str, str]]:
    out = []
    for line in block.text.split("\n"):
        kv = _KEY_VALUE.match(line.strip()) if ": " in line else None
        if kv and _key_value_ok(kv.group(1), kv.group(2)):
            out.append((kv.group(1).strip(), kv.group(2).strip().rstrip(".")))
    return out


def _running_text(block: Block) -> str:
    """The block's prose without its key/value lines, line breaks joined."""
    lines = [line.strip() for line in block.text.split("\n")]
    kept = [line for line in lines if ": " not in line or not _key_values(_line(line))]
    return " ".join(kept)


def _line(text: str) -> Block:
    return Block(kind="paragraph", text=text)


def _be(key: str) -> str:
    last = key.split()[-1].lower()
    plural = last.endswith("s") and not last.endswith(("ss", "us", "is"))
    return "are" if plural else "is"


def _key_value_ok(key: str, value: str) -> bool:
    words = key.split()
    if not 1 <= len(words) <= 5 or key.lower() in ("http", "https", "note", "warning", "example"):
        return False
    return len(value.split()) <= 15 and not value.endswith(":") and "://" not in key


def _sentence(sentence: str) -> Iterator[tuple[str, str]]:
    sentence = sentence.rstrip(".!").strip()
    if not sentence or sentence.endswith("?"):
        return
    if "," in sentence or ";" in sentence or " and " in sentence:
        clauses = [c.strip() for c in _CLAUSE_SPLIT.split(sentence) if c.strip()]
    else:
        clauses = [sentence]
    for index, clause in enumerate(clauses):
        if index == 0 or len(clauses) > 1:
            yield from _clause(clause, whole=len(clauses) == 1)


def _clause(clause: str, whole: bool) -> Iterator[tuple[str, str]]:
    lowered = f" {clause.lower()} "
    default = _DEFAULTS_TO.match(clause) if " default" in lowered else None
    if default and _term_ok(default.group("term")):
        term = default.group("term").strip()
        value = default.group("value").strip()
        if len(value.split()) <= 8:
            yield f"What is the default {_soft_lower(term)}?", value
        return
    if not any(verb in lowered for verb in (" is ", " are ", " means ", " refers to ")):
        return
    match = _DEFINITION.match(clause)
    if not match:
        return
    article = (match.group("article") or "").lower()
    term = match.group("term").strip()
    verb = match.group("verb").lower()
    rest = match.group("rest").strip()
    if not _term_ok(term) or not rest:
        return
    phrase = f"{article} {_soft_lower(term)}".strip() if article else _soft_lower(term)
    if verb in ("means", "refers to"):
        if len(rest.split()) <= MAX_ANSWER_WORDS:
            yield f"What does {phrase} {'mean' if verb == 'means' else 'refer to'}?", rest
        return
    if _DEF_START.match(rest) and not rest.lower().startswith("the same"):
        # "A runbook is a step-by-step guide ..." ("X is the Y" too): a definition.
        if len(rest.split()) <= MAX_ANSWER_WORDS:
            yield f"What {'are' if verb == 'are' else 'is'} {phrase}?", rest
        return
    if article == "the" and len(rest.split()) <= 6 and not _PASSIVE.match(rest.lower()):
        # "The default branch is main", "The maximum manifest size is 64 KiB": a fact.
        yield f"What is {phrase}?", rest


def _term_ok(term: str) -> bool:
    words = term.lower().replace("`", "").split()
    if not words or words[0] in _BAD_TERMS or _BAD_TERM_WORDS & set(words):
        return False
    return not words[0].isdigit() and len(term) <= 60


def _table(block: Block, passage: Passage) -> Iterator[tuple[str, str]]:
    rows = block.rows
    if len(rows) < 2 or len(rows[0]) < 2:
        return
    header = rows[0]
    entity = _singular(_soft_lower(header[0]))
    for row in rows[1:]:
        if len(row) != len(header) or not row[0].strip():
            continue
        subject = row[0].strip()
        if entity and entity.lower() not in subject.lower() and len(subject.split()) <= 4:
            named = f"the {subject} {entity}"
        else:
            named = subject
        for column, cell in zip(header[1:], row[1:], strict=False):
            cell = cell.strip()
            if not column.strip() or cell.lower() in EMPTY_CELLS:
                continue
            if len(cell.split()) > MAX_CELL_WORDS:
                continue
            col = column.strip()
            yield f"What {_be(col)} the {_soft_lower(col)} of {named}?", cell


def _singular(word: str) -> str:
    if word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _heading(passage: Passage) -> tuple[str, str] | None:
    """What does a section cover: its first sentence of prose."""
    if not passage.heading_path:
        return None
    section = passage.heading_path[-1]
    prose = next(
        (t for b in passage.blocks if b.kind == "paragraph" and (t := _running_text(b))), ""
    )
    first = re.split(r"(?<=[.!?])\s+", prose)[0].strip()
    if not 4 <= len(first.split()) <= 30 or first.endswith(":"):
        return None
    title = passage.title
    if len(passage.heading_path) == 1 or section == title:
        return f"What does the {section} page cover?", first
    return f'What does the "{section}" section of {title} cover?', first
