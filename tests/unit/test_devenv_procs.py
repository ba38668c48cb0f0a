"""The dev environment's process bookkeeping: identities, the state file, and `down`."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from docmodel_devenv import cli, procs

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytest.fixture
def sleepers() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Start `sleep` processes in their own sessions (as `procs.start` does); kill leftovers."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait(5)


def sleeper(started: list[subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["sleep", "60"], start_new_session=True)
    started.append(process)
    return process


def recorded(process: subprocess.Popen[bytes]) -> procs.Identity:
    found = procs.identity(process.pid)
    assert found is not None
    return found


def test_identity_is_start_time_and_executable() -> None:
    me = procs.identity(os.getpid())
    assert me is not None
    assert me.exe == os.path.realpath(sys.executable)
    assert me.start_time > 0
    assert procs.is_running(me)
    assert not procs.is_running(replace(me, start_time=me.start_time + 1))
    assert not procs.is_running(replace(me, exe="/usr/bin/other"))


def test_a_recorded_pid_whose_start_time_differs_is_not_signalled(
    sleepers: list[subprocess.Popen[bytes]],
) -> None:
    process = sleeper(sleepers)
    genuine = recorded(process)
    assert procs.kill_recorded(replace(genuine, start_time=genuine.start_time + 1)) == "reused"
    assert procs.kill_recorded(replace(genuine, exe="/usr/bin/other")) == "reused"
    assert process.poll() is None
    assert procs.kill_recorded(genuine) == "killed"
    assert process.wait(5) == -9
    assert procs.kill_recorded(genuine) == "gone"


def test_down_signals_only_the_recorded_processes_and_cleans_up(
    sleepers: list[subprocess.Popen[bytes]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    up, reused, child = sleeper(sleepers), sleeper(sleepers), sleeper(sleepers)
    stale_up = recorded(up)
    stale_up = replace(stale_up, start_time=stale_up.start_time - 1)
    stale_child = recorded(reused)
    stale_child = replace(stale_child, start_time=stale_child.start_time - 1)
    workdir = tmp_path / "docmodel-devenv-x"
    (workdir / "logs").mkdir(parents=True)
    state = tmp_path / "state.json"
    state.write_text(
        json.dumps(
            {
                "up": asdict(stale_up),
                "workdir": str(workdir),
                "temporary": True,
                "processes": [asdict(stale_child), asdict(recorded(child))],
            }
        )
    )
    monkeypatch.setattr(cli, "state_file", lambda: state)
    assert cli._down(argparse.Namespace()) == 0
    assert child.wait(5) == -9
    assert up.poll() is None and reused.poll() is None  # their pids belong to others now
    assert not state.exists()
    assert not workdir.exists()


def test_down_keeps_a_workdir_that_was_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"up": None, "workdir": str(tmp_path), "temporary": False}))
    monkeypatch.setattr(cli, "state_file", lambda: state)
    assert cli._down(argparse.Namespace()) == 0
    assert tmp_path.is_dir() and not state.exists()


def test_started_children_are_recorded_until_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(procs, "install_handlers", lambda: None)
    state = tmp_path / "state.json"
    procs.record_to(state, workdir="w")
    try:
        # Processes this test session already runs (a shared control plane) are recorded too;
        # what matters is that this child is added, then removed.
        before = json.loads(state.read_text())["processes"]
        process = procs.start("sleep", ["sleep", "60"], tmp_path / "sleep.log")
        try:
            data = json.loads(state.read_text())
            assert data["workdir"] == "w"
            added = [p for p in data["processes"] if p not in before]
            assert added == [asdict(recorded(process))]
            assert added[0]["exe"].endswith("sleep")
        finally:
            procs.stop(process, grace=1.0)
        assert json.loads(state.read_text())["processes"] == before
    finally:
        procs.record_to(None)


def test_the_orphans_of_a_recorded_leader_that_exited_are_killed() -> None:
    leader = subprocess.Popen(
        ["sh", "-c", "sleep 60 & echo $!; read line"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert leader.stdout is not None and leader.stdin is not None
    orphan_pid = int(leader.stdout.readline())
    identity = recorded(leader)
    leader.stdin.close()
    leader.wait(5)
    leader.stdout.close()
    orphan = procs.identity(orphan_pid)
    try:
        assert orphan is not None and procs.is_running(orphan)
        assert procs.kill_recorded(identity) == "killed"
        deadline = time.monotonic() + 5
        while procs.is_running(orphan) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not procs.is_running(orphan)  # gone, or a zombie waiting for its new parent
    finally:
        if orphan is not None and procs.is_running(orphan):
            os.kill(orphan_pid, 9)
