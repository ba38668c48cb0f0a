"""The ingest workload end to end against local directories (source and artifact store)."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import shutil
from collections import Counter
from pathlib import Path

import httpx
import pytest
import yaml

from docmodel.artifacts import RevisionLayout, read_manifest
from docmodel.dataset import CHUNKS, EVAL, REWRITES, TRAIN, Chunk, QAPair, Rewrite, read_jsonl
from docmodel.digests import revision_id, source_digest
from docmodel.storage import LocalStore
from docmodel_trainer import common, ingest
from docmodel_trainer.qa import generate as generate_module
from docmodel_trainer.qa.teacher import Teacher

from testkit.corpus import copy_corpus, write_pdf
from testkit.logs import events

NAME, NAMESPACE = "handbook", "docs"


def docmodel_file(tmp_path: Path, dataset: dict | None = None, source: dict | None = None) -> Path:
    manifest = {
        "apiVersion": "docmodel.dev/v1alpha1",
        "kind": "DocModel",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "source": {"bucket": "larkspur-docs", "prefix": "handbook/", **(source or {})},
            "dataset": dataset or {},
        },
    }
    path = tmp_path / "docmodel.yaml"
    path.write_text(yaml.safe_dump(manifest))
    return path


class Run:
    def __init__(self, tmp_path: Path, source: Path, dataset=None, source_spec=None):
        self.tmp_path = tmp_path
        self.source = source
        self.store = tmp_path / "store"
        self.docmodel = docmodel_file(tmp_path, dataset, source_spec)

    def __call__(self, *extra: str) -> tuple[int, str]:
        parser = argparse.ArgumentParser()
        ingest.add_arguments(parser)
        args = parser.parse_args(
            [
                "--docmodel",
                str(self.docmodel),
                "--store",
                str(self.store),
                "--source-dir",
                str(self.source),
                "--workdir",
                str(self.tmp_path / "work"),
                *extra,
            ]
        )
        try:
            return ingest.run(args), ""
        except common.JobError as exc:
            return exc.exit_code, str(exc)

    def revision(self) -> str:
        revs = sorted(
            (self.store / NAMESPACE / NAME).glob("rev-*"), key=lambda p: p.stat().st_mtime
        )
        return revs[-1].name.removeprefix("rev-")

    def dataset(self, revision: str | None = None):
        layout = RevisionLayout(NAMESPACE, NAME, revision or self.revision())
        manifest = read_manifest(LocalStore(self.store), layout, "dataset")
        base = self.store / layout.dir("dataset")
        chunks = list(read_jsonl(base / CHUNKS, Chunk))
        train = list(read_jsonl(base / TRAIN, QAPair))
        evals = list(read_jsonl(base / EVAL, QAPair))
        return manifest, chunks, train, evals


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return copy_corpus(tmp_path / "docs")


def test_sample_corpus_becomes_a_dataset_with_every_document_trained(tmp_path, corpus, caplog):
    caplog.set_level(logging.INFO)
    run = Run(tmp_path, corpus)
    rc, _ = run("--revision-file", str(tmp_path / "rev.txt"))
    assert rc == common.EXIT_OK
    revision = (tmp_path / "rev.txt").read_text().strip()
    manifest, chunks, train, evals = run.dataset(revision)

    objects = list(LocalStore(corpus).list())
    docs = [o for o in objects if not o.key.endswith(".qa.jsonl")]
    digest = source_digest(docs)
    spec = common.load_docmodel(run.docmodel).spec
    assert revision == revision_id(spec, digest)
    assert manifest.kind == "dataset" and manifest.revision == revision
    assert manifest.inputs == {"source": digest}
    assert {f.path for f in manifest.files} == {
        CHUNKS,
        REWRITES,
        TRAIN,
        EVAL,
        "passage-index.json",
        "embeddings.npy",
    }
    # The default retriever (Hybrid): every passage embedded once, here.
    indexed = manifest.details["passage_index"]
    assert indexed["retriever"] == "Hybrid" and indexed["passages"] == len(chunks)
    assert indexed["embedding"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert indexed["embedding"]["dimensions"] == 384

    stats = manifest.details
    assert stats["documents_listed"] == stats["documents_parsed"] == 9
    assert stats["documents_skipped"] == []
    assert stats["train_pairs"] == len(train) >= 50
    assert stats["eval_pairs"] == len(evals) >= 5
    # Fewer than 10 documents: questions are grouped by section; every document is trained.
    assert stats["eval_grouping"] == "section" and stats["eval_groups"] >= 1
    assert stats["train_documents"] == 9 and {c.source for c in chunks} == {d.key for d in docs}
    assert stats["eval_documents"] == len({p.source for p in evals}) >= 1
    assert stats["chunks"] == len(chunks)
    assert stats["bytes_downloaded"] == sum(o.size for o in docs)
    assert {c.split for c in chunks} == {"train"}
    # No train question comes from a passage an eval answer comes from, none repeats an eval
    # question, and every eval item carries its leakage figures.
    assert not {p.chunk_id for p in evals} & {p.chunk_id for p in train}
    assert (
        stats["leakage"]["eval_items_checked"]
        == len(evals) + stats["leakage"]["eval_items_dropped_for_leakage"]
    )
    assert all(p.max_train_similarity is not None for p in evals)
    assert all(p.max_train_similarity < 0.8 for p in evals)
    chunk_ids = {c.id: c for c in chunks}
    for pair in [*train, *evals]:
        assert pair.generator == "extractive"
        assert chunk_ids[pair.chunk_id].source == pair.source
    (parsed,) = events(caplog.records, "Parsed")
    assert parsed["documents"] == "9/9"
    (published,) = events(caplog.records, "Published dataset")
    assert published["revision"] == revision and published["chunks"] == str(len(chunks))


def test_rerun_without_changes_downloads_nothing_and_a_change_downloads_one_file(tmp_path, corpus):
    run = Run(tmp_path, corpus)
    assert run()[0] == 0
    first = run.revision()
    shutil.rmtree(run.store / NAMESPACE / NAME / f"rev-{first}")

    assert run()[0] == 0
    manifest, *_ = run.dataset(first)
    assert manifest.details["bytes_downloaded"] == 0
    assert manifest.details["cache_hits"] == 9

    changed = corpus / "data" / "retention.md"
    changed.write_text(changed.read_text() + "\nArchive owner: Records team\n")
    assert run()[0] == 0
    second = run.revision()
    assert second != first
    manifest, _, train, evals = run.dataset(second)
    assert manifest.details["bytes_downloaded"] == changed.stat().st_size
    assert any(p.answer == "Records team" for p in [*train, *evals])


def test_explicit_revision_is_used(tmp_path, corpus):
    run = Run(tmp_path, corpus)
    assert run("--revision", "abc123")[0] == 0
    assert (run.store / NAMESPACE / NAME / "rev-abc123" / "dataset" / "manifest.json").is_file()


def test_bad_files_are_skipped_listed_with_reasons_and_the_run_goes_on(tmp_path, corpus):
    (corpus / "bad").mkdir()
    (corpus / "bad" / "corrupt.pdf").write_bytes(write_pdf(["Fine text"])[:120])
    (corpus / "bad" / "logo.md").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    (corpus / "bad" / "empty.md").write_bytes(b"")
    (corpus / "bad" / "huge.md").write_text("# Huge\n\n" + "Big words here. " * 200)
    (corpus / "bad" / "legacy.txt").write_bytes(
        "Legacy Notes\n\nCaf\u00e9 owner: Jos\u00e9 M\u00fcller \u20ac\n".encode("cp1252")
    )
    run = Run(tmp_path, corpus, source_spec={"maxFileBytes": 2048})
    rc, _ = run()
    assert rc == 0
    manifest, _chunks, train, evals = run.dataset()
    skipped = {s["key"]: s["reason"] for s in manifest.details["documents_skipped"]}
    assert set(skipped) == {"bad/corrupt.pdf", "bad/logo.md", "bad/empty.md", "bad/huge.md"}
    assert "PDF" in skipped["bad/corrupt.pdf"]
    assert skipped["bad/logo.md"].startswith("binary content")
    assert skipped["bad/empty.md"] == "empty file"
    assert "over maxFileBytes=2048 (not downloaded)" in skipped["bad/huge.md"]
    assert manifest.details["documents_parsed"] == 10
    assert manifest.details["decoded_with_fallback"] == ["bad/legacy.txt"]
    assert any(p.answer == "Jos\u00e9 M\u00fcller \u20ac" for p in [*train, *evals])
    # The huge and the empty file were never read.
    read = [p for p in corpus.rglob("*") if p.is_file() and p.name not in ("huge.md", "empty.md")]
    read = [p for p in read if not p.name.endswith(".qa.jsonl")]
    assert manifest.details["bytes_downloaded"] == sum(p.stat().st_size for p in read)


def test_unusable_files_are_cached_too(tmp_path, corpus):
    (corpus / "corrupt.pdf").write_bytes(b"%PDF-1.4 garbage")
    run = Run(tmp_path, corpus)
    assert run()[0] == 0
    assert run("--revision", "again")[0] == 0
    manifest, *_ = run.dataset("again")
    assert manifest.details["bytes_downloaded"] == 0
    assert [s["key"] for s in manifest.details["documents_skipped"]] == ["corrupt.pdf"]


def test_empty_source_exits_no_data_naming_the_source(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "image.png").write_bytes(b"\x89PNG")
    rc, message = Run(tmp_path, empty)()
    assert rc == common.EXIT_NO_DATA
    assert str(empty) in message and "include=" in message


def test_nothing_usable_exits_no_data_with_the_reasons(tmp_path):
    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.pdf").write_bytes(b"not a pdf")
    (src / "b.md").write_bytes(b"")
    rc, message = Run(tmp_path, src)()
    assert rc == common.EXIT_NO_DATA
    assert "no usable documents" in message and str(src) in message
    assert "empty file" in message and "PDF" in message


def test_identical_passages_are_kept_once_so_eval_never_repeats_train(tmp_path):
    src = tmp_path / "docs"
    src.mkdir()
    shared = "## Support\n\nSupport hours: 08:00 to 18:00\n"
    for i in range(6):
        (src / f"service{i}.md").write_text(f"# Service {i}\n\nOwner: team {i}\n\n{shared}")
    run = Run(tmp_path, src, dataset={"evalFraction": 0.5})
    assert run()[0] == 0
    manifest, chunks, train, evals = run.dataset()
    assert sum("Support hours" in c.text for c in chunks) == 1
    assert manifest.details["passages_deduplicated"] == 5
    chunk_text = {c.id: c.text for c in chunks}
    train_texts = {chunk_text[p.chunk_id] for p in train}
    assert all(chunk_text[p.chunk_id] not in train_texts for p in evals)
    assert manifest.details["eval_grouping"] == "section" and evals


def test_provided_pairs_beside_the_documents(tmp_path, corpus):
    (corpus / "support" / "extra.qa.jsonl").write_text(
        '{"question": "Who leads a SEV1?", "answer": "An incident commander"}\n'
        "this line is broken\n"
        '{"question": "Missing answer?"}\n'
    )
    run = Run(tmp_path, corpus, dataset={"generator": "provided"})
    assert run()[0] == 0
    manifest, _chunks, train, evals = run.dataset()
    pairs = {p.question: p for p in [*train, *evals]}
    assert len(pairs) == 10
    assert pairs["Which SSO provider does Larkspur Freight use?"].source == "handbook/onboarding.md"
    assert pairs["Which paging tool do teams use?"].source == "support/oncall.html"
    # No document is named extra.*: the answer's passage tells where it belongs.
    assert pairs["Who leads a SEV1?"].source == "support/oncall.html"
    assert all(p.generator == "provided" and p.chunk_id for p in pairs.values())
    assert manifest.details["malformed_qa_lines"] == [
        {"file": "support/extra.qa.jsonl", "line": 2, "reason": "invalid JSON (Expecting value)"},
        {"file": "support/extra.qa.jsonl", "line": 3, "reason": "missing or empty 'answer'"},
    ]
    assert manifest.details["eval_documents"] == len({p.source for p in evals}) >= 1
    # QA files are inputs: changing one changes the source digest.
    objects = list(LocalStore(corpus).list())
    assert manifest.inputs["source"] == source_digest(objects)


def test_provided_prefix_is_read_instead_of_files_beside_the_documents(tmp_path, corpus):
    (corpus / "qa").mkdir()
    (corpus / "qa" / "set.qa.jsonl").write_text(
        '{"question": "What is the base currency?", "answer": "EUR", "source": "billing/invoice-service.txt"}\n'
    )
    run = Run(tmp_path, corpus, dataset={"generator": "provided", "providedPrefix": "qa"})
    assert run()[0] == 0
    _, _, train, evals = run.dataset()
    assert [p.question for p in [*train, *evals]] == ["What is the base currency?"]


TEACHER = {"generator": "teacher", "teacher": {"endpoint": "http://teacher.local/v1", "model": "m"}}


def use_teacher(monkeypatch, handler):
    monkeypatch.setenv("DOCMODEL_TEACHER_API_KEY", "sk-very-secret")

    def factory(spec, **kwargs):
        return Teacher(spec, transport=httpx.MockTransport(handler), sleep=lambda s: None)

    monkeypatch.setattr(generate_module, "Teacher", factory)


def answer_from_prompt(request: httpx.Request) -> httpx.Response:
    """A fake teacher: a question on the passage's first words, or rewrites that reverse the
    order of its sentences (`Rewrite n of: ...`)."""
    prompt = json.loads(request.content)["messages"][1]["content"]
    text = prompt.split("---\n")[1]
    if "Rewrite this passage" in prompt:
        n = int(prompt.split("Rewrite this passage ")[1].split()[0])
        words = text.split()
        reply: dict[str, object] = {
            "rewrites": [f"Rewrite {i} of: " + " ".join(reversed(words)) for i in range(n)]
        }
    else:
        first = text.split()[:3]
        reply = {
            "pairs": [{"question": f"What starts with {first[0]}?", "answer": " ".join(first)}]
        }
    return httpx.Response(200, json={"choices": [{"message": {"content": json.dumps(reply)}}]})


def test_teacher_generator_writes_pairs_and_keeps_the_key_out_of_artifacts(
    tmp_path, corpus, monkeypatch, caplog
):
    caplog.set_level(logging.DEBUG)
    use_teacher(monkeypatch, answer_from_prompt)
    run = Run(tmp_path, corpus, dataset=TEACHER)
    assert run()[0] == 0
    manifest, chunks, train, evals = run.dataset()
    assert {p.generator for p in [*train, *evals]} == {"teacher"}
    # One request per passage for pairs, one for its rewrites (dataset.rewritesPerPassage: 2).
    assert manifest.details["teacher_requests"] == 2 * len(chunks)
    assert manifest.details["rewrites"] == 2 * len(chunks)
    for path in (p for p in run.store.rglob("*") if p.is_file()):
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        assert b"sk-very-secret" not in data, path
    assert "sk-very-secret" not in caplog.text


def test_teacher_failure_exits_upstream(tmp_path, corpus, monkeypatch):
    use_teacher(monkeypatch, lambda r: httpx.Response(500))
    rc, message = Run(tmp_path, corpus, dataset=TEACHER)()
    assert rc == common.EXIT_UPSTREAM
    assert "http://teacher.local/v1" in message and "HTTP 500" in message


def test_a_corrupt_cache_pack_falls_back_to_the_per_document_cache(tmp_path, corpus):
    run = Run(tmp_path, corpus)
    assert run("--revision", "one")[0] == 0
    pack = run.store / NAMESPACE / NAME / "cache" / "parsed" / "pack.json.gz"
    assert pack.is_file()
    pack.write_bytes(b"not gzip")
    assert run("--revision", "two")[0] == 0
    manifest, *_ = run.dataset("two")
    assert manifest.details["bytes_downloaded"] == 0 and manifest.details["cache_hits"] == 9
    # The pack was rewritten: a third run reads it again.
    assert gzip.decompress(pack.read_bytes())


def test_no_cache_reads_and_parses_everything(tmp_path, corpus):
    run = Run(tmp_path, corpus)
    assert run("--revision", "one")[0] == 0
    assert run("--revision", "two", "--no-cache")[0] == 0
    manifest, *_ = run.dataset("two")
    assert manifest.details["cache_hits"] == 0 and manifest.details["bytes_downloaded"] > 0


def test_ingest_revision_comes_from_the_shared_source_selection(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The operator computes revisions with `docmodel.selection.select_sources`; ingest agrees."""
    import yaml

    from docmodel.api import parse_docmodel
    from docmodel.digests import revision_id
    from docmodel.selection import select_sources
    from docmodel.storage import LocalStore
    from docmodel_trainer import ingest
    from docmodel_trainer.cli import build_parser

    from testkit.corpus import CORPUS

    manifest = yaml.safe_load((CORPUS.parent / "docmodel.yaml").read_text())
    dm = tmp_path / "dm.yaml"
    dm.write_text(yaml.safe_dump(manifest))
    revision_file = tmp_path / "revision"
    parser, _ = build_parser(only="ingest")
    args = parser.parse_args(
        [
            "ingest",
            "--docmodel",
            str(dm),
            "--store",
            str(tmp_path / "store"),
            "--source-dir",
            str(CORPUS),
            "--workdir",
            str(tmp_path / "w"),
            "--revision-file",
            str(revision_file),
        ]
    )
    assert ingest.run(args) == 0
    spec = parse_docmodel(manifest).spec
    expected = revision_id(spec, select_sources(spec, LocalStore(CORPUS).list()).digest)
    assert revision_file.read_text().strip() == expected


