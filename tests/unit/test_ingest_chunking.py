"""Chunking: by heading, code and tables whole, bounded size, overlap, duplicates dropped."""

from __future__ import annotations

import itertools

from docmodel_trainer.chunking import approx_tokens, chunk_document, deduplicate
from docmodel_trainer.parsing import parse_document

from corpus import CORPUS


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
    chunk = passages[3].chunk("train")
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


def test_code_blocks_and_tables_are_never_cut():
    code = "\n".join(f"echo step {i} of the long deployment script" for i in range(60))
    rows = "\n".join(f"| key{i} | value {i} |" for i in range(60))
    text = f"# Ops\n\nIntro text.\n\n```sh\n{code}\n```\n\n| Key | Value |\n|---|---|\n{rows}\n"
    passages = chunk_document(doc_of(text), max_tokens=64, overlap_tokens=0)
    codes = [b for p in passages for b in p.blocks if b.kind == "code"]
    tables = [b for p in passages for b in p.blocks if b.kind == "table"]
    assert [b.text for b in codes] == [code]
    assert len(tables) == 1 and len(tables[0].rows) == 61


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
