"""One pod on the local node: its containers run as local processes, or as Podman containers
from the pod's images (`containers.ContainerRuntime`), probed and reported the way the kubelet
reports them. With `hosts`, the pod gets the kubelet's managed /etc/hosts (kept up to date with
the Service names of its namespace, `podenv.hosts_file`) and its own hostname: a process runs in
a private mount and UTS namespace (`podenv.in_pod_namespaces`), a container gets the file
mounted."""

from __future__ import annotations

import contextlib
import datetime
import logging
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs
from .containers import ContainerConfigError, ContainerRuntime, ImageNeverPulled, Volumes
from .kubeapi import ApiError, KubeApi
from .podenv import (
    EnvError,
    cluster_names,
    container_env,
    expand,
    hosts_file,
    in_pod_namespaces,
    pod_hostname,
    write_in_place,
)

log = logging.getLogger(__name__)

Obj = dict[str, Any]
TERMINATION_MESSAGE_LINES = 20


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def tail(path: Path, offset: int, lines: int = TERMINATION_MESSAGE_LINES) -> str:
    with path.open("rb") as file:
        file.seek(offset)
        text = file.read().decode(errors="replace")
    return "\n".join(text.splitlines()[-lines:])[-4096:]


@dataclass
class Probe:
    """Consecutive-result bookkeeping for one readiness or liveness probe."""

    spec: Obj
    started: float
    next_due: float = 0.0
    successes: int = 0
    failures: int = 0
    ok: bool = False

    def due(self, at: float) -> bool:
        delay = float(self.spec.get("initialDelaySeconds", 0))
        return at >= max(self.next_due, self.started + delay)

    def record(self, success: bool, at: float) -> None:
        self.next_due = at + self.spec.get("periodSeconds", 10)
        if success:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.spec.get("successThreshold", 1):
                self.ok = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.spec.get("failureThreshold", 3):
                self.ok = False


@dataclass
class Container:
    spec: Obj
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    log_offset: int = 0
    restart_count: int = 0
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    restart_at: float = 0.0
    runtime_name: str = ""  # the Podman container's name (container mode)
    container_id: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def started(self) -> bool:
        """Running, and past its startup probe if it has one."""
        return self.running and (self.startup is None or self.startup.ok)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        return self.readiness.ok if self.readiness else True

    def status(self) -> Obj:
        status: Obj = {
            "name": self.name,
            "image": self.spec.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.started,
            "restartCount": self.restart_count,
            "state": self.state,
            "lastState": self.last_state,
        }
        if self.process is not None:
            self.container_id = (
                f"podman://{self.runtime_name}"
                if self.runtime_name
                else f"docmodel-local://{self.process.pid}"
            )
        if self.container_id:  # kept after the container ends, as the kubelet reports it
            status["containerID"] = self.container_id
        return status


