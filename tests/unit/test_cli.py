"""The `docmodel` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmodel.cli import main

from testkit.invalid_specs import ROOT, load_cases


def test_validate_accepts_the_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", *map(str, sorted((ROOT / "examples").glob("*.yaml")))]) == 0
    assert "valid DocModel default/handbook" in capsys.readouterr().out


def test_validate_names_the_bad_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    case = next(c for c in load_cases() if c.id == "negative-epochs")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(case.manifest))
    assert main(["validate", str(bad)]) == 1
    assert "spec.training.epochs" in capsys.readouterr().err


def test_validate_reports_unreadable_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "broken.yaml"
    bad.write_text("spec: [unclosed\n")
    assert main(["validate", str(bad)]) == 1
    assert "cannot read" in capsys.readouterr().err
