"""Distributed training on the dev cluster, end to end: the operator, Kubeflow's real training
operator (built from its Go module) and the real workloads (tiny model, CPU, pods run as
processes on the local node). A DocModel with two workers gets a PyTorchJob whose two pods
rendezvous over loopback and train one adapter together; the revision is evaluated and promoted
as usual. A worker killed mid-training gives the engine's retry or a failed revision with a
readable reason, never two adapters or a half-written one."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docmodel.api import GROUP, PLURAL, VERSION
from docmodel_devenv.engines import TrainingOperator
from docmodel_devenv.pytest_plugin import Kube, S3Bucket
from docmodel_devenv.stack import DevEnv

from testkit.clusterlib import wait_for
from testkit.models import tiny_base_model
from testkit.operatorlib import (
    Operator,
    condition,
    docmodel,
    get,
    operator_in,
    put_docs,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]

TWO_WORKERS = {
    "distributed": {"nodes": 2, "processesPerNode": 1},
    "batchSize": 2,  # per process: the global batch of the single-process tests (4)
}


@pytest.fixture(scope="module")
def base_model() -> str:
    return str(tiny_base_model())


@pytest.fixture
def operator(
    devenv: DevEnv,
    kube: Kube,
    crd: str,
    namespace: str,
    s3_bucket: S3Bucket,
    training_operator: TrainingOperator,
    tmp_path: Path,
) -> Iterator[Operator]:
    """The operator watching `namespace` (restricted Pod Security), with the training operator
    running on the same cluster."""
    with operator_in(devenv, kube, namespace, s3_bucket, tmp_path / "operator.log") as running:
        yield running


def apply(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def pytorchjobs(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    listed = kube.custom.list_namespaced_custom_object(
        "kubeflow.org", "v1", namespace, "pytorchjobs"
    )
    return list(listed.get("items") or [])


def train_pods(kube: Kube, namespace: str) -> list[Any]:
    return list(
        kube.core.list_namespaced_pod(
            namespace, label_selector="training.kubeflow.org/job-name"
        ).items
    )


def adapter_manifests(s3_bucket: S3Bucket) -> list[str]:
    """Every adapter the store holds (their committed manifests)."""
    s3 = s3_bucket.client()
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(
        Bucket=s3_bucket.name, Prefix="artifacts/"
    ):
        keys += [o["Key"] for o in page.get("Contents") or []]
    return sorted(k for k in keys if "/adapter/" in k and k.endswith("adapter_config.json"))


def test_two_workers_train_together_and_the_revision_is_promoted(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator, base_model: str
) -> None:
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    apply(
        kube,
        namespace,
        docmodel("dist", s3_bucket.name, s3_bucket.endpoint, base_model, training=TWO_WORKERS),
    )
    # The train step is a PyTorchJob with a Master and a Worker, never a train Job.
    wait_for(lambda: pytorchjobs(kube, namespace), timeout=600, what="the PyTorchJob")
    (job,) = pytorchjobs(kube, namespace)
    replicas = job["spec"]["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 1}
    assert job["metadata"]["ownerReferences"][0]["name"] == "dist"
    jobs = kube.batch.list_namespaced_job(namespace).items
    assert not [j for j in jobs if j.metadata.labels.get("docmodel.dev/step") == "train"]

    def ready() -> bool:
        obj = get(kube, namespace, "dist")
        ready = condition(obj, "Ready")
        failure = obj.get("status", {}).get("lastFailure")
        assert failure is None, failure
        return ready is not None and ready["status"] == "True"

    wait_for(ready, timeout=900, what="the DocModel to be Ready")
    obj = get(kube, namespace, "dist")
    assert obj["status"]["candidate"]["verdict"] == "Promoted", obj["status"]
    trained = condition(obj, "Trained")
    assert trained is not None and trained["reason"] == "AdapterTrained"
    (job,) = pytorchjobs(kube, namespace)
    done = {c["type"] for c in job["status"]["conditions"] if c["status"] == "True"}
    assert "Succeeded" in done, job["status"]
    # Both pods trained (each exited 0) and rendezvoused: the master's log names world size 2.
    pods = train_pods(kube, namespace)
    assert sorted(p.metadata.labels["training.kubeflow.org/replica-type"] for p in pods) == [
        "master",
        "worker",
    ]
    for pod in pods:
        (status,) = pod.status.container_statuses
        assert status.state.terminated.exit_code == 0, (pod.metadata.name, status.state)
    # One adapter: only rank 0 wrote.
    assert len(adapter_manifests(s3_bucket)) == 1, adapter_manifests(s3_bucket)


def test_a_worker_killed_mid_training_is_retried_or_fails_readably(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator, base_model: str
) -> None:
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    long = {**TWO_WORKERS, "epochs": 40}  # long enough to be killed in the middle
    apply(
        kube,
        namespace,
        docmodel("killed", s3_bucket.name, s3_bucket.endpoint, base_model, training=long),
    )

    def running_worker() -> Any:
        for pod in train_pods(kube, namespace):
            if pod.metadata.labels.get("training.kubeflow.org/replica-type") != "worker":
                continue
            for status in pod.status.container_statuses or []:
                if status.state.running is not None and status.container_id:
                    return pod, status.container_id
        return None

    _, container_id = wait_for(running_worker, timeout=600, what="a running worker")
    time.sleep(20)  # into training: the model loaded, the first steps taken
    pid = int(container_id.rsplit("/", 1)[-1])
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)

    def settled() -> dict[str, Any] | None:
        obj = get(kube, namespace, "killed")
        failure = obj.get("status", {}).get("lastFailure")
        trained = condition(obj, "Trained")
        if failure is not None or (trained is not None and trained["status"] == "True"):
            return obj
        return None

    obj = wait_for(settled, timeout=900, what="the training to succeed or fail")
    failure = obj["status"].get("lastFailure")
    adapters = adapter_manifests(s3_bucket)
    if failure is not None:
        # A failed revision says why, in words, with the trainer's last lines.
        assert failure["stage"] == "train"
        assert failure["reason"] and failure["message"], failure
        trained = condition(obj, "Trained")
        assert trained is not None and trained["status"] == "False", trained
        assert failure["message"] in trained["message"] or failure["reason"] == trained["reason"]
        assert adapters == [], adapters  # nothing half-written
    else:
        # The engine restarted the killed worker and the run finished: one adapter.
        assert len(adapters) == 1, adapters
