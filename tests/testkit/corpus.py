"""Test corpus helpers: the committed sample corpus, a tiny PDF writer and bad-input files.

`examples/local/docs/` (also the local-mode demo) holds the internal docs of a fictional company
(Larkspur Freight): 40 documents in Markdown, HTML, plain text and PDF, written so that
extractive QA finds short factual answers. Tests copy a pinned subset of nine of them plus three
provided question files (`TEST_FILES`), so growing the demo changes no test's numbers.
`write_pdf` is how the PDFs were made:

    PYTHONPATH=tests .venv/bin/python -m testkit.corpus              # hr/leave-policy.pdf
    PYTHONPATH=tests .venv/bin/python examples/local/make_pdfs.py    # the other demo PDFs
"""

from __future__ import annotations

import shutil
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "local" / "docs"

LEAVE_POLICY = [
    "Leave Policy",
    "",
    "1. Annual Leave",
    "",
    "Annual leave is paid time off that every permanent employee accrues monthly.",
    "The default annual leave allowance is 25 days per calendar year.",
    "Carry-over limit: 5 days",
    "Approver: your line manager",
    "",
    "2. Sick Leave",
    "",
    "Sick leave is paid time off for illness or medical appointments.",
    "Self-certification period: 3 days",
    "A fit note is required from the fourth consecutive day of absence.",
    "",
    "3. Parental Leave",
    "",
    "Parental leave is leave taken to care for a new child.",
    "Primary carer leave: 26 weeks at full pay",
    "Secondary carer leave: 6 weeks at full pay",
    "Requests go to the People Operations team at least 8 weeks in advance.",
]


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def write_pdf(lines: list[str], *, lines_per_page: int = 40) -> bytes:
    """A minimal, valid PDF 1.4 (Helvetica, one text line per entry; "" is a blank line)."""
    pages = [lines[i : i + lines_per_page] for i in range(0, len(lines), lines_per_page)] or [[]]
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below
    pages_id = add(b"")
    font = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    kids = []
    for page_lines in pages:
        ops = ["BT", "/F1 11 Tf", "14 TL", "72 770 Td"]
        for line in page_lines:
            ops.append(f"({_pdf_escape(line)}) Tj T*" if line else "T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("cp1252")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        kids.append(
            add(
                b"<< /Type /Page /Parent %d 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 %d 0 R >> >> /Contents %d 0 R >>"
                % (pages_id, font, content)
            )
        )
    objects[catalog - 1] = b"<< /Type /Catalog /Pages %d 0 R >>" % pages_id
    objects[pages_id - 1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (
        b" ".join(b"%d 0 R" % k for k in kids),
        len(kids),
    )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        xref,
    )
    return bytes(out)


# The tests' corpus: the first nine documents of the demo's (and their provided questions), so
# the end-to-end tests stay quick and their figures stable as the demo's corpus grows.
TEST_FILES = (
    "billing/invoice-service.txt",
    "data/retention.md",
    "handbook/onboarding.md",
    "handbook/onboarding.qa.jsonl",
    "hr/leave-policy.pdf",
    "platform/config-reference.md",
    "platform/deploy-service.md",
    "platform/deploy-service.qa.jsonl",
    "platform/glossary.md",
    "security/access-policy.html",
    "support/oncall.html",
    "support/oncall.qa.jsonl",
)


def copy_corpus(dest: Path) -> Path:
    """A writable copy of the tests' part of the sample corpus (`TEST_FILES`)."""
    for name in TEST_FILES:
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(CORPUS / name, target)
    return dest


if __name__ == "__main__":
    target = CORPUS / "hr" / "leave-policy.pdf"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(write_pdf(LEAVE_POLICY))
