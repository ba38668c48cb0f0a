"""The train and evaluate commands reject bad input up front, with exit codes and messages
that name the problem (no model is loaded on these paths): bad settings, missing or corrupted
artifacts, a base model that cannot be had; and evaluate keeps a report only for what it scored."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from docmodel.artifacts import Manifest, RevisionLayout, publish_dir
from docmodel.storage import LocalStore
from docmodel_trainer import fetch, modeling
from docmodel_trainer.cli import main
from docmodel_trainer.common import (
    EXIT_BAD_INPUT,
    EXIT_NO_DATA,
    EXIT_STORAGE,
    EXIT_UPSTREAM,
    JobError,
)
from docmodel_trainer.evaluate import report_covers

from testkit.dataset_factory import docmodel_manifest, publish_dataset
from testkit.logs import events

LAYOUT = RevisionLayout("docs", "handbook", "r1")


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


def test_evaluate_refuses_a_retriever_the_dataset_was_not_indexed_for(
    job, tmp_path, capsys
) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    publish_dataset(LocalStore(store), RevisionLayout("docs", "handbook", "r1"), tmp_path / "ds")
    code = main(
        args(dm, store, "evaluate", "--retriever", "Dense", "--workdir", str(tmp_path / "w"))
    )
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "retriever Dense needs the passages' embeddings" in err
    assert "was indexed for BM25" in err and "reason=RetrieverUnavailable" in err


def test_evaluate_names_a_dataset_without_a_passage_index(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    local = LocalStore(store)
    layout = RevisionLayout("docs", "handbook", "r1")
    publish_dataset(local, layout, tmp_path / "ds")
    local.delete(layout.key("dataset", "passage-index.json"))
    code = main(args(dm, store, "evaluate", "--workdir", str(tmp_path / "w")))
    assert code == EXIT_BAD_INPUT
    assert "has no passage index" in capsys.readouterr().err


def test_serving_flags_are_exclusive(job, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    with pytest.raises(SystemExit) as exc:
        main(args(dm, store, "evaluate", "--serving-revision", "r0", "--serving-adapter", "/x"))
    assert exc.value.code == 2


# -- the base model ---------------------------------------------------------------------------


@pytest.mark.parametrize("load", [modeling.load_tokenizer, modeling.load_model])
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("/nonexistent/model", "base model /nonexistent/model is not a directory"),
        ("./no-such-dir", "base model ./no-such-dir is not a directory"),
        ("not a model id!", "is neither a local directory nor a valid Hugging Face model id"),
        ("org/team/model", "is neither a local directory nor a valid Hugging Face model id"),
    ],
)
def test_base_model_that_is_no_model_is_bad_input(load, name, message) -> None:  # type: ignore[no-untyped-def]
    kwargs = {"quantize_4bit": False} if load is modeling.load_model else {}
    with pytest.raises(JobError) as exc:
        load(name, **kwargs)
    assert exc.value.exit_code == EXIT_BAD_INPUT and message in str(exc.value)


@pytest.mark.parametrize("load", [modeling.load_tokenizer, modeling.load_model])
def test_directory_without_a_model_is_bad_input(load, tmp_path) -> None:  # type: ignore[no-untyped-def]
    kwargs = {"quantize_4bit": False} if load is modeling.load_model else {}
    with pytest.raises(JobError) as exc:
        load(str(tmp_path), **kwargs)
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert f"base model directory {tmp_path} has no config.json" in str(exc.value)

    # A config alone: no tokenizer files, no weights.
    (tmp_path / "config.json").write_text(
        '{"model_type": "llama", "vocab_size": 64, "hidden_size": 16, "intermediate_size": 32,'
        ' "num_hidden_layers": 1, "num_attention_heads": 2, "num_key_value_heads": 1}'
    )
    with pytest.raises(JobError) as exc:
        load(str(tmp_path), **kwargs)
    assert exc.value.exit_code == EXIT_BAD_INPUT
    assert f"base model directory {tmp_path} does not hold a loadable model" in str(exc.value)


@pytest.mark.parametrize("load", [modeling.load_tokenizer, modeling.load_model])
def test_hub_model_that_cannot_be_fetched_is_an_upstream_failure(load, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    kwargs = {"quantize_4bit": False} if load is modeling.load_model else {}
    with pytest.raises(JobError) as exc:
        load("docmodel-tests/no-such-model", **kwargs)
    assert exc.value.exit_code == EXIT_UPSTREAM and exc.value.reason == "BaseModelUnavailable"
    assert "base model docmodel-tests/no-such-model could not be found locally or fetched" in str(
        exc.value
    )


def test_train_names_the_missing_base_model(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    publish_dataset(LocalStore(store), LAYOUT, tmp_path / "ds")
    code = main(args(dm, store, "train", "--method", "lora", "--workdir", str(tmp_path / "w")))
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "reason=BaseModelMissing" in err and f"{tmp_path / 'no-model'} is not a directory" in err


# -- downloaded artifacts are checked against their manifests --------------------------------


def test_tampered_dataset_file_is_named(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    publish_dataset(LocalStore(store), LAYOUT, tmp_path / "ds")
    stored = store / LAYOUT.dir("dataset") / "train.jsonl"
    stored.write_text(stored.read_text().replace("Port", "Gate"))  # same size, other bytes
    code = main(args(dm, store, "train", "--method", "lora", "--workdir", str(tmp_path / "w")))
    assert code == EXIT_STORAGE
    err = capsys.readouterr().err
    assert "reason=ChecksumMismatch" in err and "file train.jsonl" in err and "sha256" in err
    assert f"{store.resolve()}/docs/handbook/rev-r1/dataset" in err


def test_tampered_or_missing_adapter_file_is_named(tmp_path) -> None:
    src = tmp_path / "adapter"
    src.mkdir()
    (src / "adapter_config.json").write_text('{"r": 8}')
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    store = LocalStore(tmp_path / "store")
    uri = publish_dir(src, store, LAYOUT, Manifest(kind="adapter", revision="r1"))
    fetch.fetch_adapter(uri, tmp_path / "ok")  # untouched: fetched

    stored = tmp_path / "store" / LAYOUT.dir("adapter") / "adapter_model.safetensors"
    stored.write_bytes(b"weights, truncated")
    with pytest.raises(JobError) as exc:
        fetch.fetch_adapter(uri, tmp_path / "tampered")
    assert exc.value.exit_code == EXIT_STORAGE
    assert f"file adapter_model.safetensors of the artifact at {uri} has 18 bytes" in str(exc.value)

    stored.unlink()
    with pytest.raises(JobError) as exc:
        fetch.fetch_adapter(uri, tmp_path / "missing")
    assert exc.value.exit_code == EXIT_STORAGE
    assert f"file adapter_model.safetensors of the artifact at {uri} is missing" in str(exc.value)


# -- an existing report stands only for what it scored ----------------------------------------

CANDIDATE, SERVING = "/store/rev-r1/adapter", "/store/rev-r0/adapter"


@pytest.mark.parametrize(
    ("inputs", "adapter", "serving", "covers"),
    [
        ({"adapter": CANDIDATE}, CANDIDATE, None, True),
        ({"adapter": CANDIDATE, "serving_adapter": SERVING}, CANDIDATE, SERVING, True),
        ({"adapter": CANDIDATE}, CANDIDATE, SERVING, False),  # no serving scores yet
        ({"adapter": CANDIDATE, "serving_adapter": SERVING}, CANDIDATE, None, False),
        ({"adapter": CANDIDATE, "serving_adapter": SERVING}, CANDIDATE, "/other", False),
        ({"adapter": "/elsewhere", "serving_adapter": SERVING}, CANDIDATE, SERVING, False),
    ],
)
def test_report_covers(inputs, adapter, serving, covers) -> None:  # type: ignore[no-untyped-def]
    manifest = Manifest(kind="eval", revision="r1", inputs=inputs)
    assert report_covers(manifest, adapter_uri=adapter, serving_uri=serving) is covers


def test_report_under_other_evaluation_settings_is_redone() -> None:
    from docmodel import api
    from docmodel.digests import evaluation_digest

    spec = api.parse_spec({"source": {"bucket": "docs"}})
    more = api.parse_spec({"source": {"bucket": "docs"}, "evaluation": {"maxQuestions": 500}})
    gate_only = api.parse_spec(
        {"source": {"bucket": "docs"}, "evaluation": {"minImprovement": 0.3, "metric": "rouge_l"}}
    )
    inputs = {"adapter": CANDIDATE, "evaluation": evaluation_digest(spec)}
    manifest = Manifest(kind="eval", revision="r1", inputs=inputs)
    covers = lambda s: report_covers(  # noqa: E731
        manifest, adapter_uri=CANDIDATE, serving_uri=None, evaluation=evaluation_digest(s)
    )
    assert covers(spec) is True
    assert covers(gate_only) is True  # the verdict is recomputed from the report's scores
    assert covers(more) is False


def test_evaluate_redoes_a_report_without_the_serving_scores(job, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    local = LocalStore(store)
    publish_dataset(local, LAYOUT, tmp_path / "ds")
    report = tmp_path / "report"
    report.mkdir()
    (report / "report.json").write_text("{}")
    adapter_uri = f"{local.uri}/{LAYOUT.dir('adapter')}"
    from docmodel.digests import evaluation_digest
    from docmodel_trainer.common import load_docmodel

    scored_under = evaluation_digest(load_docmodel(dm).spec)
    publish_dir(
        report,
        local,
        LAYOUT,
        Manifest(
            kind="eval", revision="r1", inputs={"adapter": adapter_uri, "evaluation": scored_under}
        ),
    )

    # The same request as the report's: it stands.
    assert main(args(dm, store, "evaluate", "--workdir", str(tmp_path / "w1"))) == 0
    assert events(capsys.readouterr().err, "Found report")

    # Asked to score a serving revision too: evaluated again (and here stopped by the absent
    # candidate adapter, before any model is loaded).
    code = main(
        args(dm, store, "evaluate", "--serving-revision", "r0", "--workdir", str(tmp_path / "w2"))
    )
    assert code == EXIT_NO_DATA
    err = capsys.readouterr().err
    (again,) = events(err, "Found report of other adapters or settings")
    assert again["scored_serving"] == "none" and again["serving"].endswith("rev-r0/adapter")
    (failed,) = events(err, "Failed")
    assert failed["reason"] == "AdapterMissing"

    # The same settings through a flag that changes them: evaluated again.
    code = main(args(dm, store, "evaluate", "--top-k", "2", "--workdir", str(tmp_path / "w3")))
    assert code == EXIT_NO_DATA
    assert events(capsys.readouterr().err, "Found report of other adapters or settings")
    # And a flag that repeats the spec's value: the report stands.
    top_k = load_docmodel(dm).spec.evaluation.baseline.top_k
    code = main(
        args(dm, store, "evaluate", "--top-k", str(top_k), "--workdir", str(tmp_path / "w4"))
    )
    assert code == 0 and events(capsys.readouterr().err, "Found report")


@pytest.mark.parametrize("flag", ["--top-k", "--max-questions", "--max-new-tokens"])
def test_evaluate_refuses_a_zero_or_negative_setting(job, tmp_path, capsys, flag) -> None:  # type: ignore[no-untyped-def]
    dm, store = job
    for value in ("0", "-3"):
        code = main(args(dm, store, "evaluate", flag, value, "--workdir", str(tmp_path / "w")))
        assert code == 2
        assert f"{flag} must be positive (got {value})" in capsys.readouterr().err
