"""The dedicated local nodes: small kubelet stand-ins.

A runner registers its Node (advertising some ``nvidia.com/gpu`` capacity), keeps it
Ready with status heartbeats and a Lease, and watches the pods bound to it. It runs them in
one of two modes, chosen per node:

- ``process`` (node ``docmodel-local``, label ``docmodel.dev/node-kind: local``): each
  container's ``command`` + ``args`` as a local process. Images are not pulled: each image maps
  to a local Python environment whose ``bin`` goes first on PATH (the checkout's ``.venv``
  unless configured otherwise). Fast; what most tests use.
- ``container`` (node ``docmodel-containers``, label ``docmodel.dev/node-kind: containers``):
  each container with Podman from the pod's image, built by ``scripts/build-images.sh``, with
  its volumes, security context and limits (`containers`).

Every pod gets its own loopback address 127.0.0.N as ``status.podIP``; containers share the
host's network, so that address is theirs too.

There is no cluster DNS: with ``cluster_dns`` (the default) each pod gets the kubelet's managed
/etc/hosts and its own hostname, and the runner writes into that file the Service names of the
pod's namespace that have ready pods behind them, every ``hosts_refresh_seconds`` (see
`podenv.hosts_file`). A process runs in a private mount and UTS namespace for it (root and
unshare(1) needed; without them pods keep the host's /etc/hosts); the host's own /etc/hosts is
never touched.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docmodel_devenv.settings import DevenvSettings

from .build import REPO_ROOT
from .containers import ContainerRuntime
from .kubeapi import ApiError, KubeApi
from .kwok import NODE_KIND_LABEL
from .logserver import LogServer
from .podenv import cluster_names, pod_namespaces_available
from .podworker import PodWorker, now

log = logging.getLogger(__name__)

Obj = dict[str, Any]
NODE_NAME = "docmodel-local"
CONTAINER_NODE_NAME = "docmodel-containers"
LOCAL_NODE_LABELS = {NODE_KIND_LABEL: "local"}
CONTAINER_NODE_LABELS = {NODE_KIND_LABEL: "containers"}
LEASE_SECONDS = 40


def image_envs_from_environ() -> dict[str, Path]:
    """``DOCMODEL_DEVENV_IMAGE_ENVS="prefix=/env/dir,prefix2=/other"`` as a dict."""
    return dict(DevenvSettings.from_env().devenv_image_envs)


@dataclass
class PodRunner:
    api: KubeApi
    workdir: Path
    node_name: str = NODE_NAME
    mode: str = "process"  # or "container"
    # Delete the Node when the runner stops (a node started for some tests only, which would
    # otherwise turn NotReady and stay listed for the rest of the session).
    deregister: bool = False
    node_labels: dict[str, str] = field(default_factory=lambda: dict(LOCAL_NODE_LABELS))
    # Nominal capacity, not enforced: enough that workloads written for real GPU nodes fit.
    gpus: int = field(default_factory=lambda: DevenvSettings.from_env().devenv_local_gpus)
    cpu: str = "32"
    memory: str = "256Gi"
    ephemeral_storage: str = "2Ti"
    # Pods get loopback addresses: nothing here routes another range on the host.
    pod_network: str = "127.0.0.0/24"
    default_env: Path = REPO_ROOT / ".venv"
    image_envs: dict[str, Path] = field(default_factory=image_envs_from_environ)
    kubernetes_version: str = ""
    heartbeat_seconds: float = 10.0
    # Service names in each pod's /etc/hosts (the local node's stand-in for cluster DNS).
    cluster_dns: bool = True
    hosts_refresh_seconds: float = 1.0
    # PKI for the log endpoint (serving cert and key, CA of allowed clients); None: no logs
    log_tls: tuple[Path, Path, Path] | None = None
    workers: dict[str, PodWorker] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _ip_cursor: int = -1
    _log_server: LogServer | None = None
    _runtime: ContainerRuntime | None = None
    _hosts: bool = False

    @classmethod
    def containers(cls, api: KubeApi, workdir: Path, **kwargs: Any) -> PodRunner:
        """A runner in container mode, on its own node (``docmodel-containers``), handing out
        127.0.1.0/24 (the process node's pods get 127.0.0.0/24)."""
        kwargs.setdefault("pod_network", "127.0.1.0/24")
        kwargs.setdefault("deregister", True)
        return cls(
            api,
            workdir,
            node_name=CONTAINER_NODE_NAME,
            mode="container",
            node_labels=dict(CONTAINER_NODE_LABELS),
            **kwargs,
        )

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._ensure_local_network()
        if self.mode == "container":
            self._runtime = ContainerRuntime(self.api, owner=str(self.workdir.resolve()))
            self._runtime.check()
        elif self.mode != "process":
            raise ValueError(f"pod runner mode must be process or container, not {self.mode!r}")
        if self.log_tls is not None:
            self._log_server = LogServer(self._log_file, *self.log_tls)
            self._log_server.start()
        self._hosts = self.cluster_dns and (self.mode == "container" or pod_namespaces_available())
        if self.cluster_dns and not self._hosts:
            log.warning(
                "Pods keep the host's /etc/hosts: no private mount namespace here (needs root "
                "and unshare) node=%s",
                self.node_name,
            )
        self._register_node()
        self._heartbeat()
        loops = [(self._heartbeat_loop, "heartbeat"), (self._watch_loop, "watch")]
        if self._hosts:
            loops.append((self._hosts_loop, "hosts"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=f"{self.node_name}-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("Started pod runner node=%s gpus=%d", self.node_name, self.gpus)

    def stop(self) -> None:
        self._stop.set()
        for worker in list(self.workers.values()):
            worker.kill()
        for worker in list(self.workers.values()):
            worker.join(15)
        for thread in self._threads:
            thread.join(1)  # the watch thread may sit in a long poll; it is a daemon
        if self._log_server is not None:
            self._log_server.stop()
            self._log_server = None
        if self.deregister:
            try:
                self.api.delete("v1", "nodes", self.node_name)
                self.api.delete(
                    "coordination.k8s.io/v1", "leases", self.node_name, "kube-node-lease"
                )
            except ApiError as error:
                log.warning("Could not deregister node=%s error=%s", self.node_name, error)
        log.info("Stopped pod runner node=%s", self.node_name)

    def _ensure_local_network(self) -> None:
        """Pod addresses are loopback addresses: traffic to pods never leaves this machine."""
        if not ipaddress.ip_network(self.pod_network).is_loopback:
            raise RuntimeError(
                f"pod network {self.pod_network} is not a loopback range; local pods get "
                "127.0.0.0/8 addresses only"
            )

    # --- the Node and its heartbeats ---------------------------------------------------------

    def _register_node(self) -> None:
        capacity = {
            "cpu": self.cpu,
            "memory": self.memory,
            "ephemeral-storage": self.ephemeral_storage,
            "pods": "110",
            "nvidia.com/gpu": str(self.gpus),
        }
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node_name,
                "labels": {
                    "kubernetes.io/hostname": self.node_name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                    **self.node_labels,
                },
            },
        }
        try:
            self.api.create(node, "nodes")
        except ApiError as error:
            if error.status != 409:
                raise
        self.capacity = capacity

    def _heartbeat(self) -> None:
        stamp = now()
        conditions = [
            ("Ready", "True", "KubeletReady", "docmodel-local runner is posting ready status"),
            ("MemoryPressure", "False", "KubeletHasSufficientMemory", ""),
            ("DiskPressure", "False", "KubeletHasNoDiskPressure", ""),
            ("PIDPressure", "False", "KubeletHasSufficientPID", ""),
        ]
        status = {
            "capacity": self.capacity,
            "allocatable": self.capacity,
            "conditions": [
                {
                    "type": kind,
                    "status": value,
                    "reason": reason,
                    "message": message,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": getattr(self, "_registered_at", stamp),
                }
                for kind, value, reason, message in conditions
            ],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": self.node_name},
            ],
            "nodeInfo": {
                "kubeletVersion": self.kubernetes_version or "v0.0.0",
                "kubeProxyVersion": "",
                "containerRuntimeVersion": (
                    self._runtime.version if self._runtime else "docmodel-local://processes"
                ),
                "operatingSystem": "linux",
                "architecture": "amd64",
                "osImage": "local containers" if self._runtime else "local processes",
                "kernelVersion": os.uname().release,
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
            "phase": "Running",
        }
        if self._log_server is not None:
            status["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self._log_server.port}}
        self._registered_at = getattr(self, "_registered_at", stamp)
        self.api.merge_patch(
            "v1", "nodes", self.node_name, {"status": status}, subresource="status"
        )
        lease = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.node_name, "namespace": "kube-node-lease"},
            "spec": {
                "holderIdentity": self.node_name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
            },
        }
        self.api.apply(lease, "leases")

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self._heartbeat()
            except Exception as error:
                log.warning("Failed node heartbeat node=%s error=%s", self.node_name, error)

    # --- pods ----------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        selector = f"spec.nodeName={self.node_name}"
        while not self._stop.is_set():
            try:
                listing = self.api.get("v1", "pods", fieldSelector=selector)
                seen = set()
                for pod in listing.get("items", []):
                    seen.add(pod["metadata"]["uid"])
                    self._on_pod("ADDED", pod)
                for uid in set(self.workers) - seen:
                    self._on_pod("DELETED", self.workers[uid].pod)
                version = listing["metadata"]["resourceVersion"]
                while not self._stop.is_set():
                    for event in self.api.watch(
                        "v1", "pods", version, fieldSelector=selector, timeout_seconds=30
                    ):
                        if event["type"] == "ERROR":
                            raise ApiError(event["object"].get("code", 500), str(event["object"]))
                        version = event["object"]["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self._on_pod(event["type"], event["object"])
                    self._reap()
            except Exception as error:
                if not self._stop.is_set():
                    log.warning("Restarted pod watch node=%s error=%s", self.node_name, error)
                    time.sleep(1)

    def _on_pod(self, kind: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        worker = self.workers.get(uid)
        if kind == "DELETED":
            if worker is not None:
                worker.kill()
            self._reap()
            return
        deleting = pod["metadata"].get("deletionTimestamp") is not None
        if worker is not None:
            if deleting:
                if worker.finished.is_set():
                    PodWorker.delete_object(self.api, pod)
                else:
                    worker.delete()
            return
        if deleting:
            PodWorker.delete_object(self.api, pod)
            return
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return
        metadata, env_dir = pod["metadata"], self._env_dir(pod)
        worker = PodWorker(
            self.api,
            pod,
            self._allocate_ip(),
            "127.0.0.1",
            self.workdir / metadata["namespace"] / f"{metadata['name']}-{uid[:8]}",
            [env_dir / "bin"],
            self._extra_env(env_dir),
            runtime=self._runtime,
            hosts=self._hosts,
        )
        self.workers[uid] = worker
        worker.start()

    def _hosts_loop(self) -> None:
        """Keep every running pod's /etc/hosts up to date with its namespace's Services."""
        while not self._stop.wait(self.hosts_refresh_seconds):
            by_namespace: dict[str, list[PodWorker]] = {}
            for worker in list(self.workers.values()):
                if worker.hosts_path is not None and not worker.finished.is_set():
                    namespace = worker.pod["metadata"]["namespace"]
                    by_namespace.setdefault(namespace, []).append(worker)
            for namespace, workers in by_namespace.items():
                try:
                    services, pods = cluster_names(self.api, namespace)
                    for worker in workers:
                        worker.update_hosts(services, pods)
                except Exception as error:
                    log.debug("Skipped hosts update namespace=%s error=%s", namespace, error)

    def _reap(self) -> None:
        for uid, worker in list(self.workers.items()):
            if worker.finished.is_set() and worker.killed.is_set():
                del self.workers[uid]

    def _log_file(self, namespace: str, name: str, container: str) -> Path | None:
        for worker in reversed(list(self.workers.values())):
            metadata = worker.pod["metadata"]
            if (metadata["namespace"], metadata["name"]) == (namespace, name):
                for candidate in [*worker.init_containers, *worker.containers]:
                    if candidate.name == container:
                        return candidate.log_path
        return None

    def _allocate_ip(self) -> str:
        """The next free address after the last one handed out (round robin, skipping .1-.9)."""
        hosts = list(ipaddress.ip_network(self.pod_network).hosts())[9:]
        active = {w.pod_ip for w in self.workers.values() if not w.finished.is_set()}
        for step in range(1, len(hosts) + 1):
            candidate = str(hosts[(self._ip_cursor + step) % len(hosts)])
            if candidate not in active:
                self._ip_cursor = (self._ip_cursor + step) % len(hosts)
                return candidate
        raise RuntimeError(f"no free pod address in {self.pod_network}")

    def _env_dir(self, pod: Obj) -> Path:
        images = [c.get("image", "") for c in pod["spec"]["containers"]]
        for prefix, env_dir in sorted(self.image_envs.items(), key=lambda kv: -len(kv[0])):
            if any(image.startswith(prefix) for image in images):
                return env_dir
        return self.default_env

    def _extra_env(self, env_dir: Path) -> dict[str, str]:
        server = self.api.credentials.server.removeprefix("https://")
        host, _, port = server.rpartition(":")
        env = {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
        if self._runtime is None:
            env["VIRTUAL_ENV"] = str(env_dir)
        return env
