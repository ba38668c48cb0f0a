"""Local mode's executor: the planner's actions carried out as local processes.

It decides nothing. Each pass it observes (a listing of the source, the revision's artifacts,
the steps it ran, the servers it started), asks `docmodel.plan.plan` what to do, records the
returned status (the state file is a `DocModelStatus`), and carries the actions out:

    StartStep     run `docmodel-trainer <step>` with the builder's arguments and environment
    DeleteJobs    forget the steps run for that revision
    Deploy        start `docmodel-server` with the builder's environment; wait until ready
    SwitchTraffic remember which revision answers
    RemoveServer  stop that revision's server

A laptop runs one thing at a time, so steps run before servers start: a pass whose plan starts
a step carries out only the step (and clean-ups); servers wait for a pass without one. Each
`local run` lists the source once at its start (a run is a check the user asked for), then
only when the planner says a check is due. The run ends when a plan has nothing left to do now.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from docmodel.api import DocModel, DocModelStatus, HistoryEntry, ServingStatus
from docmodel.builders import (
    STEPS,
    Step,
    StepCommand,
    StoreConfig,
    is_distributed,
    job_name,
    server_env,
    serving_digest,
    step_command,
)
from docmodel.plan import (
    Action,
    DeleteJobs,
    Deploy,
    JobState,
    Observed,
    Policy,
    RemoveServer,
    ServerState,
    StartStep,
    SwitchTraffic,
    reconcile_pass,
    target_revision,
)
from docmodel.revision import (
    RevisionArtifacts,
    SourceCheck,
    check_source,
    observe_revision,
    open_source,
)
from docmodel.storage import ObjectStore, read_json, write_json

log = logging.getLogger("docmodel.local")

LOG_TAIL_LINES = 20
MAX_PASSES = 50  # a lifecycle takes about ten; more means the plan does not converge


class LocalRunError(RuntimeError):
    """A step or server failed (exit 1)."""


def now() -> datetime:
    return datetime.now(UTC)


def trainer_argv(command: StepCommand, processes: int = 1) -> list[str]:
    """The local process of a step: the Job's `docmodel-trainer <args>`, with this Python; for
    distributed training (`processes` > 1) under torchrun on this machine, as the training
    engine runs it on the cluster's nodes."""
    trainer = ["-m", "docmodel_trainer.cli", *command.args]
    if processes > 1:
        launcher = ["-m", "torch.distributed.run", "--standalone", "--nnodes=1"]
        return [sys.executable, *launcher, f"--nproc-per-node={processes}", *trainer]
    return [sys.executable, *trainer]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# The state file
# --------------------------------------------------------------------------------------------


def state_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}/local-state.json"


def read_status(store: ObjectStore, key: str) -> DocModelStatus:
    """The recorded status; a state file from before statuses were recorded is converted."""
    if not store.exists(key):
        return DocModelStatus()
    raw = read_json(store, key)
    try:
        return DocModelStatus.model_validate(raw)
    except ValidationError:
        return _convert_old_state(raw, key)


def _convert_old_state(raw: object, key: str) -> DocModelStatus:
    """`{"serving": {"revision", "adapter"}, "history": [{"revision", "verdict", ...}]}`."""
    if not isinstance(raw, dict) or not isinstance(raw.get("history", []), list):
        raise LocalRunError(f"the local state {key} is neither a status nor an older state file")
    history = [
        HistoryEntry(
            revision=h["revision"],
            verdict=h.get("verdict"),
            reason=h.get("reason"),
            report_uri=h.get("report"),
        )
        for h in raw.get("history", [])
        if isinstance(h, dict) and "revision" in h
    ]
    serving = raw.get("serving")
    status = DocModelStatus(history=history)
    if isinstance(serving, dict) and serving.get("revision"):
        status.serving = ServingStatus(revision=serving["revision"])
    log.info("Converted older local state key=%s revisions=%d", key, len(history))
    return status


def write_status(store: ObjectStore, key: str, status: DocModelStatus) -> None:
    write_json(store, key, status.model_dump(mode="json", by_alias=True))


# --------------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------------