def test_one_huge_table_gives_at_most_the_cap_chosen_by_seed_and_recorded(tmp_path):
    source = tmp_path / "docs"
    source.mkdir()
    rows = "\n".join(f"| svc-{i:04d} | team {i % 37} | port {8000 + i} |" for i in range(2000))
    (source / "services.md").write_text(
        f"# Services\n\n| Service | Owner | Port |\n|---|---|---|\n{rows}\n"
    )
    for name in ("onboarding", "travel", "security"):
        (source / f"{name}.md").write_text(
            f"# {name.title()}\n\nThe {name} policy is owned by the {name} office. "
            f"Requests about {name} go to the {name} desk within five working days.\n"
        )

    def kept(name: str, dataset: dict) -> tuple[dict, list[str]]:
        (tmp_path / name).mkdir()
        run = Run(tmp_path / name, source, dataset)
        rc, message = run()
        assert rc == 0, message
        manifest, _, train, evals = run.dataset()
        questions = [p.question for p in [*train, *evals] if p.source == "services.md"]
        return manifest.details, questions

    details, questions = kept("a", {"maxPairsPerDocument": 50})
    assert 0 < len(questions) <= 50
    dropped = details["pairs_dropped_by_cap"]["services.md"]
    assert dropped > 1000 and details["pairs_generated"] >= dropped + len(questions)
    assert "onboarding.md" not in details["pairs_dropped_by_cap"]
    _, again = kept("b", {"maxPairsPerDocument": 50})
    assert again == questions  # the same seed keeps the same pairs
    _, other = kept("c", {"maxPairsPerDocument": 50, "seed": 99})
    assert other != questions


