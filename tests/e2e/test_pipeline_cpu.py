"""The realistic path on CPU: the sample corpus -> ingest -> train -> evaluate, under the
evaluation protocol: every document trained on, held-out questions never.

The committed corpus (examples/local/docs: Markdown, HTML, text, a PDF) goes through the same
three commands the operator's Jobs run, with a tiny Llama whose tokenizer is fitted to the docs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from docmodel.dataset import CHUNKS, EVAL, TRAIN, Chunk, QAPair, read_jsonl
from docmodel.report import METRICS, EvalReport
from docmodel_trainer.chunking import normalise
from docmodel_trainer.cli import main
from docmodel_trainer.tinymodel import build_tiny_llama

from testkit.corpus import copy_corpus
from testkit.dataset_factory import docmodel_manifest
from testkit.logs import events

pytestmark = pytest.mark.e2e


def test_corpus_to_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = copy_corpus(tmp_path / "docs")
    model = build_tiny_llama(tmp_path / "model", corpus=corpus, vocab_size=600, hidden_size=64)
    dm = tmp_path / "dm.yaml"
    # The shared tiny-training DocModel, at the default learning rate, with more questions.
    manifest = docmodel_manifest(model, retriever="Hybrid", learningRate=2e-4)
    manifest["spec"]["evaluation"]["maxQuestions"] = 12
    dm.write_text(yaml.safe_dump(manifest))
    store = tmp_path / "store"
    job = ["--docmodel", str(dm), "--store", str(store)]
    rev_file = tmp_path / "revision"
    assert (
        main(
            [
                "ingest",
                *job,
                "--source-dir",
                str(corpus),
                "--revision-file",
                str(rev_file),
                "--workdir",
                str(tmp_path / "w-ingest"),
            ]
        )
        == 0
    )
    revision = rev_file.read_text().strip()
    rev_dir = store / "docs" / "handbook" / f"rev-{revision}"
    job += ["--revision", revision]

    # Every document is training text; the held-out questions are grouped by section (the demo
    # has fewer than 10 documents), never asked in training, and none shares a passage with a
    # training question.
    dataset = rev_dir / "dataset"
    train_pairs = list(read_jsonl(dataset / TRAIN, QAPair))
    eval_pairs = list(read_jsonl(dataset / EVAL, QAPair))
    chunks = list(read_jsonl(dataset / CHUNKS, Chunk))
    assert train_pairs and eval_pairs
    documents = {p.relative_to(corpus).as_posix() for p in corpus.rglob("*") if p.is_file()}
    documents = {d for d in documents if not d.endswith(".qa.jsonl")}
    assert {c.source for c in chunks} == documents
    assert not {normalise(p.question) for p in eval_pairs} & {
        normalise(p.question) for p in train_pairs
    }
    assert not {p.chunk_id for p in eval_pairs} & {p.chunk_id for p in train_pairs}

    assert (
        main(
            [
                "train",
                *job,
                "--workdir",
                str(tmp_path / "w-train"),
                "--epochs",
                "2",
                "--learning-rate",
                "2e-2",
                "--logging-steps",
                "2",
            ]
        )
        == 0
    )
    adapter = rev_dir / "adapter"
    metrics = json.loads((adapter / "metrics.json").read_text())
    assert metrics["loss_curve"][-1]["loss"] < metrics["loss_curve"][0]["loss"]
    lora_b = [
        v for k, v in load_file(adapter / "adapter_model.safetensors").items() if "lora_B" in k
    ]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # peft initialises B to zero
    # Counted from the trainer's own batches: every passage of every document in full, and
    # no held-out question in a trained question/answer example.
    seen = json.loads((adapter / "training_data.json").read_text())["seen"]
    assert seen["documents_trained_fraction"] == 1.0
    assert seen["documents_not_trained_in_full"] == []
    assert seen["passages_trained"] == seen["passages_total"] == len(chunks)
    assert seen["eval_questions_checked"] == len({normalise(p.question) for p in eval_pairs})
    assert seen["eval_questions_seen_in_training"] == 0

    assert main(["evaluate", *job, "--workdir", str(tmp_path / "w-eval")]) == 0
    report = EvalReport.model_validate_json((rev_dir / "eval" / "report.json").read_text())
    assert set(report.aggregate) == {"candidate", "baseline", "base"}
    # Each system's aggregate is the mean of its per-question scores of these answers.
    for system, scores in report.aggregate.items():
        for m in METRICS:
            mean = sum(q.scores[system].get(m) for q in report.questions) / len(report.questions)
            assert scores.get(m) == pytest.approx(mean)
    assert len(report.questions) == min(12, len(eval_pairs))
    assert {q.source for q in report.questions} <= {p.source for p in eval_pairs}
    # The interval the gate reads, the diagnostics and the leakage figures.
    interval = report.differences["candidate-baseline"]["token_f1"]
    assert interval.ci_low <= interval.mean <= interval.ci_high
    assert report.diagnostics.retrieval_recall_at_k is not None
    assert report.diagnostics.questions_with_passage == len(report.questions)
    leakage = report.leakage
    assert (
        leakage["eval_items_checked"] == len(eval_pairs) + leakage["eval_items_dropped_for_leakage"]
    )
    assert leakage["kept_max_similarity"] < leakage["similarity_threshold"]
    assert set(report.costs) == set(report.aggregate)
    assert (rev_dir / "eval" / "report.html").is_file()
    (evaluated,) = events(capsys.readouterr().err, "Evaluated")
    assert evaluated["questions"] == str(len(report.questions))
    assert evaluated["verdict"] in {"Promoted", "Rejected"}