@dataclass
class LocalServer:
    process: subprocess.Popen[bytes]
    url: str
    created_at: datetime
    digest: str
    ready: bool = False
    message: str = ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def start_server(
    env: dict[str, str], url: str, served_name: str, deadline_s: float, digest: str = ""
) -> LocalServer:
    """Start `docmodel-server` and wait until it lists `served_name` (or exits, or the deadline
    passes)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "docmodel_server.cli"], env=env, start_new_session=True
    )
    server = LocalServer(process, url, now(), digest)
    ends = time.monotonic() + deadline_s
    try:
        while time.monotonic() < ends:
            if process.poll() is not None:
                server.message = f"the server exited with code {process.returncode} before ready"
                return server
            try:
                with urllib.request.urlopen(f"{url}/v1/models", timeout=5) as response:
                    if served_name in [m["id"] for m in json.load(response)["data"]]:
                        server.ready = True
                        return server
            except (urllib.error.URLError, OSError, ValueError):
                pass
            time.sleep(1)
    except BaseException:  # Ctrl-C or SIGTERM while waiting: the server must not outlive us
        server.stop()
        raise
    server.message = f"the server at {url} was not ready within {deadline_s:.0f}s"
    return server


def local_server_env(
    dm: DocModel, revision: str, store_uri: str, port: int, workdir: Path
) -> dict[str, str]:
    """The Deployment's server environment, bound to loopback and the local engine."""
    overrides = {
        "DOCMODEL_ENGINE": "local",
        "DOCMODEL_HOST": "127.0.0.1",
        "DOCMODEL_PORT": str(port),
        "DOCMODEL_WORKDIR": str(workdir),
    }
    env = dict(os.environ)
    env.update(
        {
            e.name: e.value or ""
            for e in server_env(dm, revision, StoreConfig(store_uri), overrides=overrides)
            if e.literal
        }
    )
    return env


# --------------------------------------------------------------------------------------------
# The executor
# --------------------------------------------------------------------------------------------


