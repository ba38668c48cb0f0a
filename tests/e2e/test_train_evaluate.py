"""Train a LoRA adapter on a tiny Llama (CPU) and evaluate it against the RAG baseline.

The whole path the Jobs run: the dataset artifact -> `docmodel-trainer train` -> the adapter
artifact -> `docmodel-trainer evaluate` (candidate, BM25 baseline and a serving revision) ->
report.json, report.html and manifests in the store.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from docmodel.artifacts import Manifest, RevisionLayout
from docmodel.report import METRICS, EvalReport
from docmodel.storage import LocalStore, upload_tree
from docmodel_trainer.cli import main
from docmodel_trainer.tinymodel import build_tiny_llama

from testkit.dataset_factory import docmodel_manifest, publish_dataset, write_corpus
from testkit.logs import events

pytestmark = pytest.mark.e2e

NS, NAME, REV, OLD_REV = "docs", "handbook", "r1", "r0"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("train-eval")
    corpus = write_corpus(root / "corpus")
    # The tokenizer is fitted to the docs and questions, so the vocabulary fits the data.
    model = build_tiny_llama(root / "model", corpus=corpus, vocab_size=400, hidden_size=64)
    store = root / "store"
    publish_dataset(LocalStore(store), RevisionLayout(NS, NAME, REV), root / "dataset")
    dm = root / "dm.yaml"
    dm.write_text(yaml.safe_dump(docmodel_manifest(model)))
    return {"root": root, "store": store, "dm": dm}


def job(setup: dict[str, Path], command: str, workdir: str, *extra: str) -> int:
    return main(
        [
            command,
            "--docmodel",
            str(setup["dm"]),
            "--store",
            str(setup["store"]),
            "--revision",
            REV,
            "--workdir",
            str(setup["root"] / workdir),
            *extra,
        ]
    )


def manifest(store: Path, kind: str, rev: str = REV) -> Manifest:
    path = store / NS / NAME / f"rev-{rev}" / kind / "manifest.json"
    return Manifest.model_validate_json(path.read_text())


def test_train_then_evaluate(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    store = setup["store"]
    train_args = ("--epochs", "12", "--learning-rate", "2e-2", "--logging-steps", "1")
    assert job(setup, "train", "work-train", *train_args, "--save-steps", "4") == 0
    progress = events(capsys.readouterr().err, "Trained")
    assert progress and progress[0]["step"].startswith("1/")
    assert all(float(p["tokens_per_s"]) > 0 and float(p["eta_s"]) >= 0 for p in progress)

    # The adapter artifact: files listed in the manifest, inputs traced.
    adapter = manifest(store, "adapter")
    files = {f.path for f in adapter.files}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= files
    assert {"train_config.json", "metrics.json"} <= files
    assert adapter.inputs["dataset"].startswith("sha256:")
    assert adapter.inputs["base_model"] == str(setup["root"] / "model")
    adapter_dir = store / NS / NAME / f"rev-{REV}" / "adapter"
    assert json.loads((adapter_dir / "train_config.json").read_text())["method"] == "lora"

    # LoRA B matrices start at zero (peft's init): non-zero means the adapter was trained.
    weights = load_file(adapter_dir / "adapter_model.safetensors")
    lora_b = {k: v for k, v in weights.items() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())

    # The loss fell; packed padding-free batches carry no padding.
    metrics = json.loads((adapter_dir / "metrics.json").read_text())
    curve = [p["loss"] for p in metrics["loss_curve"]]
    steps = metrics["steps"]
    assert len(curve) == steps >= 8 and curve[-1] < curve[0]
    assert metrics["final_loss"] == curve[-1]
    assert metrics["non_padding_fraction"] == 1.0
    assert 0 < metrics["loss_token_fraction"] < 1  # prompts are masked out of the loss
    assert metrics["tokens_per_s"] > 0
    assert (store / NS / NAME / f"rev-{REV}" / "checkpoints" / "checkpoint-4" / "COMPLETE").exists()

    # What the trainer's own batches held: every passage of every document in full (the eval
    # services' documents too), and none of the held-out questions.
    data = json.loads((adapter_dir / "training_data.json").read_text())
    seen, mix = data["seen"], data["mix"]
    assert seen["documents_trained_fraction"] == metrics["documents_trained_fraction"] == 1.0
    assert seen["passages_trained"] == seen["passages_total"] == 8
    assert seen["eval_questions_checked"] == 8
    assert seen["eval_questions_seen_in_training"] == 0
    assert seen["examples_seen"] == seen["examples_total"] == 24 + 8  # QA + passages
    assert [p["name"] for p in mix["phases"]] == ["qa", "mixed"]
    assert mix["phases"][0]["examples_per_pass"] == {"qa": 24}
    assert mix["phases"][1]["examples_per_pass"] == {"qa": 24, "passage": 8}
    assert mix["phases"][1]["passes"] == 12
    assert adapter.details["mix"] == mix

    # A second call finds the adapter and does nothing.
    assert job(setup, "train", "work-train-again", *train_args) == 0
    (found,) = events(capsys.readouterr().err, "Found adapter")
    assert found["uri"].endswith(f"rev-{REV}/adapter")

    # An older revision "serving now": the same adapter, published under r0.
    upload_tree(adapter_dir, LocalStore(store), f"{NS}/{NAME}/rev-{OLD_REV}/adapter")
    assert job(setup, "evaluate", "work-eval", "--serving-revision", OLD_REV) == 0
    log = capsys.readouterr().err
    answered = {f["system"]: f["questions"] for f in events(log, "Answered")}
    assert answered == {
        "warm-up": "1/1",
        "candidate": "8/8",
        "baseline": "8/8",
        "base": "8/8",
        "serving": "8/8",
    }
    (evaluated,) = events(log, "Evaluated")
    assert evaluated["revision"] == REV and evaluated["questions"] == "8"

    eval_dir = store / NS / NAME / f"rev-{REV}" / "eval"
    report = EvalReport.model_validate_json((eval_dir / "report.json").read_text())
    systems = {"candidate", "baseline", "serving", "base"}
    assert set(report.aggregate) == systems
    # Each system's aggregate is the mean of its per-question scores of these answers.
    for system, scores in report.aggregate.items():
        for m in METRICS:
            mean = sum(q.scores[system].get(m) for q in report.questions) / len(report.questions)
            assert scores.get(m) == pytest.approx(mean)
    assert len(report.questions) == 8
    assert all(set(q.answers) == systems for q in report.questions)
    assert all(q.retrieved for q in report.questions)  # BM25 found passages for every question
    assert set(report.differences) == {"candidate-baseline", "candidate-serving", "candidate-base"}
    # The interval the gate decides on, and the diagnostics and costs beside it.
    diff = report.differences["candidate-baseline"]["token_f1"]
    assert diff.ci_low <= diff.mean <= diff.ci_high and diff.confidence == report.confidence
    assert report.diagnostics.retrieval_recall_at_k is not None
    assert report.diagnostics.questions_with_passage == 8
    assert report.diagnostics.context_tokens == 2048  # the tiny model's own, under maxModelLen
    for system in systems:
        cost = report.costs[system]
        assert cost.questions == 8 and cost.latency_p99_s >= cost.latency_p50_s > 0
        assert cost.mean_answer_tokens <= 12
    # The baseline's prompt carries the passages: it costs more tokens than the bare question.
    assert (
        report.costs["baseline"].mean_prompt_tokens > report.costs["candidate"].mean_prompt_tokens
    )
    assert all(q.prompt_tokens["baseline"] > q.prompt_tokens["candidate"] for q in report.questions)
    # The serving revision is the same adapter: same greedy answers, zero difference.
    assert all(q.answers["candidate"] == q.answers["serving"] for q in report.questions)
    assert report.differences["candidate-serving"]["token_f1"].mean == 0.0
    assert report.decoding.max_new_tokens == 12 and report.decoding.engine == "transformers"

    html = (eval_dir / "report.html").read_text()
    assert "<svg" in html and report.questions[0].question in html
    eval_manifest = manifest(store, "eval")
    assert {f.path for f in eval_manifest.files} == {"report.json", "report.html"}
    assert eval_manifest.details["verdict"] in {"Promoted", "Rejected"}
    assert eval_manifest.inputs["adapter"].endswith(f"rev-{REV}/adapter")
    assert eval_manifest.inputs["serving_adapter"].endswith(f"rev-{OLD_REV}/adapter")

    # The same request again: the report stands.
    assert job(setup, "evaluate", "work-eval-again", "--serving-revision", OLD_REV) == 0
    assert events(capsys.readouterr().err, "Found report")


def test_restarted_training_resumes_from_the_stored_checkpoint(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """A pod that dies after a checkpoint: a fresh workdir resumes from the store."""
    store = setup["store"]
    rev_dir = store / NS / NAME / f"rev-{REV}"
    shutil.rmtree(rev_dir / "checkpoints", ignore_errors=True)
    common = ("--force", "--learning-rate", "2e-2", "--logging-steps", "1", "--save-steps", "3")
    assert job(setup, "train", "work-first", "--max-steps", "3", *common) == 0
    capsys.readouterr()
    assert job(setup, "train", "work-restarted", "--max-steps", "5", *common) == 0
    log = capsys.readouterr().err
    assert "Restored checkpoint step=3" in log
    assert "Trained step=4/5" in log and "Trained step=1/" not in log
    assert manifest(store, "adapter").metrics["steps"] == 5
