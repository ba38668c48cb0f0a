"""Parsed documents to passages: by heading first, code blocks and tables kept whole where they
fit, with overlap.

Each section (a heading and its blocks) is packed into passages of at most `max_tokens`
approximate tokens (whitespace words x 1.3, as `spec.dataset.chunking` defines them), and no
passage is ever larger. A code block or a table that fits a passage is never cut; a longer one
is split: a table by rows, its header row repeated in every piece; code by lines; a single row
or line still over the limit by words. A paragraph longer than a passage is cut at sentence
ends.
Consecutive passages of one section repeat about `overlap_tokens` of the previous passage's
prose. Passages whose normalised text was seen before (in this or an earlier document) are
dropped, so an identical passage belongs to exactly one document.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property

from docmodel.dataset import Chunk
from docmodel_trainer.parsing import Block, ParsedDocument, Section, render_table

TOKENS_PER_WORD = 1.3


def approx_tokens(text: str) -> int:
    return int(len(text.split()) * TOKENS_PER_WORD + 0.999)


def normalise(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed: the key for duplicate checks."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def text_digest(text: str) -> str:
    return hashlib.sha256(normalise(text).encode()).hexdigest()


@dataclass
class Passage:
    """A chunk plus the blocks it was made from (the extractive generator reads the blocks)."""

    source: str
    heading_path: list[str]
    blocks: list[Block] = field(default_factory=list)
    title: str = ""

    @property
    def text(self) -> str:
        return "\n\n".join(b.text for b in self.blocks)

    @cached_property
    def id(self) -> str:
        """Stable id; read once the passage is complete (blocks are not changed after that)."""
        raw = "\x1f".join([self.source, *self.heading_path, self.text])
        return hashlib.sha256(raw.encode()).hexdigest()[:16]

    def chunk(self) -> Chunk:
        return Chunk(
            id=self.id,
            source=self.source,
            heading_path=self.heading_path,
            title=self.title,
            text=self.text,
        )


def chunk_document(doc: ParsedDocument, max_tokens: int, overlap_tokens: int) -> list[Passage]:
    passages: list[Passage] = []
    for section in doc.sections:
        passages.extend(_chunk_section(doc, section, max_tokens, overlap_tokens))
    return passages


def _chunk_section(
    doc: ParsedDocument, section: Section, max_tokens: int, overlap_tokens: int
) -> Iterable[Passage]:
    path = section.heading_path or [doc.title]
    current: list[Block] = []
    size = 0
    for block in _fit(section.blocks, max(8, max_tokens - overlap_tokens)):
        tokens = approx_tokens(block.text)
        if current and size + tokens > max_tokens:
            yield Passage(doc.key, list(path), current, doc.title)
            current = _overlap(current, overlap_tokens, max_tokens - tokens)
            size = sum(approx_tokens(b.text) for b in current)
        current.append(block)
        size += tokens
    if current:
        yield Passage(doc.key, list(path), current, doc.title)


def _fit(blocks: list[Block], max_tokens: int) -> Iterable[Block]:
    """Blocks no larger than `max_tokens` (a passage less its overlap)."""
    for block in blocks:
        if approx_tokens(block.text) <= max_tokens:
            yield block
        elif block.kind == "table" and block.rows:
            yield from _split_table(block, max_tokens)
        elif block.kind == "code":
            yield from _split_code(block, max_tokens)
        else:
            yield from _split_prose(block, max_tokens)


def _split_table(block: Block, max_tokens: int) -> Iterable[Block]:
    """Groups of rows under the repeated header row; a row too long even alone, by words."""
    header, *rows = block.rows
    group: list[list[str]] = []
    for row in rows:
        candidate = [header, *group, row]
        if group and approx_tokens(render_table(candidate)) > max_tokens:
            yield Block(kind="table", text=render_table([header, *group]), rows=[header, *group])
            group = []
        if approx_tokens(render_table([header, row])) > max_tokens:
            for words in _word_runs(render_table([header, row]), max_tokens):
                yield Block(kind="paragraph", text=words)
            continue
        group.append(row)
    if group:
        yield Block(kind="table", text=render_table([header, *group]), rows=[header, *group])


def _split_code(block: Block, max_tokens: int) -> Iterable[Block]:
    """Runs of whole lines; a line too long even alone, by words."""
    lines: list[str] = []
    for line in block.text.split("\n"):
        if approx_tokens(line) > max_tokens:
            if lines:
                yield Block(kind="code", text="\n".join(lines))
                lines = []
            for words in _word_runs(line, max_tokens):
                yield Block(kind="code", text=words)
            continue
        if lines and approx_tokens("\n".join([*lines, line])) > max_tokens:
            yield Block(kind="code", text="\n".join(lines))
            lines = []
        lines.append(line)
    if any(line.strip() for line in lines):
        yield Block(kind="code", text="\n".join(lines))


def _split_prose(block: Block, max_tokens: int) -> Iterable[Block]:
    """Runs of whole sentences; a sentence too long even alone, by words."""
    piece: list[str] = []
    for sentence in _sentences(block.text):
        for words in _word_runs(sentence, max_tokens):
            if piece and approx_tokens(" ".join([*piece, words])) > max_tokens:
                yield Block(kind=block.kind, text=" ".join(piece))
                piece = []
            piece.append(words)
    if piece:
        yield Block(kind=block.kind, text=" ".join(piece))


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+|\n", text) if s.strip()]


def _word_runs(sentence: str, max_tokens: int) -> list[str]:
    words = sentence.split()
    step = max(1, int(max_tokens / TOKENS_PER_WORD))
    return [" ".join(words[i : i + step]) for i in range(0, len(words), step)]


def _overlap(blocks: list[Block], overlap_tokens: int, room: int) -> list[Block]:
    """The tail of the previous passage's prose, about `overlap_tokens` long."""
    budget = min(overlap_tokens, room)
    if budget <= 0:
        return []
    prose = [b for b in blocks if b.kind in ("paragraph", "item")]
    if not prose:
        return []
    words = prose[-1].text.split()
    keep = int(budget / TOKENS_PER_WORD)
    if keep <= 0:
        return []
    if keep >= len(words):
        return [prose[-1]]
    tail = " ".join(words[-keep:])
    # Start the overlap at a sentence start where one is near, so it reads as text.
    match = re.search(r"(?<=[.!?])\s+(\S.*)$", " ".join(words[-keep - 8 :]))
    if match and approx_tokens(match.group(1)) <= budget:
        tail = match.group(1)
    return [Block(kind="paragraph", text=tail)]


def deduplicate(passages: Iterable[Passage], seen: set[str]) -> tuple[list[Passage], int]:
    """Drop passages whose normalised text is in `seen` (which this updates); count them."""
    kept, dropped = [], 0
    for passage in passages:
        digest = text_digest(passage.text)
        if digest in seen:
            dropped += 1
            continue
        seen.add(digest)
        kept.append(passage)
    return kept, dropped
