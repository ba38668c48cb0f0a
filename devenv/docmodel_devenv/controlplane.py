"""A real Kubernetes control plane on loopback: etcd, kube-apiserver,
kube-controller-manager (every controller) and kube-scheduler.

The flags follow controller-runtime's envtest, plus the controller manager and
scheduler so that Jobs, Deployments, ReplicaSets, EndpointSlices and garbage
collection really happen.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import socket
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import certs, procs
from .build import Binaries
from .kubeapi import Credentials

log = logging.getLogger(__name__)

SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    """True if ``url`` answers 200 (no proxies: everything here is on loopback)."""
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]
    if context is not None:
        handlers.append(urllib.request.HTTPSHandler(context=context))
    with urllib.request.build_opener(*handlers).open(url, timeout=2) as response:
        return bool(response.status == 200)


def _insecure_context() -> ssl.SSLContext:
    # Health endpoints of our own child processes, which serve self-signed certificates.
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def write_kubeconfig(path: Path, server: str, pki: certs.Pki, user: str = "docmodel-admin") -> None:
    def embed(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "docmodel-devenv",
                "cluster": {"server": server, "certificate-authority-data": embed(pki.ca_cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": embed(pki.admin_cert),
                    "client-key-data": embed(pki.admin_key),
                },
            }
        ],
        "contexts": [
            {"name": "docmodel-devenv", "context": {"cluster": "docmodel-devenv", "user": user}}
        ],
        "current-context": "docmodel-devenv",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


@dataclass
class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager + kube-scheduler in ``workdir``."""

    binaries: Binaries
    workdir: Path
    apiserver_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    apiserver_ready_seconds: float = 0.0
    # Record every request's metadata (user agent, verb, resource) in `audit_log`, for
    # benchmarks that count a client's requests; off by default (it costs time and disk).
    audit: bool = False

    @property
    def audit_log(self) -> Path:
        return self.logs / "audit.jsonl"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def pki(self) -> certs.Pki:
        return certs.Pki(self.workdir / "pki")

    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def server(self) -> str:
        return f"https://127.0.0.1:{self.apiserver_port}"

    @property
    def credentials(self) -> Credentials:
        return Credentials(self.server, self.pki.ca_cert, self.pki.admin_cert, self.pki.admin_key)

    def start(self) -> None:
        started = time.monotonic()
        self.workdir.mkdir(parents=True, exist_ok=True)
        certs.generate(self.pki.directory, SERVICE_IP)
        try:
            self._start_etcd()
            self._start_apiserver()
            self.apiserver_ready_seconds = time.monotonic() - started
            log.info(
                "Control plane API server became ready server=%s seconds=%.1f",
                self.server,
                self.apiserver_ready_seconds,
            )
            self._start_controller_manager()
            self._start_scheduler()
        except BaseException:
            self.stop()
            raise
        log.info(
            "Control plane started kubeconfig=%s seconds=%.1f",
            self.kubeconfig,
            time.monotonic() - started,
        )

    def stop(self) -> None:
        for name in reversed(list(self.processes)):
            procs.stop(self.processes.pop(name), grace=3.0)
        log.info("Control plane stopped workdir=%s", self.workdir)

    def _run(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        process = procs.start(name, argv, self.logs / f"{name}.log")
        self.processes[name] = process
        return process

    def _wait_ready(
        self, name: str, url: str, timeout: float, context: ssl.SSLContext | None = None
    ) -> None:
        """Wait until `url` answers 200; fail with the component's log tail if it exits."""
        procs.wait_until(
            lambda: http_ok(url, context),
            timeout,
            name,
            self.processes[name],
            self.logs / f"{name}.log",
        )

    def _start_etcd(self) -> None:
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        peer_url = f"http://127.0.0.1:{peer_port}"
        self._run(
            "etcd",
            [
                str(self.binaries["etcd"]),
                "--name=default",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={self.etcd_url}",
                f"--advertise-client-urls={self.etcd_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=default={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._wait_ready("etcd", f"{self.etcd_url}/health", 30)

    def _start_apiserver(self) -> None:
        pki = self.pki
        self.apiserver_port = self.apiserver_port or free_port()
        self._run(
            "kube-apiserver",
            [
                str(self.binaries["kube-apiserver"]),
                f"--etcd-servers={self.etcd_url}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki.serving_cert}",
                f"--tls-private-key-file={pki.serving_key}",
                f"--client-ca-file={pki.ca_cert}",
                f"--secure-port={self.apiserver_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                "--authorization-mode=RBAC",
                f"--service-account-issuer={self.server}/",
                f"--service-account-key-file={pki.sa_pub}",
                f"--service-account-signing-key-file={pki.sa_key}",
                # Pod logs are fetched from the local node's log endpoint on its InternalIP.
                f"--kubelet-certificate-authority={pki.ca_cert}",
                f"--kubelet-client-certificate={pki.admin_cert}",
                f"--kubelet-client-key={pki.admin_key}",
                "--kubelet-preferred-address-types=InternalIP",
                # The "kubernetes" Service cannot list a loopback address as its endpoint.
                "--endpoint-reconciler-type=none",
                "--v=1",
                *self._audit_flags(),
            ],
        )
        write_kubeconfig(self.kubeconfig, self.server, pki)

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        policy = self.workdir / "audit-policy.yaml"
        policy.write_text(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\n"
            "omitStages: [RequestReceived]\nrules:\n  - level: Metadata\n"
        )
        self.logs.mkdir(parents=True, exist_ok=True)
        return [
            f"--audit-policy-file={policy}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=0",
        ]
        context = self.credentials.ssl_context()
        self._wait_ready("kube-apiserver", f"{self.server}/readyz", 90, context)

    def _start_controller_manager(self) -> None:
        pki, port = self.pki, free_port()
        self._run(
            "kube-controller-manager",
            [
                str(self.binaries["kube-controller-manager"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--controllers=*",
                f"--root-ca-file={pki.ca_cert}",
                f"--service-account-private-key-file={pki.sa_key}",
                f"--cluster-signing-cert-file={pki.ca_cert}",
                f"--cluster-signing-key-file={pki.ca_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'kcm-certs'}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self._wait_ready(
            "kube-controller-manager", f"https://127.0.0.1:{port}/healthz", 60, _insecure_context()
        )

    def _start_scheduler(self) -> None:
        port = free_port()
        self._run(
            "kube-scheduler",
            [
                str(self.binaries["kube-scheduler"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--authentication-kubeconfig={self.kubeconfig}",
                f"--authorization-kubeconfig={self.kubeconfig}",
                "--bind-address=127.0.0.1",
                f"--secure-port={port}",
                f"--cert-dir={self.workdir / 'scheduler-certs'}",
                "--leader-elect=false",
                "--v=1",
            ],
        )
        self._wait_ready(
            "kube-scheduler", f"https://127.0.0.1:{port}/healthz", 60, _insecure_context()
        )

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            self.stop()
