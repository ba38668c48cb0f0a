"""Parsing: structure out of Markdown, HTML, text and PDF; bad input rejected with a reason."""

from __future__ import annotations

import pytest

from docmodel_trainer.parsing import Unusable, decode_text, parse_document

from testkit.corpus import CORPUS, write_pdf


def blocks(doc, kind):
    return [b for s in doc.sections for b in s.blocks if b.kind == kind]


def test_markdown_keeps_heading_paths_code_and_tables():
    doc = parse_document(
        "platform/deploy-service.md", (CORPUS / "platform/deploy-service.md").read_bytes()
    )
    paths = [s.heading_path for s in doc.sections]
    assert doc.title == "Deploying a Service"
    assert ["Deploying a Service", "Rollback"] in paths
    assert blocks(doc, "code")[0].text == "freightctl deploy --env staging --wait"
    table = blocks(doc, "table")[0]
    assert table.rows[0] == ["Environment", "Cluster", "Region", "Approval"]
    assert table.rows[3] == ["production", "kube-prd-3", "eu-central-1", "release manager"]


def test_markdown_inline_markup_is_reduced_to_text():
    doc = parse_document("a.md", b"# T\n\nA **bold** [link](http://x) and `code`.\n")
    assert blocks(doc, "paragraph")[0].text == "A bold link and code."


def test_html_skips_scripts_navigation_and_footer_and_keeps_tables_and_lists():
    doc = parse_document(
        "security/access-policy.html", (CORPUS / "security/access-policy.html").read_bytes()
    )
    text = " ".join(b.text for s in doc.sections for b in s.blocks)
    assert "analytics" not in text and "Copyright" not in text and "Home" not in text
    assert doc.title == "Access Control Policy"
    items = [b.text for b in blocks(doc, "item")]
    assert "Review tool: AccessHub" in items
    table = blocks(doc, "table")[0]
    assert table.rows[1] == [
        "db-admin",
        "Write access to production databases",
        "Head of Data",
        "4 hours",
    ]


def test_html_definition_lists_become_key_value_items():
    doc = parse_document("support/oncall.html", (CORPUS / "support/oncall.html").read_bytes())
    assert "Paging tool: PagerDuty" in [b.text for b in blocks(doc, "item")]
    assert blocks(doc, "code")[0].text.startswith("freightctl incident open")


def test_text_headings_by_underline_and_capitals():
    doc = parse_document(
        "billing/invoice-service.txt", (CORPUS / "billing/invoice-service.txt").read_bytes()
    )
    assert [s.heading_path for s in doc.sections] == [
        ["Invoice Service"],
        ["Invoice Service", "Invoicing Schedule"],
        ["Invoice Service", "Currencies"],
    ]


def test_pdf_text_is_extracted_with_numbered_headings():
    doc = parse_document("hr/leave-policy.pdf", (CORPUS / "hr/leave-policy.pdf").read_bytes())
    assert doc.encoding == "pdf"
    assert [s.heading_path[-1] for s in doc.sections] == [
        "Annual Leave",
        "Sick Leave",
        "Parental Leave",
    ]
    assert "25 days per calendar year" in blocks(doc, "paragraph")[0].text


def test_pdf_writer_output_is_stable():
    assert write_pdf(["a"]) == write_pdf(["a"])
    assert (CORPUS / "hr/leave-policy.pdf").read_bytes().startswith(b"%PDF-1.4")


@pytest.mark.parametrize(
    ("key", "data", "reason"),
    [
        ("broken.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage", "PDF"),
        ("notes.pdf", b"this is not a pdf at all", "PDF"),
        ("image.md", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), "binary content"),
        ("empty.md", b"", "empty file"),
        ("blank.txt", b"  \n\n \t\n", "empty file"),
        ("archive.zip", b"PK\x03\x04", "unsupported file type"),
        ("only-heading.md", b"# Title\n", "no text found"),
    ],
)
def test_unusable_documents_raise_with_a_reason(key, data, reason):
    with pytest.raises(Unusable, match=reason):
        parse_document(key, data)


def test_pdf_without_text_is_unusable():
    with pytest.raises(Unusable, match="no extractable text"):
        parse_document("scan.pdf", write_pdf([]))


def test_non_utf8_text_decodes_with_a_fallback():
    text, encoding = decode_text("Caf\u00e9 menu: cr\u00e8me br\u00fbl\u00e9e".encode("cp1252"))
    assert (text, encoding) == ("Caf\u00e9 menu: cr\u00e8me br\u00fbl\u00e9e", "cp1252")
    doc = parse_document(
        "menu.txt", "Kitchen\n\nDessert: cr\u00e8me br\u00fbl\u00e9e".encode("latin-1")
    )
    assert doc.encoding == "cp1252"
    assert "cr\u00e8me br\u00fbl\u00e9e" in doc.sections[-1].blocks[0].text


def test_utf8_bom_and_utf16_are_read():
    assert decode_text("\ufeffhello".encode()) == ("hello", "utf-8")
    assert decode_text("hello".encode("utf-16")) == ("hello", "utf-16")


def test_hostile_html_nesting_keeps_the_text():
    html = b"<html><body>" + b"<div>" * 5000 + b"<p>Deep text survives.</p>" + b"</div>" * 5000
    doc = parse_document("deep.html", html + b"</body></html>")
    assert "Deep text survives." in doc.sections[-1].blocks[-1].text


BADGE_README = b"""[![Build](https://ci.example/badge.svg)](https://ci.example) [![Slack](https://slack.example/badge.svg)](https://slack.example)

# [![Logo](logo.png)](https://example.com) Orbit Storage

[![Docker Pulls](https://img.shields.io/docker/pulls/orbit/orbit.svg)](https://hub.docker.com/r/orbit) | [![license](https://img.shields.io/badge/license-Apache-blue)](LICENSE)
Orbit stores objects. See the [install guide](install.md) for details.

[Docs](https://docs.example) | [Blog](https://blog.example)

## [Install](#install)

| Platform | Download |
| --- | --- |
| Linux | [orbit-linux](https://dl.example/linux) |
"""


def test_badge_rows_and_link_only_lines_never_reach_titles_or_text():
    doc = parse_document("README.md", BADGE_README)
    assert doc.title == "Orbit Storage"
    text = "\n".join(b.text for s in doc.sections for b in s.blocks)
    for noise in ("Build", "Slack", "Docker Pulls", "license", "Logo", "Docs", "Blog"):
        assert noise not in text and noise not in doc.title, noise
    assert "Orbit stores objects. See the install guide for details." in text
    headings = [s.heading_path for s in doc.sections if s.heading_path]
    assert ["Orbit Storage", "Install"] in headings  # a heading that is a link keeps its text
    (table,) = [b for s in doc.sections for b in s.blocks if b.kind == "table"]
    assert table.rows[1] == ["Linux", "orbit-linux"]  # a cell that is a link keeps its text
