"""GPU queues on the dev cluster, end to end: the operator, the real Kueue controller (built from
its Go module) and the real workloads. Two DocModels in one LocalQueue whose ClusterQueue admits
one training at a time train one after the other, and the one that waits says so on its status:
queued, in which queue, and Kueue's reason."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from docmodel.api import GROUP, PLURAL, VERSION
from docmodel_devenv.engines import (
    KUEUE_API,
    Kueue,
    cluster_queue_manifest,
    create_local_queue,
    create_resource_flavor,
    delete_cluster_queue,
)
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

LOCAL_QUEUE = "gpu-training"


@pytest.fixture
def cluster_queue(devenv: DevEnv, kube: Kube, kueue: Kueue, namespace: str) -> Iterator[str]:
    """A ClusterQueue whose quota admits one step pod of the tests' DocModels at a time (one
    CPU; they ask for one each), with memory and disk to spare, and the LocalQueue
    `LOCAL_QUEUE` in `namespace` on it."""
    assert devenv.api is not None
    name = f"cq-{secrets.token_hex(3)}"
    create_resource_flavor(devenv.api, "default-flavor")
    manifest = cluster_queue_manifest(name, "default-flavor", cpu="1", memory="8Gi")
    # Every resource a step pod asks for is one the queue covers, or Kueue never admits it.
    group = manifest["spec"]["resourceGroups"][0]
    group["coveredResources"].append("ephemeral-storage")
    group["flavors"][0]["resources"].append({"name": "ephemeral-storage", "nominalQuota": "1Ti"})
    devenv.api.apply(manifest, "clusterqueues", manager="docmodel-tests")
    create_local_queue(devenv.api, namespace, LOCAL_QUEUE, name)
    yield name
    delete_cluster_queue(devenv.api, name)


@pytest.fixture
def operator(
    devenv: DevEnv,
    kube: Kube,
    crd: str,
    namespace: str,
    s3_bucket: S3Bucket,
    cluster_queue: str,
    tmp_path: Path,
) -> Iterator[Operator]:
    with operator_in(devenv, kube, namespace, s3_bucket, tmp_path / "operator.log") as running:
        yield running


def train_windows(kube: Kube, namespace: str) -> dict[str, tuple[datetime, datetime]]:
    """When each DocModel's train container ran, from its pod's terminated state."""
    out = {}
    pods = kube.core.list_namespaced_pod(namespace, label_selector="docmodel.dev/step=train")
    for pod in pods.items:
        for status in pod.status.container_statuses or []:
            done = status.state.terminated
            if done is not None and done.exit_code == 0:
                out[pod.metadata.labels["app.kubernetes.io/instance"]] = (
                    done.started_at,
                    done.finished_at,
                )
    return out


def test_two_docmodels_in_a_one_at_a_time_queue_train_one_after_the_other(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator, cluster_queue: str
) -> None:
    base_model = str(tiny_base_model())
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    names = ("first", "second")
    for name in names:
        body = docmodel(
            name,
            s3_bucket.name,
            s3_bucket.endpoint,
            base_model,
            training={"queueName": LOCAL_QUEUE},
        )
        kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    queued: dict[str, str] = {}  # what a waiting DocModel's Trained condition said

    def both_trained() -> bool:
        done = 0
        for name in names:
            obj = get(kube, namespace, name)
            failure = obj.get("status", {}).get("lastFailure")
            assert failure is None, (name, failure)
            trained = condition(obj, "Trained")
            if trained is None:
                continue
            if trained["reason"] == "Queued":
                queued.setdefault(name, trained["message"])
            done += trained["status"] == "True"
        return done == len(names)

    wait_for(both_trained, timeout=1200, what="both DocModels to be trained", interval=0.5)

    # One waited in the queue, and its status said so: queued, the queue, Kueue's reason.
    assert queued, "neither DocModel was ever shown as queued"
    for message in queued.values():
        assert f"Kueue LocalQueue {LOCAL_QUEUE}" in message, message
        assert "quota" in message, message
    # The quota admits one training at a time: the two ran one after the other.
    windows = train_windows(kube, namespace)
    assert set(windows) == set(names), windows
    earlier, later = sorted(windows.values())
    assert earlier[1] <= later[0], windows
    # Every step Job that waits in the queue carries Kueue's label; ingest never waits.
    jobs = kube.batch.list_namespaced_job(namespace).items
    for job in jobs:
        step = job.metadata.labels["docmodel.dev/step"]
        queue = job.metadata.labels.get("kueue.x-k8s.io/queue-name")
        assert queue == (None if step == "ingest" else LOCAL_QUEUE), (job.metadata.name, queue)
    # Kueue made a Workload for each queued Job.
    group, version = KUEUE_API.split("/")
    workloads = kube.custom.list_namespaced_custom_object(group, version, namespace, "workloads")
    assert len(workloads["items"]) >= len(names), workloads


def test_a_queue_that_does_not_exist_is_named_on_the_status(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator, cluster_queue: str
) -> None:
    base_model = str(tiny_base_model())
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll"])
    body = docmodel(
        "lost", s3_bucket.name, s3_bucket.endpoint, base_model, training={"queueName": "nowhere"}
    )
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    def queued_message() -> Any:
        trained = condition(get(kube, namespace, "lost"), "Trained")
        if trained is not None and trained["reason"] == "Queued" and "exist" in trained["message"]:
            return trained["message"]
        return None

    message = wait_for(queued_message, timeout=600, what="the DocModel to say its queue is missing")
    assert "Kueue LocalQueue nowhere" in message, message
