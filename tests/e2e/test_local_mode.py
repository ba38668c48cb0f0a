"""Local mode end to end: `docmodel local run` on the embedded demo, then `local serve`.

Runs the real commands as subprocesses (the demo's real model, SmolLM2-135M-Instruct, the
bundled docs, CPU): ingest, train, evaluate, the gate, and serving through the
OpenAI-compatible local server. The README's first command, as a new user runs it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from docmodel.api import DocModelStatus

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCMODEL = [sys.executable, "-m", "docmodel_local.cli"]


def _run(*args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DOCMODEL, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.mark.timeout(2400)  # the demo's training and evaluation on two cores, then serving
def test_local_run_goes_through_the_lifecycle_and_serves_on_request(tmp_path: Path) -> None:
    store = tmp_path / "store"
    first = _run("local", "run", "--store", str(store))
    assert first.returncode == 0, first.stderr[-3000:]
    verdict = re.search(r"Revision (\w+): (Promoted|Rejected) — (.+)", first.stdout)
    assert verdict, first.stdout
    revision, name, reason = verdict.groups()
    assert "token_f1" in reason and "RAG baseline" in reason
    for step in ("base-model", "ingest", "train", "evaluate"):
        assert f"Finished step={step}" in first.stderr
    # The closing lines: every system's scores, answers side by side, where the time went.
    assert re.search(
        r"^Scores on \d+ held-out questions \(gate metric: token_f1\)", first.stdout, re.M
    )
    for system in (
        "candidate (Retrieval)",
        "RAG baseline (Hybrid top-2)",
        "base model, closed-book",
    ):
        assert re.search(rf"^  {re.escape(system)}\s+0\.\d{{4}}", first.stdout, re.M), system
    assert "Held-out questions, answered side by side:" in first.stdout
    assert re.search(
        r"^Stage times: base model [\d.]+ s, ingest [\d.]+ s, train [\d.]+ s, "
        r"evaluate [\d.]+ s; total [\d.]+ s",
        first.stdout,
        re.M,
    ), first.stdout

    rev_dir = store / "local" / "handbook" / f"rev-{revision}"
    for kind in ("dataset", "adapter", "eval"):
        assert (rev_dir / kind / "manifest.json").is_file(), kind
    report = json.loads((rev_dir / "eval" / "report.json").read_text())
    assert set(report["aggregate"]) >= {"candidate", "baseline"}
    assert (rev_dir / "eval" / "report.html").is_file()
    state = json.loads((store / "local" / "handbook" / "local-state.json").read_text())
    assert state["history"][0]["revision"] == revision
    assert state["history"][0]["verdict"] == name
    if name == "Promoted":
        assert state["serving"]["revision"] == revision
        assert "Serving revision" in first.stdout
    else:
        assert state["serving"] is None
        assert f"docmodel local serve --revision {revision}" in first.stdout

    # The same docs and settings give the same revision: nothing is trained again.
    second = _run("local", "run", "--store", str(store))
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"Reused adapter revision={revision}" in second.stderr
    assert f"Reused revision {revision}: trained " in second.stdout  # said plainly, not as new
    assert "no step ran" in second.stdout
    assert "Finished step=train" not in second.stderr

    # Any trained revision can be inspected through the real server, without promoting it.
    served = _run("local", "serve", "--store", str(store), "--revision", revision, "--once")
    assert served.returncode == 0, served.stderr[-3000:]
    assert f"Serving revision {revision} as model 'handbook'" in served.stdout
    assert re.search(r"^A: ", served.stdout, re.MULTILINE)
    after = json.loads((store / "local" / "handbook" / "local-state.json").read_text())
    assert after["serving"] == state["serving"]
    DocModelStatus.model_validate(after)  # the state file is the DocModel's status

    # A promoted verdict (recorded here by hand: the demo's candidate rarely wins, see the
    # README) makes the planner deploy the revision's server, move traffic and report Ready.
    state_file = store / "local" / "handbook" / "local-state.json"
    status = DocModelStatus.model_validate_json(state_file.read_text())
    assert status.history[0].revision == revision
    status.history[0].verdict = "Promoted"
    assert status.candidate is not None
    status.candidate.verdict = "Promoted"
    state_file.write_text(status.model_dump_json(by_alias=True))

    served = _run("local", "run", "--store", str(store))
    assert served.returncode == 0, served.stderr[-3000:]
    assert f"Serving revision {revision} as model 'handbook'" in served.stdout
    assert re.search(r"^A: ", served.stdout, re.MULTILINE)
    assert f"Switched traffic revision={revision}" in served.stderr
    # Nothing retrained or re-evaluated (the base model is only looked up in the cache).
    assert not re.search(r"Started step=(ingest|train|evaluate)", served.stderr)
    after = DocModelStatus.model_validate_json(state_file.read_text())
    assert after.phase == "Ready"
    assert after.serving is not None and after.serving.revision == revision
    assert after.history[0].rollout == "RolledOut"
    ready = next(c for c in after.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("True", "Serving")


def test_local_serve_without_a_promoted_revision_says_what_to_do(tmp_path: Path) -> None:
    result = _run("local", "serve", "--store", str(tmp_path / "empty"), "--once", timeout=300)
    assert result.returncode == 1
    assert "has passed the gate" in result.stderr
    assert "--revision" in result.stderr


def test_local_serve_of_an_untrained_revision_names_it(tmp_path: Path) -> None:
    result = _run(
        "local",
        "serve",
        "--store",
        str(tmp_path),
        "--revision",
        "0123456789",
        "--once",
        timeout=300,
    )
    assert result.returncode == 1
    assert "revision 0123456789 has no trained adapter" in result.stderr
