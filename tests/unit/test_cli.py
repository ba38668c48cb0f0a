"""The `docmodel` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from docmodel_local.cli import main

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


def test_tiny_model_cache_key_follows_the_builder_settings_and_corpus(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Tests ask the trainer for a cached tiny model by key; the core never reads the
    trainer's source itself."""
    import argparse

    from docmodel_trainer import tinymodel_cli

    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "a.md").write_text("# A\n\nText.\n")
    parser = argparse.ArgumentParser()
    tinymodel_cli.add_arguments(parser)

    def key(*argv: str) -> str:
        return tinymodel_cli.cache_key(parser.parse_args(["--cache-dir", "x", *argv]))

    first = key("--corpus", str(corpus))
    assert first == key("--corpus", str(corpus))
    assert first != key("--corpus", str(corpus), "--hidden-size", "128")
    (corpus / "a.md").write_text("# A\n\nOther text.\n")
    assert first != key("--corpus", str(corpus))
    from docmodel_local import commands as local

    assert "trainer-image" not in Path(local.__file__).read_text()
