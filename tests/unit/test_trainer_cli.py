"""`docmodel-trainer`'s own argument handling: --config files and the scratch directory.

The command's `run` is replaced by a stub that records the arguments it got, so nothing is
fetched, parsed or trained here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from docmodel_trainer import ingest
from docmodel_trainer.cli import main
from docmodel_trainer.common import EXIT_BAD_INPUT


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[argparse.Namespace]:
    """The arguments `ingest` runs with; the scratch directory's state recorded while it runs."""
    calls: list[argparse.Namespace] = []

    def run(args: argparse.Namespace) -> int:
        args.workdir_existed = args.workdir is not None and args.workdir.is_dir()
        calls.append(args)
        return 0

    monkeypatch.setattr(ingest, "run", run)
    monkeypatch.delenv("DOCMODEL_WORKDIR", raising=False)
    return calls


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_config_fills_the_commands_flags(tmp_path, seen) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tmp_path, "workers: 3\nstore: s3://bucket/artifacts\nrevision-file: rev.txt\n")
    assert main(["ingest", "--config", str(cfg), "--workdir", str(tmp_path / "w")]) == 0
    args = seen[-1]
    assert args.workers == 3 and isinstance(args.workers, int)
    assert args.store == "s3://bucket/artifacts"
    assert args.revision_file == Path("rev.txt")  # converted by the flag's type


def test_flags_on_the_command_line_win(tmp_path, seen) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tmp_path, "workers: 3\nstore: /from/config\n")
    argv = ["ingest", "--workers", "5", "--config", str(cfg), "--workdir", str(tmp_path / "w")]
    assert main(argv) == 0
    assert seen[-1].workers == 5 and seen[-1].store == "/from/config"


def test_unknown_keys_are_named(tmp_path, seen, capsys) -> None:  # type: ignore[no-untyped-def]
    cfg = config(tmp_path, "workers: 3\nmax_steps: 10\nlearning-rate: 0.1\n")  # train's flags
    assert main(["ingest", "--config", str(cfg)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "reason=BadConfig" in err and "unknown keys for command ingest" in err
    assert "learning-rate, max_steps" in err
    assert not seen


@pytest.mark.parametrize("text", ["- workers\n- 3\n", "just text\n", "3\n"])
def test_config_must_be_a_mapping(tmp_path, seen, capsys, text) -> None:  # type: ignore[no-untyped-def]
    assert main(["ingest", "--config", str(config(tmp_path, text))]) == EXIT_BAD_INPUT
    assert "must hold a mapping" in capsys.readouterr().err
    assert not seen


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("log-format: xml\n", "argument --log-format: invalid choice: 'xml'"),
        ("workers: many\n", "argument --workers: invalid int value: 'many'"),
        ("no-cache: maybe\n", "argument --no-cache: ignored explicit argument 'maybe'"),
        ("workers: true\n", "argument --workers: expected one argument"),
    ],
)
def test_config_values_are_checked_by_argparse_like_flags(
    tmp_path, seen, capsys, text, message
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exc:
        main(["ingest", "--config", str(config(tmp_path, text))])
    assert exc.value.code == EXIT_BAD_INPUT
    assert message in capsys.readouterr().err
    assert not seen


def test_config_list_values_and_nested_configs_are_refused(tmp_path, seen, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["ingest", "--config", str(config(tmp_path, "workers: [1, 2]\n"))]) == 2
    assert "workers must be a single value" in capsys.readouterr().err
    assert main(["ingest", "--config", str(config(tmp_path, "config: other.yaml\n"))]) == 2
    assert "cannot name another config file" in capsys.readouterr().err
    assert not seen


def test_config_booleans_set_or_leave_a_switch(tmp_path, seen) -> None:  # type: ignore[no-untyped-def]
    work = ["--workdir", str(tmp_path / "w"), "--store", str(tmp_path / "s")]
    assert main(["ingest", "--config", str(config(tmp_path, "no-cache: true\n")), *work]) == 0
    assert seen[-1].no_cache is True
    assert main(["ingest", "--config", str(config(tmp_path, "no_cache: false\n")), *work]) == 0
    assert seen[-1].no_cache is False


def test_the_config_merge_reads_no_private_argparse_state() -> None:
    import inspect
    import re

    from docmodel_trainer import common

    source = inspect.getsource(common.apply_config_file)
    assert not re.search(r"\._[a-z]", source), "reads a private attribute"


def test_unreadable_config_is_rejected(tmp_path, seen, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["ingest", "--config", str(tmp_path / "missing.yaml")]) == EXIT_BAD_INPUT
    assert "cannot read config file" in capsys.readouterr().err


def test_temporary_workdir_is_removed_when_the_command_ends(seen) -> None:  # type: ignore[no-untyped-def]
    assert main(["ingest"]) == 0
    args = seen[-1]
    assert args.workdir_existed and args.workdir.name.startswith("docmodel-")
    assert not args.workdir.exists()


def test_given_workdir_is_kept(tmp_path, seen, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    given = tmp_path / "given"
    given.mkdir()
    (given / "checkpoint").write_text("resume from me")
    assert main(["ingest", "--workdir", str(given)]) == 0
    assert seen[-1].workdir == given and (given / "checkpoint").is_file()

    # DOCMODEL_WORKDIR is left for the job context to use, and kept too.
    monkeypatch.setenv("DOCMODEL_WORKDIR", str(given))
    assert main(["ingest"]) == 0
    assert seen[-1].workdir is None and (given / "checkpoint").is_file()


def test_job_settings_come_from_the_environment_and_flags_win(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from docmodel_trainer.common import JobError, JobSettings

    monkeypatch.setenv("DOCMODEL_STORE", str(tmp_path / "store"))
    monkeypatch.setenv("DOCMODEL_REVISION", "")  # empty counts as unset
    monkeypatch.setenv("DOCMODEL_TEACHER_API_KEY", "sk-env")
    settings = JobSettings.read()
    assert settings.store == str(tmp_path / "store") and settings.revision is None
    assert "sk-env" not in repr(settings)
    monkeypatch.setenv("DOCMODEL_LOG_FORMAT", "xml")
    with pytest.raises(JobError, match="DOCMODEL_LOG_FORMAT"):
        JobSettings.read()