class PodWorker(threading.Thread):
    """Runs one pod until it finishes or is deleted; reports its status."""

    def __init__(
        self,
        api: KubeApi,
        pod: Obj,
        pod_ip: str,
        host_ip: str,
        workdir: Path,
        path_prefix: list[Path],
        extra_env: dict[str, str],
        runtime: ContainerRuntime | None = None,
        hosts: bool = False,
    ) -> None:
        metadata = pod["metadata"]
        super().__init__(name=f"pod-{metadata['namespace']}-{metadata['name']}", daemon=True)
        self.api, self.pod, self.pod_ip, self.host_ip = api, pod, pod_ip, host_ip
        self.workdir, self.path_prefix, self.extra_env = workdir, path_prefix, extra_env
        self.runtime = runtime
        self.volumes: Volumes | None = None
        self.deleting = threading.Event()
        self.killed = threading.Event()
        self.finished = threading.Event()
        self.started_at = now()
        self.containers = [
            Container(spec, workdir / f"{spec['name']}.log") for spec in pod["spec"]["containers"]
        ]
        self.init_containers = [
            Container(spec, workdir / f"{spec['name']}.log")
            for spec in pod["spec"].get("initContainers", [])
        ]
        self.initialized = not self.init_containers
        if self.init_containers:
            for container in self.containers:
                container.state = {"waiting": {"reason": "PodInitializing"}}
        self.transitions: dict[str, tuple[str, str]] = {}
        self._last_status: Obj | None = None
        # The pod's /etc/hosts; none for a hostNetwork pod, which keeps the host's, as with
        # the kubelet.
        self.hosts_path: Path | None = (
            workdir / "etc-hosts" if hosts and not pod["spec"].get("hostNetwork") else None
        )
        self._hosts_text = ""
        self._hosts_lock = threading.Lock()

    @property
    def key(self) -> str:
        return f"{self.pod['metadata']['namespace']}/{self.pod['metadata']['name']}"

    def update_hosts(self, services: list[Obj], pods: list[Obj]) -> None:
        """Rewrite the pod's /etc/hosts (in place) if the names in it changed."""
        if self.hosts_path is None:
            return
        text = hosts_file(self.pod, self.pod_ip, services, pods)
        with self._hosts_lock:
            if text != self._hosts_text or not self.hosts_path.exists():
                self.hosts_path.parent.mkdir(parents=True, exist_ok=True)
                write_in_place(self.hosts_path, text)
                self._hosts_text = text

    def refresh_hosts(self) -> None:
        """Read the namespace's Services and pods now, and update the pod's /etc/hosts."""
        if self.hosts_path is None:
            return
        try:
            services, pods = cluster_names(self.api, self.pod["metadata"]["namespace"])
        except (ApiError, OSError) as error:
            log.warning("Could not read Service names pod=%s error=%s", self.key, error)
            services, pods = [], []
            if self.hosts_path.exists():
                return
        self.update_hosts(services, pods)

    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("Pod worker failed pod=%s", self.key)
        finally:
            for container in [*self.init_containers, *self.containers]:
                if container.process is not None:
                    self._stop_container(container, grace=0.5)
            self.finished.set()

    def _stop_container(self, container: Container, grace: float) -> int | None:
        assert container.process is not None
        if self.runtime is not None and container.runtime_name:
            return self.runtime.stop(container.process, container.runtime_name, grace)
        return procs.stop(container.process, grace=grace)

    def _run(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        policy = self.pod["spec"].get("restartPolicy", "Always")
        self._push("Pending")
        if not self._run_init_containers(policy):
            return
        while not (self.deleting.is_set() or self.killed.is_set()):
            at = time.monotonic()
            for container in self.containers:
                self._tend(container, policy, at)
            phase = self._phase()
            self._push(phase)
            if phase in ("Succeeded", "Failed"):
                log.info("Pod finished pod=%s phase=%s", self.key, phase)
                return
            time.sleep(0.2)
        if self.killed.is_set():
            return
        grace = self.pod["metadata"].get("deletionGracePeriodSeconds", 30)
        for container in self.containers:
            if container.running:
                assert container.process is not None
                code = self._stop_container(container, grace=min(float(grace), 10.0))
                self._terminated(container, code, "Error" if code else "Completed")
        with contextlib.suppress(ApiError):
            self._push(self._phase() if self._phase() != "Running" else "Failed")
        self._delete_pod()

    def _run_init_containers(self, policy: str) -> bool:
        """Run init containers one after another; False if the pod failed or went away."""
        for container in self.init_containers:
            while True:
                if self.killed.is_set():
                    return False
                if self.deleting.is_set():
                    self._delete_pod()
                    return False
                if container.process is None:
                    if time.monotonic() >= container.restart_at:
                        self._start(container)
                        self._push("Pending")
                    time.sleep(0.2)
                    continue
                code = container.process.poll()
                if code is None:
                    time.sleep(0.2)
                    continue
                container.process = None
                self._terminated(container, code, "Completed" if code == 0 else "Error")
                if code == 0:
                    break
                if policy == "Never":
                    self._push("Failed")
                    log.info(
                        "Pod finished pod=%s phase=Failed init_container=%s",
                        self.key,
                        container.name,
                    )
                    return False
                container.last_state = container.state
                container.state = {"waiting": {"reason": "CrashLoopBackOff"}}
                container.restart_count += 1
                container.restart_at = time.monotonic() + min(2**container.restart_count, 30)
                self._push("Pending")
        self.initialized = True
        return True

    def _delete_pod(self) -> None:
        self.delete_object(self.api, self.pod)
        log.info("Deleted pod pod=%s", self.key)

    @staticmethod
    def delete_object(api: KubeApi, pod: Obj) -> None:
        """Remove a pod whose containers are stopped (the kubelet's final, zero-grace delete)."""
        metadata = pod["metadata"]
        try:
            api.delete(
                "v1",
                "pods",
                metadata["name"],
                metadata["namespace"],
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": metadata["uid"]}},
            )
        except ApiError as error:
            if error.status != 409:  # a newer pod of the same name
                raise

    def _tend(self, container: Container, policy: str, at: float) -> None:
        if container.process is None and "waiting" in container.state:
            if at >= container.restart_at:
                self._start(container)
            return
        if container.process is None:
            return
        code = container.process.poll()
        if code is not None:
            container.process = None
            self._terminated(container, code, "Completed" if code == 0 else "Error")
            if policy == "Always" or (policy == "OnFailure" and code != 0):
                container.last_state, container.state = (
                    container.state,
                    {"waiting": {"reason": "CrashLoopBackOff" if code else "Completed"}},
                )
                container.restart_count += 1
                container.restart_at = at + min(2**container.restart_count, 30)
            return
        if container.startup is not None and not container.startup.ok:
            # The kubelet runs no other probe until the startup probe succeeds, and kills a
            # container whose startup probe fails failureThreshold times.
            if container.startup.due(at):
                container.startup.record(self._probe(container, container.startup.spec), at)
                threshold = container.startup.spec.get("failureThreshold", 3)
                if container.startup.failures >= threshold:
                    log.info(
                        "Killed container after failed startup probe pod=%s container=%s",
                        self.key,
                        container.name,
                    )
                    self._stop_container(container, grace=1.0)
                elif container.startup.ok:
                    for probe in (container.readiness, container.liveness):
                        if probe is not None:
                            probe.started = at
            return
        for probe, kind in ((container.readiness, "readiness"), (container.liveness, "liveness")):
            if probe is not None and probe.due(at):
                probe.record(self._probe(container, probe.spec), at)
                if kind == "liveness" and not probe.ok and probe.failures:
                    threshold = probe.spec.get("failureThreshold", 3)
                    if probe.failures >= threshold:
                        log.info(
                            "Killed container after failed liveness probe pod=%s container=%s",
                            self.key,
                            container.name,
                        )
                        assert container.process is not None
                        self._stop_container(container, grace=1.0)

    def _start(self, container: Container) -> None:
        spec = container.spec
        container.log_offset = (
            container.log_path.stat().st_size if container.log_path.exists() else 0
        )
        self.refresh_hosts()
        if self.runtime is not None:
            self._start_container(container)
        else:
            self._start_process(container)
        if container.process is None:
            return
        started = time.monotonic()
        container.readiness = (
            Probe(spec["readinessProbe"], started) if spec.get("readinessProbe") else None
        )
        container.liveness = (
            Probe(spec["livenessProbe"], started) if spec.get("livenessProbe") else None
        )
        container.startup = (
            Probe(spec["startupProbe"], started) if spec.get("startupProbe") else None
        )
        if container.liveness:
            container.liveness.ok = True
        container.state = {"running": {"startedAt": now()}}
        log.info(
            "Started container pod=%s container=%s pid=%d pod_ip=%s",
            self.key,
            container.name,
            container.process.pid,
            self.pod_ip,
        )

    def _start_process(self, container: Container) -> None:
        spec = container.spec
        try:
            env = container_env(self.api, self.pod, spec, self.path_prefix, self.extra_env)
        except EnvError as error:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(error)}
            }
            container.restart_at = time.monotonic() + 2
            return
        argv = [expand(arg, env) for arg in [*spec.get("command", []), *spec.get("args", [])]]
        if not spec.get("command"):
            container.state = {
                "waiting": {
                    "reason": "CreateContainerError",
                    "message": "the local node runs no images: set the container's command",
                }
            }
            container.restart_at = time.monotonic() + 3600
            return
        working_dir = Path(spec["workingDir"]) if spec.get("workingDir") else None
        cwd = working_dir if working_dir and working_dir.is_dir() else self.workdir
        if self.hosts_path is not None:
            if shutil.which(argv[0], path=env.get("PATH")) is None:
                container.state = {
                    "waiting": {
                        "reason": "RunContainerError",
                        "message": f'exec: "{argv[0]}": executable file not found in $PATH',
                    }
                }
                container.restart_at = time.monotonic() + 5
                return
            argv = in_pod_namespaces(argv, self.hosts_path, pod_hostname(self.pod))
        try:
            container.process = procs.start(
                f"{self.key}/{container.name}", argv, container.log_path, env=env, cwd=cwd
            )
        except OSError as error:
            container.state = {"waiting": {"reason": "RunContainerError", "message": str(error)}}
            container.restart_at = time.monotonic() + 5
            return

    def _start_container(self, container: Container) -> None:
        assert self.runtime is not None
        spec = container.spec
        try:
            env = container_env(self.api, self.pod, spec, [], self.extra_env, inherit_host=False)
            # The kubelet's $(VAR) expansion of command and args.
            expanded = {
                **spec,
                **{
                    k: [expand(a, env) for a in spec[k]] for k in ("command", "args") if spec.get(k)
                },
            }
            if self.volumes is None:
                volumes = Volumes(self.api, self.pod, self.workdir / "volumes")
                volumes.make()
                self.volumes = volumes
            container.process, container.runtime_name = self.runtime.start(
                f"{self.key}/{container.name}", self.pod, expanded, env, self.volumes,
                container.log_path, hosts=self.hosts_path,
            )  # fmt: skip
        except (EnvError, ContainerConfigError) as error:
            container.state = {
                "waiting": {"reason": "CreateContainerConfigError", "message": str(error)}
            }
            container.restart_at = time.monotonic() + 2
        except ImageNeverPulled as error:
            container.state = {"waiting": {"reason": "ErrImageNeverPull", "message": str(error)}}
            container.restart_at = time.monotonic() + 10
        except OSError as error:
            container.state = {"waiting": {"reason": "RunContainerError", "message": str(error)}}
            container.restart_at = time.monotonic() + 5

    def _terminated(self, container: Container, code: int | None, reason: str) -> None:
        code = 137 if code is None else (128 - code if code < 0 else code)
        terminated: Obj = {
            "exitCode": code,
            "reason": reason,
            "startedAt": container.state.get("running", {}).get("startedAt", self.started_at),
            "finishedAt": now(),
        }
        policy = container.spec.get("terminationMessagePolicy", "File")
        if code != 0 and policy == "FallbackToLogsOnError" and container.log_path.exists():
            terminated["message"] = tail(container.log_path, container.log_offset)
        container.state = {"terminated": terminated}
        log.info(
            "Container terminated pod=%s container=%s exit_code=%d", self.key, container.name, code
        )

    def _probe(self, container: Container, spec: Obj) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "httpGet" in spec:
                get = spec["httpGet"]
                port = self._port(container, get["port"])
                url = f"http://{get.get('host') or self.pod_ip}:{port}{get.get('path', '/')}"
                opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
                with opener.open(url, timeout=timeout) as response:
                    return bool(200 <= response.status < 400)
            if "tcpSocket" in spec:
                port = self._port(container, spec["tcpSocket"]["port"])
                with socket.create_connection((self.pod_ip, port), timeout=timeout):
                    return True
            if "exec" in spec and self.runtime is not None:
                return self.runtime.exec(container.runtime_name, spec["exec"]["command"], timeout)
            if "exec" in spec:
                assert container.process is not None
                env = container_env(
                    self.api, self.pod, container.spec, self.path_prefix, self.extra_env
                )
                command = list(spec["exec"]["command"])
                if self.hosts_path is not None:  # in the container's namespaces
                    target = f"--target={container.process.pid}"
                    command = ["nsenter", target, "--mount", "--uts", "--", *command]
                result = subprocess.run(
                    command,
                    env=env,
                    cwd=self.workdir,
                    timeout=timeout,
                    capture_output=True,
                    check=False,
                )
                return result.returncode == 0
        except (OSError, urllib.error.URLError, subprocess.TimeoutExpired, EnvError):
            return False
        return False

    @staticmethod
    def _port(container: Container, port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for declared in container.spec.get("ports", []):
            if declared.get("name") == port:
                return int(declared["containerPort"])
        raise OSError(f"no container port named {port}")

    def _phase(self) -> str:
        states = [c.state for c in self.containers]
        if all("terminated" in s for s in states):
            return (
                "Succeeded" if all(s["terminated"]["exitCode"] == 0 for s in states) else "Failed"
            )
        if any("running" in s for s in states) or any(c.restart_count for c in self.containers):
            return "Running"
        return "Pending"

    def _condition(self, kind: str, ok: bool) -> Obj:
        status = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = (status, now())
        return {"type": kind, "status": status, "lastTransitionTime": self.transitions[kind][1]}

    def _push(self, phase: str) -> None:
        ready = phase == "Running" and all(c.ready for c in self.containers)
        conditions = [
            self._condition("PodReadyToStartContainers", True),
            self._condition("Initialized", self.initialized),
            self._condition("ContainersReady", ready),
            self._condition("Ready", ready),
            self._condition("PodScheduled", True),
        ]
        status: Obj = {
            "phase": phase,
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": self.pod_ip,
            "podIPs": [{"ip": self.pod_ip}],
            "startTime": self.started_at,
            "containerStatuses": [c.status() for c in self.containers],
            "initContainerStatuses": [c.status() for c in self.init_containers],
        }
        if status == self._last_status:
            return
        try:
            self.pod = self.api.merge_patch(
                "v1",
                "pods",
                self.pod["metadata"]["name"],
                {"status": status},
                namespace=self.pod["metadata"]["namespace"],
                subresource="status",
            )
        except ApiError as error:
            if error.status == 404:
                self.killed.set()
                return
            raise
        self._last_status = status

    def kill(self) -> None:
        """Stop the containers now, without reporting (the pod is gone)."""
        self.killed.set()

    def delete(self) -> None:
        """Stop the containers gracefully, report, then remove the pod object."""
        self.deleting.set()
