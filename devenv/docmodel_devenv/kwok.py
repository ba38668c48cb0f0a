"""Fake nodes simulated by kwok: a pool of GPU nodes (and a CPU node) whose pods
become Ready, and whose Job pods complete, without running anything.

kwok manages only the nodes labelled ``docmodel.dev/node-kind=kwok``; its
stages come from the kwok module itself (the ``fast`` node and pod stages with
lease heartbeats), read from the Go module cache.
"""

from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import procs
from .build import FAMILIES, Binaries
from .controlplane import free_port, http_ok
from .kubeapi import KubeApi

log = logging.getLogger(__name__)

NODE_KIND_LABEL = "docmodel.dev/node-kind"
GPU_PRODUCT = "NVIDIA-H100-80GB-HBM3"

STAGE_FILES = (
    "node/fast/node-initialize.yaml",
    "node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "pod/fast/pod-ready.yaml",
    "pod/fast/pod-complete.yaml",
    "pod/fast/pod-delete.yaml",
)


def stage_dir() -> Path:
    """The kwok module's stage directory in GOMODCACHE (downloaded by the build)."""
    version = FAMILIES["kwok"].version()
    result = subprocess.run(["go", "env", "GOMODCACHE"], check=True, capture_output=True, text=True)
    directory = Path(result.stdout.strip()) / f"sigs.k8s.io/kwok@{version}/kustomize/stage"
    if not directory.is_dir():
        raise FileNotFoundError(
            f"kwok stages not found at {directory}: run `python -m docmodel_devenv build`"
        )
    return directory


def node_manifest(
    name: str, gpus: int = 0, cpu: str = "32", memory: str = "256Gi"
) -> dict[str, Any]:
    labels = {
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "type": "kwok",
        NODE_KIND_LABEL: "kwok",
    }
    capacity = {"cpu": cpu, "memory": memory, "ephemeral-storage": "2Ti", "pods": "110"}
    if gpus:
        labels.update(
            {
                "nvidia.com/gpu.present": "true",
                "nvidia.com/gpu.product": GPU_PRODUCT,
                "nvidia.com/gpu.count": str(gpus),
                "nvidia.com/gpu.memory": "81559",
            }
        )
        capacity["nvidia.com/gpu"] = str(gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": labels,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
        },
        "status": {"capacity": capacity, "allocatable": capacity},
    }


@dataclass
class Kwok:
    """The kwok controller plus the fake nodes it manages."""

    binaries: Binaries
    kubeconfig: Path
    workdir: Path
    gpu_nodes: int = 2
    gpus_per_node: int = 8
    cpu_nodes: int = 1
    process: subprocess.Popen[bytes] | None = None
    node_names: list[str] = field(default_factory=list)

    def start(self, api: KubeApi) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        stages = stage_dir()
        config = self.workdir / "kwok-stages.yaml"
        config.write_text("\n---\n".join((stages / name).read_text() for name in STAGE_FILES))
        port = free_port()
        log_path = self.workdir / "logs" / "kwok.log"
        self.process = procs.start(
            "kwok",
            [
                str(self.binaries["kwok"]),
                f"--kubeconfig={self.kubeconfig}",
                f"--config={config}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-label-selector={NODE_KIND_LABEL}=kwok",
                "--cidr=10.244.0.1/16",
                "--node-ip=10.96.0.1",
                f"--server-address=127.0.0.1:{port}",
                "--node-lease-duration-seconds=40",
            ],
            log_path,
        )
        procs.wait_until(
            lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), 30, "kwok", self.process, log_path
        )
        manifests = [
            node_manifest(f"kwok-gpu-{i}", gpus=self.gpus_per_node) for i in range(self.gpu_nodes)
        ] + [node_manifest(f"kwok-cpu-{i}") for i in range(self.cpu_nodes)]
        for manifest in manifests:
            api.create(manifest, "nodes")
            self.node_names.append(manifest["metadata"]["name"])
        procs.wait_until(
            lambda: all(_node_ready(api, name) for name in self.node_names),
            30,
            "kwok nodes",
            self.process,
            log_path,
        )
        log.info("Started kwok nodes=%s", ",".join(self.node_names))

    def stop(self) -> None:
        if self.process is not None:
            procs.stop(self.process)
            self.process = None


def _node_ready(api: KubeApi, name: str) -> bool:
    node = api.get("v1", "nodes", name)
    conditions = node.get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
