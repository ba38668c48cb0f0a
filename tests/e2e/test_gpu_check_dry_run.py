"""The prepared GPU check, dry: every part of bench/gpu/check.sh runs on CPU on tiny shapes,
within its limit, and writes the results the GPU run would."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_cpu_dry_run_runs_every_part_and_writes_the_results(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path)}
    run = subprocess.run(
        ["bash", str(ROOT / "bench/gpu/check.sh"), "--cpu-dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    log = (tmp_path / "check.log").read_text() if (tmp_path / "check.log").exists() else ""
    assert run.returncode == 0, run.stdout + run.stderr + log[-4000:]
    parts = [line for line in run.stdout.splitlines() if line.startswith("part ")]
    assert [p.split(":")[0] for p in parts] == [
        "part install",
        "part gpu_tests",
        "part train",
        "part eval",
        "part profile",
    ]
    assert all(": ok in " in p for p in parts), parts
    train = json.loads((tmp_path / "train_throughput.json").read_text())
    assert train["mode"] == "cpu-smoke" and train["gpu"] is None
    assert train["ratio"] > 0 and 0 < train["non_padding_fraction"] <= 1
    evaluation = json.loads((tmp_path / "eval_throughput.json").read_text())
    assert evaluation["ratio"] > 0
    assert "Self CPU" in (tmp_path / "profile.txt").read_text()
    assert f"train_throughput ratio={train['ratio']}" in run.stdout
    assert len(list(tmp_path.iterdir())) <= 8  # what the GPU machine sends back