@pytest.mark.parametrize("n", [3, 0])
def test_teacher_rewrites_reach_the_training_data_n_per_passage(tmp_path, corpus, monkeypatch, n):
    """A fake teacher end to end: ingest asks for n rewrites per passage, the dataset holds
    them, and the training data the trainer is given has n rewrite examples per passage (none
    at n = 0), beside every passage itself."""
    from docmodel_trainer import trainset
    from docmodel_trainer.tinymodel import build_tokenizer

    use_teacher(monkeypatch, answer_from_prompt)
    run = Run(tmp_path, corpus, dataset=TEACHER | {"rewritesPerPassage": n})
    assert run()[0] == 0
    manifest, chunks, train, _ = run.dataset()
    base = run.store / RevisionLayout(NAMESPACE, NAME, run.revision()).dir("dataset")
    rewrites = list(read_jsonl(base / REWRITES, Rewrite))
    assert manifest.details["rewrites"] == len(rewrites) == n * len(chunks)
    assert manifest.details["teacher_requests"] == len(chunks) * (2 if n else 1)
    per_passage = Counter(r.chunk_id for r in rewrites)
    assert all(per_passage[c.id] == n for c in chunks)

    data = trainset.build(
        build_tokenizer(corpus),
        train,
        chunks,
        rewrites,
        max_seq_length=2048,
        epochs=1,
        qa_first_epochs=1,
        train_on_documents=True,
        packing=True,
        seed=0,
    )
    mixed = data.mix["phases"][-1]["examples_per_pass"]
    assert mixed.get("rewrite", 0) == n * len(chunks)
    assert mixed["passage"] == len(chunks)
    made = Counter(
        e.key.split(":", 1)[1].split("~")[0] for e in data.examples if e.kind == "rewrite"
    )
    assert all(made[c.id] == n for c in chunks) if n else not made
