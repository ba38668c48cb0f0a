"""One logging setup; local mode rejects bad input with one line and exit 2."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import yaml

from docmodel.logs import JsonFormatter, setup_logging
from docmodel_local.cli import main

from testkit.invalid_specs import ROOT


def test_json_logs_keep_tracebacks() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "Failed", None, None)
        import sys

        record.exc_info = sys.exc_info()
    payload = json.loads(JsonFormatter().format(record))
    assert payload["msg"] == "Failed"
    assert "ValueError: boom" in payload["exception"]


def test_bad_log_level_falls_back_to_info(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCMODEL_LOG_LEVEL", "loud")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        setup_logging()
        assert root.level == logging.INFO
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


@pytest.fixture
def restore_logging() -> object:
    """`main` installs its own handler on the root logger; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _local(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["local", *args])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("command", ["run", "serve"])
def test_missing_docmodel_file_is_named(
    command: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    missing = tmp_path / "nope.yaml"
    code, text = _local([command, "--docmodel", str(missing), "--store", str(tmp_path)], capsys)
    assert code == 2
    assert str(missing) in text


def test_invalid_spec_names_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "local" / "docmodel.yaml").read_text())
    manifest["spec"]["source"]["bucket"] = "B"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(manifest))
    code, text = _local(["run", "--docmodel", str(bad), "--store", str(tmp_path / "s")], capsys)
    assert code == 2
    assert "spec.source.bucket" in text


def test_not_a_docmodel(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- just\n- a list\n")
    code, text = _local(["run", "--docmodel", str(bad)], capsys)
    assert code == 2
    assert "has no spec" in text


def test_missing_docs_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    code, text = _local(["run", "--docs", str(tmp_path / "nodocs")], capsys)
    assert code == 2
    assert "nodocs" in text and "does not exist" in text


def test_a_retriever_of_an_older_api_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: object
) -> None:
    manifest = yaml.safe_load((ROOT / "examples" / "local" / "docmodel.yaml").read_text())
    manifest["spec"]["evaluation"]["baseline"] = {"retriever": "bm25"}
    path = tmp_path / "dm.yaml"
    path.write_text(yaml.safe_dump(manifest))
    code, text = _local(
        [
            "run",
            "--docmodel",
            str(path),
            "--docs",
            str(ROOT / "examples" / "local" / "docs"),
            "--base-model",
            str(tmp_path),
            "--store",
            str(tmp_path / "s"),
        ],
        capsys,
    )
    assert code == 2
    assert "spec.evaluation.baseline.retriever" in text
    assert not (tmp_path / "s").exists()
