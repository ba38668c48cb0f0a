"""Documents to structure: Markdown, plain text, HTML and PDF become sections of blocks.

A parsed document is a list of sections, each with its heading path (["Deploying", "Rollback"])
and its blocks: paragraphs, list items, code blocks and tables (tables keep their rows, so the
extractive generator can ask about cells). Parsing never raises for bad content: it raises
`Unusable` with a reason that ends up in the dataset manifest.

    parse_document("guide.md", data) -> ParsedDocument
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from pathlib import PurePosixPath
from typing import Any, Literal

from pydantic import BaseModel, Field

log = logging.getLogger("docmodel.trainer.ingest")

# Bump when parsing changes in a way that changes its output: cached documents are keyed by it.
PARSER_VERSION = "1"

BlockKind = Literal["paragraph", "item", "code", "table"]

MARKDOWN = (".md", ".markdown", ".mdx")
TEXT = (".txt", ".text", ".rst")
HTML = (".html", ".htm", ".xhtml")
PDF = (".pdf",)


class Unusable(Exception):
    """The document cannot be used; the message is the reason shown in the manifest."""


class Block(BaseModel):
    kind: BlockKind
    text: str
    rows: list[list[str]] = Field(default_factory=list, description="Table rows, header first.")


class Section(BaseModel):
    heading_path: list[str] = Field(default_factory=list)
    blocks: list[Block] = Field(default_factory=list)


class ParsedDocument(BaseModel):
    key: str
    title: str
    sections: list[Section]
    encoding: str = "utf-8"

    def word_count(self) -> int:
        return sum(len(b.text.split()) for s in self.sections for b in s.blocks)


def kind_of(key: str) -> str | None:
    suffix = PurePosixPath(key.lower()).suffix
    for name, suffixes in (("markdown", MARKDOWN), ("text", TEXT), ("html", HTML), ("pdf", PDF)):
        if suffix in suffixes:
            return name
    return None


def parse_document(key: str, data: bytes) -> ParsedDocument:
    """Parse one document by its file name; raise `Unusable` with a reason when it cannot be."""
    kind = kind_of(key)
    if kind is None:
        raise Unusable(f"unsupported file type {PurePosixPath(key).suffix or '(none)'}")
    if not data.strip():
        raise Unusable("empty file")
    if kind == "pdf":
        sections = _parse_pdf(data)
        encoding = "pdf"
    else:
        text, encoding = decode_text(data)
        if kind == "markdown":
            sections = _parse_markdown(text)
        elif kind == "html":
            sections = _parse_html(text)
        else:
            sections = _parse_text(text)
    sections = [s for s in sections if s.blocks]
    if not sections:
        raise Unusable("no text found")
    title = next((s.heading_path[0] for s in sections if s.heading_path), "")
    return ParsedDocument(
        key=key, title=title or _title_from_key(key), sections=sections, encoding=encoding
    )


def _title_from_key(key: str) -> str:
    stem = PurePosixPath(key).name.split(".")[0]
    return re.sub(r"[-_]+", " ", stem).strip().capitalize() or key


# --------------------------------------------------------------------------------------------
# Text decoding


def decode_text(data: bytes) -> tuple[str, str]:
    """UTF-8 (with or without BOM, or UTF-16 with BOM); otherwise Windows-1252, then Latin-1.

    Binary content (NUL bytes or many control characters) raises `Unusable`.
    """
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError:
            raise Unusable("invalid UTF-16 text") from None
    sample = data[:8192]
    if b"\x00" in sample:
        raise Unusable("binary content (NUL bytes) in a text file")
    controls = sum(1 for b in sample if b < 32 and b not in (9, 10, 12, 13))
    if controls > len(sample) * 0.05:
        raise Unusable("binary content (control characters) in a text file")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), "cp1252"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _clean(text: str) -> str:
    return re.sub(r"[ \t\r\f\v\u00a0]+", " ", text).strip()


def _clean_lines(text: str) -> str:
    lines = (_clean(line) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


class _Builder:
    """Collects blocks into sections as headings arrive."""

    def __init__(self) -> None:
        self.sections: list[Section] = [Section()]
        self.path: list[tuple[int, str]] = []

    def heading(self, level: int, text: str) -> None:
        text = _clean(text)
        if not text:
            return
        while self.path and self.path[-1][0] >= level:
            self.path.pop()
        self.path.append((level, text))
        self.sections.append(Section(heading_path=[t for _, t in self.path]))

    def add(self, kind: BlockKind, text: str, rows: list[list[str]] | None = None) -> None:
        text = text.strip("\n") if kind == "code" else _clean_lines(text)
        if text.strip():
            self.sections[-1].blocks.append(Block(kind=kind, text=text, rows=rows or []))

    def table(self, rows: list[list[str]]) -> None:
        rows = [[_clean(c) for c in row] for row in rows if any(c.strip() for c in row)]
        if rows:
            self.add("table", render_table(rows), rows)


def render_table(rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


# --------------------------------------------------------------------------------------------
# Markdown (markdown-it-py, CommonMark plus GFM tables)


def _inline_text(token: Any, drop_link_lines: bool = True) -> str:
    """The text of inline content. Images give none: their alt text (badges such as "Slack" or
    "Docker Pulls", logos) is not prose and must not reach titles or questions. With
    `drop_link_lines`, a line of nothing but links and separators (a badge or navigation row)
    gives none either; headings keep their link text (`## [Install](#install)`)."""
    lines: list[str] = []
    text: list[str] = []
    outside: list[str] = []  # the line's text outside links
    links = depth = 0

    def end_line() -> None:
        line = "".join(text)
        if drop_link_lines and links and not re.search(r"\w", "".join(outside)):
            line = ""
        lines.append(line)

    for child in getattr(token, "children", None) or []:
        if child.type == "link_open":
            depth += 1
            links += 1
        elif child.type == "link_close":
            depth = max(0, depth - 1)
        elif child.type in ("text", "code_inline"):
            text.append(child.content)
            if depth == 0:
                outside.append(child.content)
        elif child.type in ("softbreak", "hardbreak"):
            end_line()
            text, outside, links = [], [], 0
    end_line()
    return "\n".join(line for line in lines if line.strip())


def _parse_markdown(text: str) -> list[Section]:
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    b = _Builder()
    heading_level = 0
    in_item = 0
    table: list[list[str]] | None = None
    for tok in tokens:
        if tok.type == "heading_open":
            heading_level = int(tok.tag[1:])
        elif tok.type == "list_item_open":
            in_item += 1
        elif tok.type == "list_item_close":
            in_item -= 1
        elif tok.type == "table_open":
            table = []
        elif tok.type == "tr_open" and table is not None:
            table.append([])
        elif tok.type == "table_close" and table is not None:
            b.table(table)
            table = None
        elif tok.type in ("fence", "code_block"):
            b.add("code", tok.content)
        elif tok.type == "inline":
            content = _inline_text(tok, drop_link_lines=not heading_level and table is None)
            if heading_level:
                b.heading(heading_level, content)
                heading_level = 0
            elif table is not None and table:
                table[-1].append(content)
            else:
                b.add("item" if in_item else "paragraph", content)
    return b.sections


# --------------------------------------------------------------------------------------------
# Plain text: paragraphs by blank lines; underlined or numbered short lines are headings


_UNDERLINE = re.compile(r"^(=+|-+)\s*$")
_NUMBERED_HEADING = re.compile(r"^(\d+(?:\.\d+)*)\.?\s+([A-Z][^.:!?]{1,70})$")


def _parse_text(text: str) -> list[Section]:
    """Line by line (PDF text has no blank lines): a short first line is the title; numbered
    Title Case lines, ALL CAPS lines and underlined lines are headings; blank lines and
    headings end paragraphs; indented runs are code."""
    b = _Builder()
    lines = text.replace("\r\n", "\n").split("\n")
    para: list[str] = []
    first = True

    def flush() -> None:
        if not para:
            return
        if all(line.startswith(("    ", "\t")) for line in para):
            b.add(
                "code",
                "\n".join(line[4:] if line.startswith("    ") else line[1:] for line in para),
            )
        else:
            b.add("paragraph", "\n".join(para))
        para.clear()

    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
        i += 1
        if not line.strip():
            flush()
            continue
        stripped = line.strip()
        if nxt and _UNDERLINE.match(nxt) and len(stripped) < 80 and not para:
            b.heading(1 if nxt[0] == "=" else 2, stripped)
            i += 1
        elif first and _is_title(stripped):
            b.heading(1, stripped)
        elif (match := _NUMBERED_HEADING.match(stripped)) and _title_case(match.group(2)):
            flush()
            b.heading(match.group(1).count(".") + 2, match.group(2))
        elif _all_caps(stripped):
            flush()
            b.heading(2, stripped.title())
        else:
            para.append(line)
        first = False
    flush()
    return b.sections


def _is_title(line: str) -> bool:
    return len(line) <= 70 and not line.endswith((".", ":", ",", ";", "?")) and ":" not in line


def _title_case(text: str) -> bool:
    words = [w for w in text.split() if len(w) > 3]
    return bool(text) and all(w[0].isupper() or not w[0].isalpha() for w in words)


def _all_caps(line: str) -> bool:
    letters = [c for c in line if c.isalpha()]
    return len(line) <= 70 and len(letters) >= 4 and all(c.isupper() for c in letters)


# --------------------------------------------------------------------------------------------
# HTML (selectolax's lexbor back end)

_SKIP_TAGS = {"script", "style", "noscript", "template", "svg", "nav", "header", "footer", "head"}
_BLOCK_TAGS = {"p", "blockquote", "figcaption", "caption", "address", "summary"}
MAX_HTML_DEPTH = 200


def _parse_html(text: str) -> list[Section]:
    from selectolax.lexbor import LexborHTMLParser

    tree = LexborHTMLParser(text)
    b = _Builder()
    title_node = tree.css_first("title")
    root = tree.body
    if root is None:
        return b.sections
    _walk_html(root, b)
    if title_node is not None and not any(s.heading_path for s in b.sections):
        title = _clean(title_node.text())
        for section in b.sections:
            section.heading_path = [title, *section.heading_path] if title else section.heading_path
    return b.sections


def _node_text(node: Any) -> str:
    return _clean(node.text(deep=True, separator=" "))


def _walk_html(node: Any, b: _Builder, depth: int = 0) -> None:
    if depth > MAX_HTML_DEPTH:  # hostile nesting: keep the text, drop the structure
        b.add("paragraph", node.text(deep=True, separator=" "))
        return
    loose: list[str] = []

    def flush() -> None:
        if loose:
            b.add("paragraph", " ".join(loose))
            loose.clear()

    for child in node.iter(include_text=True):
        if child.is_text_node:
            text = _clean(child.text(deep=False))
            if text:
                loose.append(text)
            continue
        tag = child.tag
        if tag in _SKIP_TAGS or not isinstance(tag, str) or tag.startswith("-"):
            continue
        if tag in (
            "a",
            "b",
            "strong",
            "em",
            "i",
            "code",
            "span",
            "small",
            "abbr",
            "kbd",
            "sub",
            "sup",
        ):
            text = _node_text(child)
            if text:
                loose.append(text)
            continue
        flush()
        if len(tag) == 2 and tag[0] == "h" and tag[1] in "123456":
            b.heading(int(tag[1]), _node_text(child))
        elif tag == "pre":
            b.add("code", child.text(deep=True))
        elif tag == "table":
            rows = [[_node_text(cell) for cell in tr.css("th, td")] for tr in child.css("tr")]
            b.table(rows)
        elif tag in ("ul", "ol"):
            for li in child.css("li"):
                b.add("item", _node_text(li))
        elif tag == "dl":
            term = ""
            for item in child.iter():
                if item.tag == "dt":
                    term = _node_text(item)
                elif item.tag == "dd":
                    b.add("item", f"{term}: {_node_text(item)}" if term else _node_text(item))
        elif tag in _BLOCK_TAGS or tag == "li":
            b.add("paragraph", child.text(deep=True, separator=" "))
        elif tag == "br":
            continue
        else:
            _walk_html(child, b, depth + 1)
    flush()


# --------------------------------------------------------------------------------------------
# PDF (pypdf): text per page, paragraphs by blank lines, headings as in plain text


def _parse_pdf(data: bytes) -> list[Section]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    pages: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reader = PdfReader(io.BytesIO(data))
            if reader.is_encrypted and not reader.decrypt(""):
                raise Unusable("encrypted PDF")
            for page in reader.pages:
                pages.append(page.extract_text() or "")
    except Unusable:
        raise
    except PdfReadError as exc:
        raise Unusable(f"corrupt PDF ({_short(exc)})") from None
    except Exception as exc:  # pypdf raises many types on hostile input
        raise Unusable(f"unreadable PDF ({type(exc).__name__}: {_short(exc)})") from None
    text = "\n\n".join(pages)
    if not text.strip():
        raise Unusable("no extractable text in PDF (scanned images?)")
    return _parse_text(text)


def _short(exc: BaseException) -> str:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return message[:160]
