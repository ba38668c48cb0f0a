"""Chunking: by heading, code and tables whole, bounded size, overlap, duplicates dropped."""

from __future__ import annotations

import itertools

from docmodel_trainer.chunking import approx_tokens, chunk_document, deduplicate
from docmodel_trainer.parsing import parse_document

from testkit.corpus import CORPUS


def doc_of(text: str, key: str = "guide.md"):
    return parse_document(key, text.encode())


def test_each_section_becomes_its_own_passage_with_its_heading_path():
    doc = parse_document(
        "platform/deploy-service.md", (CORPUS / "platform/deploy-service.md").read_bytes()
    )
    passages = chunk_document(doc, max_tokens=384, overlap_tokens=48)
    assert [p.heading_path[-1] for p in passages] == [
        "Deploying a Service",
        "Prerequisites",
        "Deploy Command",
        "Environments",
        "Rollback",
        "Canary Releases",
    ]
    assert all(p.source == "platform/deploy-service.md" for p in passages)
    chunk = passages[3].chunk()
    assert chunk.heading_path == ["Deploying a Service", "Environments"]
    assert chunk.text.startswith("| Environment | Cluster |")


def test_long_sections_are_cut_below_max_tokens_with_overlap():
    sentences = " ".join(f"Sentence number {i} talks about freight item {i}." for i in range(200))
    passages = chunk_document(doc_of(f"# Big\n\n{sentences}\n"), max_tokens=64, overlap_tokens=16)
    assert len(passages) > 10
    assert all(approx_tokens(p.text) <= 64 for p in passages)
    for before, after in itertools.pairwise(passages):
        overlap = after.blocks[0].text
        assert before.text.endswith(overlap) and approx_tokens(overlap) <= 16


def test_code_blocks_and_tables_that_fit_are_never_cut():
    code = "\n".join(f"echo step {i}" for i in range(8))
    rows = "\n".join(f"| key{i} | value {i} |" for i in range(5))
    text = f"# Ops\n\nIntro text.\n\n```sh\n{code}\n```\n\n| Key | Value |\n|---|---|\n{rows}\n"
    passages = chunk_document(doc_of(text), max_tokens=64, overlap_tokens=0)
    codes = [b for p in passages for b in p.blocks if b.kind == "code"]
    tables = [b for p in passages for b in p.blocks if b.kind == "table"]
    assert [b.text for b in codes] == [code]
    assert len(tables) == 1 and len(tables[0].rows) == 6


def test_oversized_tables_split_by_rows_under_the_header_and_no_passage_exceeds_the_limit():
    rows = "\n".join(f"| key{i} | value {i} of the table |" for i in range(3000))
    huge_cell = " ".join(["word"] * 400)
    text = f"# Metrics\n\n| Key | Value |\n|---|---|\n{rows}\n| wide | {huge_cell} |\n"
    passages = chunk_document(doc_of(text), max_tokens=64, overlap_tokens=8)
    assert all(approx_tokens(p.text) <= 64 for p in passages)
    tables = [b for p in passages for b in p.blocks if b.kind == "table"]
    assert len(tables) > 100
    assert all(
        t.rows[0] == ["Key", "Value"] and t.text.startswith("| Key | Value |") for t in tables
    )
    kept = [row for t in tables for row in t.rows[1:]]
    assert kept == [[f"key{i}", f"value {i} of the table"] for i in range(3000)]  # every row, once
    assert sum(p.text.count("word") for p in passages) >= 400  # the wide row, by words (+ overlap)


def test_oversized_code_splits_by_whole_lines_and_a_huge_line_by_words():
    lines = [f"echo step {i} of the long deployment script" for i in range(300)]
    long_line = "x=" + " ".join(f"arg{i}" for i in range(500))
    code = "\n".join([*lines, long_line])
    passages = chunk_document(doc_of(f"# Ops\n\n```sh\n{code}\n```\n"), 64, 0)
    assert all(approx_tokens(p.text) <= 64 for p in passages)
    codes = [b.text for p in passages for b in p.blocks if b.kind == "code"]
    whole = [line for c in codes for line in c.split("\n") if line.startswith("echo")]
    assert whole == lines  # lines are never cut
    assert sum(c.count("arg") for c in codes) == 500


def test_no_overlap_when_overlap_is_zero():
    sentences = " ".join(f"Fact {i} is here." for i in range(100))
    passages = chunk_document(doc_of(f"# T\n\n{sentences}\n"), max_tokens=40, overlap_tokens=0)
    words = [w for p in passages for w in p.text.split()]
    assert len(words) == len(sentences.split())


def test_identical_passages_are_kept_once_across_documents():
    a = chunk_document(doc_of("# Shared\n\nThe same boilerplate paragraph.\n", "a.md"), 384, 0)
    b = chunk_document(doc_of("# Shared\n\nThe  same Boilerplate paragraph!\n", "b.md"), 384, 0)
    seen: set[str] = set()
    kept_a, dropped_a = deduplicate(a, seen)
    kept_b, dropped_b = deduplicate(b, seen)
    assert (len(kept_a), dropped_a, len(kept_b), dropped_b) == (1, 0, 0, 1)


def test_passage_ids_are_stable_and_distinct():
    doc = parse_document("data/retention.md", (CORPUS / "data/retention.md").read_bytes())
    first = [p.id for p in chunk_document(doc, 384, 48)]
    assert first == [p.id for p in chunk_document(doc, 384, 48)]
    assert len(set(first)) == len(first)
