"""Local mode executes the planner's actions with the builders' commands: the processes it
starts get the Jobs' arguments and environment (bar paths), and a failed step ends the run
with the planner's verdict on it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from docmodel.api import parse_docmodel
from docmodel.builders import STEPS, Owner, StoreConfig, build_job, server_env
from docmodel.plan import Observed, StartStep
from docmodel.storage import LocalStore, write_json
from docmodel_local import executor as localexec
from docmodel_local.cli import main
from docmodel_local.executor import LocalExecutor, local_server_env, read_status, state_key

from testkit.invalid_specs import ROOT

REV = "3f2a9c01de"
SERVING = "0000000001"
DEMO = ROOT / "examples" / "local" / "docmodel.yaml"


def demo(**spec: Any) -> Any:
    manifest = yaml.safe_load(DEMO.read_text())
    manifest["spec"]["source"]["secretRef"] = {"name": "docs-creds"}
    manifest["spec"]["baseModel"] = {"tokenSecretRef": {"name": "hf", "key": "token"}}
    manifest["spec"].update(spec)
    return parse_docmodel(manifest)


class FakeProcess:
    calls: list[tuple[list[str], dict[str, str]]] = []

    def __init__(self, argv: list[str], env: dict[str, str], **_: Any):
        FakeProcess.calls.append((argv, env))
        self.stdout: Iterator[bytes] = iter([b"Published\n"])

    def wait(self) -> int:
        return 0

    def __enter__(self) -> FakeProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def bar_paths(args: list[str]) -> list[str]:
    """Arguments with the values of path flags blanked, and local mode's --source-dir left out."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--source-dir":
            skip = True
            continue
        out.append("<path>" if out and out[-1] == "--workdir" else arg)
    return out


@pytest.mark.parametrize("step", STEPS)
def test_local_steps_run_the_builders_commands(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dm = demo()
    store = LocalStore(tmp_path / "store")
    executor = LocalExecutor(dm, store, tmp_path / "work", source_dir=tmp_path / "docs")
    FakeProcess.calls = []
    monkeypatch.setattr(localexec.subprocess, "Popen", FakeProcess)
    serving = SERVING if step == "evaluate" else None
    action = StartStep(step, REV, serving)  # type: ignore[arg-type]
    executor.act(dm, action, Observed(now=localexec.now()))

    ((argv, env),) = FakeProcess.calls
    job = build_job(
        dm,
        Owner("handbook", "local", "uid"),
        step,
        REV,
        StoreConfig(store.uri),
        "trainer:0",  # type: ignore[arg-type]
        serving_revision=serving,
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert argv[:3] == [sys.executable, "-m", "docmodel_trainer.cli"]
    assert bar_paths(argv[3:]) == bar_paths(container["args"])
    if step == "ingest":
        assert argv[-2:] == ["--source-dir", str(tmp_path / "docs")]
    for var in container["env"]:
        if "value" in var:
            assert env[var["name"]] == var["value"], var["name"]
        else:  # a Secret's key: local processes take it from their own environment
            assert "secretKeyRef" in var["valueFrom"]
            assert env.get(var["name"]) == localexec.os.environ.get(var["name"])
    assert executor.jobs[job["metadata"]["name"]].phase == "Succeeded"


def test_local_server_gets_the_deployments_environment(tmp_path: Path) -> None:
    dm = demo()
    env = local_server_env(dm, REV, str(tmp_path), 8123, tmp_path / "srv")
    for var in server_env(dm, REV, StoreConfig(str(tmp_path))):
        if var.literal and var.name not in ("DOCMODEL_PORT", "DOCMODEL_WORKDIR"):
            assert env[var.name] == var.value, var.name
    assert (env["DOCMODEL_ENGINE"], env["DOCMODEL_HOST"], env["DOCMODEL_PORT"]) == (
        "local",
        "127.0.0.1",
        "8123",
    )


def test_older_state_file_is_converted(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    key = state_key("local", "handbook")
    write_json(
        store,
        key,
        {
            "serving": {"revision": REV, "adapter": "/x/adapter"},
            "history": [{"revision": REV, "verdict": "Promoted", "reason": "won", "report": "r"}],
        },
    )
    status = read_status(store, key)
    assert status.serving is not None and status.serving.revision == REV
    assert (status.history[0].revision, status.history[0].verdict) == (REV, "Promoted")


@pytest.fixture
def restore_logging() -> Iterator[None]:
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_step_without_usable_data_fails_the_run_with_the_planners_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    empty = tmp_path / "docs"
    (empty / "notes").mkdir(parents=True)
    (empty / "notes" / "image.png").write_bytes(b"\x89PNG")
    store = tmp_path / "store"
    code = main(
        [
            "local",
            "run",
            "--docmodel",
            str(DEMO),
            "--docs",
            str(empty),
            "--base-model",
            str(tmp_path / "unused-model"),
            "--store",
            str(store),
        ]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "Failed at ingest — NoUsableData" in out
    status = read_status(LocalStore(store), state_key("local", "handbook"))
    assert status.phase == "Failed"
    assert status.last_failure is not None
    assert (status.last_failure.stage, status.last_failure.exit_code) == ("ingest", 3)
    assert any("no documents" in line for line in status.last_failure.log_tail)