@dataclass
class LocalExecutor:
    dm: DocModel
    store: ObjectStore
    workdir: Path
    source_dir: Path | None = None
    port: int = 0
    jobs: dict[str, JobState] = field(default_factory=dict)
    job_revisions: dict[str, str] = field(default_factory=dict)  # job name -> revision
    servers: dict[str, LocalServer] = field(default_factory=dict)
    traffic: str | None = None
    reused_logged: bool = False
    step_seconds: dict[str, float] = field(default_factory=dict)  # step -> seconds, this run

    @property
    def store_config(self) -> StoreConfig:
        return StoreConfig(self.store.uri)

    @property
    def state_key(self) -> str:
        return state_key(self.dm.metadata.namespace, self.dm.metadata.name)

    # -- the loop -----------------------------------------------------------------------------

    def reconcile(self) -> DocModelStatus:
        """Pass after pass (`docmodel.plan.reconcile_pass`, this executor acting) until a plan
        has nothing to do now; each pass's status is recorded after its actions."""
        status = read_status(self.store, self.state_key)
        list_source = True  # a run is a check the user asked for
        for _ in range(MAX_PASSES):
            result = reconcile_pass(self.dm, None, status, self, now(), list_source=list_source)
            list_source = False
            status = result.plan.status
            write_status(self.store, self.state_key, status)
            for event in result.plan.events:
                level = logging.WARNING if event.type == "Warning" else logging.INFO
                log.log(level, "Event reason=%s: %s", event.reason, event.message)
            if not result.plan.actions:
                return status
        raise LocalRunError(f"the lifecycle did not settle within {MAX_PASSES} passes")

    # -- the executor's part of a pass ----------------------------------------------------------

    @property
    def store_uri(self) -> str:
        return self.store.uri

    @property
    def policy(self) -> Policy:
        return Policy()

    def order(self, actions: Sequence[Action]) -> Sequence[Action]:
        """Steps before servers: with a step to run, servers wait for a later pass."""
        if any(isinstance(a, StartStep) for a in actions):
            return [a for a in actions if isinstance(a, (StartStep, DeleteJobs))]
        return actions

    # -- observing ----------------------------------------------------------------------------

    def observe(
        self, dm: DocModel, status: DocModelStatus, check: SourceCheck | None, at: datetime
    ) -> Observed:
        spec = dm.spec
        target = target_revision(spec, status, check)
        serving = status.serving.revision if status.serving else None
        artifacts = RevisionArtifacts()
        jobs: dict[Step, JobState] = {}
        if target is not None:
            artifacts = observe_revision(
                self.store, spec, dm.metadata.namespace, dm.metadata.name, target, serving
            )
            for step in STEPS:
                name = job_name(dm, step, target, serving)
                if name in self.jobs:
                    jobs[step] = self.jobs[name]
            if artifacts.adapter and not self.reused_logged and "train" not in jobs:
                log.info("Reused adapter revision=%s (already trained)", target)
            self.reused_logged = True
        return Observed(
            now=at,
            source=check,
            artifacts=artifacts,
            jobs=jobs,
            job_revisions=frozenset(self.job_revisions.values()),
            servers={
                rev: ServerState(
                    ready=s.ready and s.process.poll() is None,
                    created_at=s.created_at,
                    serving_digest=s.digest,
                    endpoint=f"{s.url}/v1",
                    message=s.message,
                    failed=s.process.poll() is not None or not s.ready,
                )
                for rev, s in self.servers.items()
            },
            traffic=self.traffic,
        )

    def list_source(self, dm: DocModel) -> SourceCheck:
        spec = dm.spec
        source = open_source(spec, None if self.source_dir is None else str(self.source_dir))
        check = check_source(spec, source)
        if check.resolved is not None:
            log.info(
                "Listed source=%s documents=%d revision=%s",
                source.uri,
                len(check.resolved.selection.documents),
                check.resolved.revision,
            )
        return check

    # -- acting -------------------------------------------------------------------------------

    def act(self, dm: DocModel, action: Action, observed: Observed) -> None:
        """Carry one action out (`dm` is this executor's own DocModel)."""
        if isinstance(action, StartStep):
            self.run_step(action)
        elif isinstance(action, DeleteJobs):
            for name in [n for n, r in self.job_revisions.items() if r == action.revision]:
                self.jobs.pop(name, None)
                self.job_revisions.pop(name, None)
        elif isinstance(action, Deploy):
            self.deploy(action.revision)
        elif isinstance(action, SwitchTraffic):
            self.traffic = action.revision
            log.info("Switched traffic revision=%s", action.revision)
        elif isinstance(action, RemoveServer):
            server = self.servers.pop(action.revision, None)
            if server is not None:
                server.stop()
                log.info("Stopped server revision=%s reason=%s", action.revision, action.reason)

    def step_command(self, action: StartStep) -> StepCommand:
        return step_command(
            self.dm,
            action.step,
            action.revision,
            self.store_config,
            workdir=str(self.workdir / action.step),
            serving_revision=action.serving_revision,
            source_dir=None if self.source_dir is None else str(self.source_dir),
        )

    def run_step(self, action: StartStep) -> None:
        command = self.step_command(action)
        name = job_name(self.dm, action.step, action.revision, action.serving_revision)
        env = dict(os.environ)
        env.update(command.literal_env())
        log.info("Started step=%s revision=%s", action.step, action.revision)
        started = time.monotonic()
        tail: collections.deque[str] = collections.deque(maxlen=LOG_TAIL_LINES)
        processes = 1
        if action.step == "train" and is_distributed(self.dm):
            processes = self.dm.spec.training.distributed.world_size
            log.info("Training with %d processes (torchrun on this machine)", processes)
        argv = trainer_argv(command, processes)
        with subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        ) as process:
            assert process.stdout is not None
            for raw in process.stdout:
                sys.stderr.buffer.write(raw)
                sys.stderr.flush()
                tail.append(raw.decode(errors="replace").rstrip())
            code = process.wait()
        seconds = time.monotonic() - started
        self.step_seconds[action.step] = self.step_seconds.get(action.step, 0.0) + seconds
        self.job_revisions[name] = action.revision
        if code == 0:
            self.jobs[name] = JobState("Succeeded", exit_code=0, since=now())
            log.info("Finished step=%s seconds=%.1f", action.step, seconds)
        else:
            self.jobs[name] = JobState(
                "Failed",
                exit_code=code,
                message=f"docmodel-trainer {action.step} exited with code {code}",
                log_tail=tuple(line for line in tail if line),
                since=now(),
            )
            log.error("Failed step=%s exit_code=%d seconds=%.1f", action.step, code, seconds)

    def deploy(self, revision: str) -> None:
        old = self.servers.pop(revision, None)
        if old is not None:
            old.stop()
        port = self.port or free_port()
        env = local_server_env(
            self.dm, revision, self.store.uri, port, self.workdir / f"server-{revision}"
        )
        log.info("Started server revision=%s port=%d", revision, port)
        server = start_server(
            env,
            f"http://127.0.0.1:{port}",
            self.dm.metadata.name,
            float(self.dm.spec.serving.progress_deadline_seconds),
            serving_digest(self.dm),
        )
        self.servers[revision] = server
        if server.ready:
            log.info("Ready server revision=%s url=%s", revision, server.url)
        else:
            log.error("Failed server revision=%s: %s", revision, server.message)

    def stop_all(self) -> None:
        for server in self.servers.values():
            server.stop()
        self.servers.clear()
