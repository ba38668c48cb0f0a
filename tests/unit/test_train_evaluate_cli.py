"""The train and evaluate commands reject bad input up front, with exit codes and messages
that name the problem (no model is loaded on these paths)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from e2e.dataset_factory import docmodel_manifest, publish_dataset

from docmodel.artifacts import RevisionLayout
from docmodel.storage import LocalStore
from docmodel_trainer import modeling
from docmodel_trainer.cli import main
from docmodel_trainer.common import EXIT_BAD_INPUT, EXIT_NO_DATA


@pytest.fixture
def job(tmp_path: Path) -> tuple[Path, Path]:
    dm = tmp_path / "dm.yaml"
    dm.write_text(yaml.safe_dump(docmodel_manifest(tmp_path / "no-model")))
    return dm, tmp_path / "store"


def args(dm: Path, store: Path, command: str, *extra: str) -> list[str]:
    return [command, "--docmodel", str(dm), "--store", str(store), "--revision", "r1", *extra]


@pytest.mark.skipif(modeling.has_cuda(), reason="checks the CPU-only rejection of qlora")
def test_qlora_without_cuda_is_rejected(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    assert (
        main(args(dm, store, "train", "--method", "qlora", "--workdir", str(tmp_path / "w")))
        == EXIT_BAD_INPUT
    )
    err = capsys.readouterr().err
    assert "method qlora needs a CUDA GPU" in err and "--method lora" in err


def test_train_names_the_missing_dataset(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    assert main(args(dm, store, "train", "--workdir", str(tmp_path / "w"))) == EXIT_NO_DATA
    err = capsys.readouterr().err
    assert "reason=DatasetMissing" in err
    assert f"{store.resolve()}/docs/handbook/rev-r1/dataset" in err


def test_train_rejects_nonsense_settings(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    code = main(args(dm, store, "train", "--batch-size", "0", "--workdir", str(tmp_path / "w")))
    assert code == EXIT_BAD_INPUT
    assert "batch_size must be at least 1" in capsys.readouterr().err


def test_evaluate_names_the_missing_adapter(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    publish_dataset(LocalStore(store), RevisionLayout("docs", "handbook", "r1"), tmp_path / "ds")
    assert main(args(dm, store, "evaluate", "--workdir", str(tmp_path / "w"))) == EXIT_NO_DATA
    err = capsys.readouterr().err
    assert "reason=AdapterMissing" in err
    assert f"{store.resolve()}/docs/handbook/rev-r1/adapter" in err
    missing = tmp_path / "nowhere"
    code = main(
        args(dm, store, "evaluate", "--workdir", str(tmp_path / "w2"), "--adapter", str(missing))
    )
    assert code == EXIT_NO_DATA and str(missing) in capsys.readouterr().err


def test_evaluate_rejects_the_embedding_retriever(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    code = main(
        args(dm, store, "evaluate", "--retriever", "embedding", "--workdir", str(tmp_path / "w"))
    )
    assert code == EXIT_BAD_INPUT
    assert "retriever embedding is not available" in capsys.readouterr().err


def test_serving_flags_are_exclusive(job, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    with pytest.raises(SystemExit) as exc:
        main(args(dm, store, "evaluate", "--serving-revision", "r0", "--serving-adapter", "/x"))
    assert exc.value.code == 2
