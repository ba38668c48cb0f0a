"""Checkpoints are resumed only by the training run that wrote them."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmodel.api import TrainingSpec
from docmodel.artifacts import RevisionLayout
from docmodel.storage import LocalStore
from docmodel_trainer import checkpoints, train
from docmodel_trainer.sft import TrainConfig

LAYOUT = RevisionLayout("ns", "dm", "abc123")


def _checkpoint(store: LocalStore, tmp_path: Path, step: int) -> None:
    local = tmp_path / f"local-{step}"
    local.mkdir()
    (local / "adapter_model.safetensors").write_bytes(b"weights %d" % step)
    checkpoints.upload_checkpoint(store, LAYOUT, local, step)


def _restored(store: LocalStore, tmp_path: Path) -> Path | None:
    return checkpoints.restore_checkpoint(store, LAYOUT, tmp_path / "out")


def test_the_same_run_resumes_from_its_newest_checkpoint(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    checkpoints.claim_checkpoints(store, LAYOUT, "run-a")
    _checkpoint(store, tmp_path, 2)
    _checkpoint(store, tmp_path, 4)
    checkpoints.claim_checkpoints(store, LAYOUT, "run-a")  # a restarted pod of the same run
    restored = _restored(store, tmp_path)
    assert restored is not None and restored.name == "checkpoint-4"
    assert (restored / "adapter_model.safetensors").read_bytes() == b"weights 4"


def test_another_run_of_the_revision_starts_afresh(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    checkpoints.claim_checkpoints(store, LAYOUT, "run-a")
    _checkpoint(store, tmp_path, 4)
    checkpoints.claim_checkpoints(store, LAYOUT, "run-b")
    assert _restored(store, tmp_path) is None
    keys = [o.key for o in store.list(checkpoints.checkpoint_prefix(LAYOUT))]
    assert keys == [f"{checkpoints.checkpoint_prefix(LAYOUT)}/{checkpoints.RUN_FILE}"]
    assert store.get_bytes(keys[0]) == b"run-b"


def test_the_run_id_follows_rows_settings_and_base_model() -> None:
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    cfg = TrainConfig(base_model="m")
    same = train.training_run_id(rows, cfg, "m")
    assert same == train.training_run_id([dict(r) for r in rows], TrainConfig(base_model="m"), "m")
    assert same != train.training_run_id([{**rows[0], "labels": [-100, -100, 3]}], cfg, "m")
    assert same != train.training_run_id(
        rows, TrainConfig(base_model="m", training=TrainingSpec(epochs=2)), "m"
    )
    assert same != train.training_run_id(rows, cfg, "other")
    # A restarted run may run longer, log and save at other steps: still the same run.
    longer = TrainConfig(base_model="m", max_steps=50, logging_steps=1, save_steps=3)
    assert same == train.training_run_id(rows, longer, "m")
    # So may its pod: resources and scheduling are not training settings.
    bigger = TrainingSpec.model_validate({"resources": {"memory": "96Gi"}})
    assert same == train.training_run_id(rows, TrainConfig(base_model="m", training=bigger), "m")


def test_the_workdir_keeps_only_this_runs_checkpoints(tmp_path: Path) -> None:
    out = tmp_path / "output"
    (out / "checkpoint-3").mkdir(parents=True)
    train._claim_output_dir(out, "run-a")  # unmarked: another run's, removed
    assert not (out / "checkpoint-3").exists()
    (out / "checkpoint-5").mkdir()
    train._claim_output_dir(out, "run-a")
    assert (out / "checkpoint-5").is_dir()
    train._claim_output_dir(out, "run-b")
    assert not (out / "checkpoint-5").exists()


def test_the_run_config_is_the_specs_training_with_the_flags_applied(tmp_path: Path) -> None:
    import argparse

    from docmodel.api import parse_docmodel
    from docmodel.storage import LocalStore
    from docmodel_trainer.common import JobContext, JobError

    dm = parse_docmodel(
        {
            "apiVersion": "docmodel.dev/v1alpha1",
            "kind": "DocModel",
            "metadata": {"name": "hb"},
            "spec": {
                "source": {"bucket": "docs"},
                "training": {"method": "lora", "epochs": 4, "lora": {"r": 32}, "batchSize": 4},
            },
        }
    )
    ctx = JobContext(dm, LocalStore(tmp_path), str(tmp_path), "r1", tmp_path)
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--epochs", "2", "--no-packing", "--max-seq-length", "64"])
    cfg = train.resolve_config(args, ctx)
    assert cfg.training == dm.spec.training.model_copy(
        update={"epochs": 2, "packing": False, "max_seq_length": 64}
    )
    assert (cfg.training.lora.r, cfg.training.batch_size, cfg.seed) == (32, 4, dm.spec.dataset.seed)
    record = cfg.record()
    assert (
        record["epochs"] == 2
        and record["lora"]["r"] == 32
        and record["base_model"] == (dm.spec.base_model.name)
    )
    assert "resources" not in record and "tolerations" not in record
    bad = parser.parse_args(["--batch-size", "0", "--save-steps", "0"])
    with pytest.raises(JobError, match="batch_size must be at least 1; save_steps must be"):
        train.resolve_config(bad, ctx)
