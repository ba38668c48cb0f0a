"""The real 4-bit QLoRA path (bitsandbytes NF4, bf16 adapters) on a tiny Llama. Needs CUDA."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from docmodel.artifacts import RevisionLayout
from docmodel.report import EvalReport
from docmodel.storage import LocalStore

from testkit.dataset_factory import docmodel_manifest, publish_dataset, write_corpus

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_base_weights_load_in_nf4(tmp_path: Path) -> None:
    from docmodel_trainer import modeling
    from docmodel_trainer.tinymodel import build_tiny_llama

    path = build_tiny_llama(tmp_path / "model", hidden_size=128)
    model = modeling.load_model(str(path), quantize_4bit=True)
    proj = model.model.layers[0].self_attn.q_proj
    assert type(proj).__name__ == "Linear4bit"
    assert proj.weight.quant_type == "nf4"
    # Frozen non-quantized weights stay bf16: nothing is up-cast to fp32.
    assert model.model.norm.weight.dtype == torch.bfloat16
    assert model.lm_head.weight.dtype == torch.bfloat16


def test_qlora_train_and_evaluate(tmp_path: Path) -> None:
    from docmodel_trainer.cli import main
    from docmodel_trainer.tinymodel import build_tiny_llama

    corpus = write_corpus(tmp_path / "corpus")
    model = build_tiny_llama(tmp_path / "model", corpus=corpus, vocab_size=400, hidden_size=128)
    store = tmp_path / "store"
    publish_dataset(LocalStore(store), RevisionLayout("docs", "handbook", "r1"), tmp_path / "ds")
    dm = tmp_path / "dm.yaml"
    dm.write_text(yaml.safe_dump(docmodel_manifest(model, method="qlora", resources={"gpu": 1})))
    base = ["--docmodel", str(dm), "--store", str(store), "--revision", "r1"]
    steps = ["--epochs", "12", "--learning-rate", "2e-2", "--logging-steps", "1"]
    assert main(["train", *base, "--workdir", str(tmp_path / "w1"), *steps]) == 0
    rev = store / "docs" / "handbook" / "rev-r1"
    metrics = json.loads((rev / "adapter" / "metrics.json").read_text())
    assert metrics["final_loss"] < metrics["initial_loss"]
    assert metrics["peak_gpu_gib"] > 0 and metrics["non_padding_fraction"] == 1.0
    # The same training data as on CPU: every passage in full, no held-out question.
    assert metrics["documents_trained_fraction"] == 1.0
    assert metrics["eval_questions_seen_in_training"] == 0
    assert (
        main(["evaluate", *base, "--workdir", str(tmp_path / "w2"), "--engine", "transformers"])
        == 0
    )
    report = EvalReport.model_validate_json((rev / "eval" / "report.json").read_text())
    assert set(report.aggregate) == {"candidate", "baseline", "base"}
