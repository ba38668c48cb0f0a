"""The training engines on the dev cluster: Kubeflow's training operator runs a PyTorchJob
whose pods really train together (torch.distributed over gloo, the master found by its Service
name), and Kueue admits Jobs from a queue within its quota, one after the other."""

from __future__ import annotations

import datetime
import secrets
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from docmodel_devenv.controlplane import free_port
from docmodel_devenv.engines import (
    KUBEFLOW_API,
    KUEUE_API,
    QUEUE_LABEL,
    Kueue,
    TrainingOperator,
    create_cluster_queue,
    create_local_queue,
    create_resource_flavor,
    delete_cluster_queue,
)
from docmodel_devenv.pytest_plugin import Kube, kueue, training_operator  # noqa: F401
from docmodel_devenv.stack import DevEnv

from testkit.clusterlib import enforce_restricted, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

LOCAL = {"docmodel.dev/node-kind": "local"}

# Rank 0 (the master) and rank 1 (the worker) add their rank + 1: 1 + 2.
ALL_REDUCE = textwrap.dedent(
    """\
    import datetime, os
    import torch
    import torch.distributed as dist
    print("MASTER_ADDR", os.environ["MASTER_ADDR"], "RANK", os.environ["RANK"], flush=True)
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=120))
    value = torch.tensor([dist.get_rank() + 1.0])
    dist.all_reduce(value)
    print("all_reduce", dist.get_rank(), dist.get_world_size(), value.item(), flush=True)
    assert value.item() == 3.0, value
    dist.destroy_process_group()
    """
)


def replica(port: int) -> dict[str, Any]:
    return {
        "replicas": 1,
        "restartPolicy": "Never",
        "template": {
            "spec": {
                "nodeSelector": LOCAL,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "pytorch",
                        "image": "docmodel/trainer:dev",
                        "command": ["python", "-c", ALL_REDUCE],
                        # A free port: pods share the host's network on the local node.
                        "ports": [{"name": "pytorchjob-port", "containerPort": port}],
                        "securityContext": {
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                    }
                ],
            }
        },
    }


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for found in (obj.get("status") or {}).get("conditions") or []:
        if found["type"] == kind:
            return dict(found)
    return None


def pod_logs(kube: Kube, namespace: str) -> str:
    out = []
    for pod in kube.core.list_namespaced_pod(namespace).items:
        for container in [*(pod.spec.init_containers or []), *pod.spec.containers]:
            try:
                text = kube.core.read_namespaced_pod_log(
                    pod.metadata.name, namespace, container=container.name
                )
            except ApiException as error:
                text = f"(no log: {error.status})"
            out.append(f"--- {pod.metadata.name}/{container.name}\n{text}")
    return "\n".join(out)


def test_pytorchjob_master_and_worker_all_reduce_over_gloo(
    kube: Kube,
    namespace: str,
    training_operator: TrainingOperator,  # noqa: F811
) -> None:
    # Restricted Pod Security: the worker's init container, which the operator adds, passes too.
    enforce_restricted(kube, namespace)
    port = free_port()
    job = {
        "apiVersion": KUBEFLOW_API,
        "kind": "PyTorchJob",
        "metadata": {"name": "ddp"},
        "spec": {"pytorchReplicaSpecs": {"Master": replica(port), "Worker": replica(port)}},
    }
    kube.custom.create_namespaced_custom_object("kubeflow.org", "v1", namespace, "pytorchjobs", job)

    def finished() -> str | None:
        obj = kube.custom.get_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", "ddp"
        )
        for kind in ("Succeeded", "Failed"):
            if (found := condition(obj, kind)) and found["status"] == "True":
                return kind
        return None

    try:
        outcome = wait_for(finished, 180, "PyTorchJob ddp to finish", interval=1)
    except AssertionError as error:
        raise AssertionError(f"{error}; log: {training_operator.log_path}") from None
    logs = pod_logs(kube, namespace)
    assert outcome == "Succeeded", logs
    # The operator's Services and its MASTER_ADDR: the master's Service name, which the pods
    # resolved through their /etc/hosts.
    services = {s.metadata.name for s in kube.core.list_namespaced_service(namespace).items}
    assert {"ddp-master-0", "ddp-worker-0"} <= services
    assert "MASTER_ADDR ddp-master-0 RANK 1" in logs, logs
    assert "all_reduce 1 2 3.0" in logs, logs
    worker = kube.core.read_namespaced_pod("ddp-worker-0", namespace)
    (init,) = worker.status.init_container_statuses
    assert init.name == "init-pytorch" and init.state.terminated.exit_code == 0


def test_training_operator_webhook_refuses_an_invalid_pytorchjob(
    kube: Kube,
    namespace: str,
    training_operator: TrainingOperator,  # noqa: F811
) -> None:
    job = {
        "apiVersion": KUBEFLOW_API,
        "kind": "PyTorchJob",
        "metadata": {"name": "two-masters"},
        "spec": {"pytorchReplicaSpecs": {"Master": {**replica(free_port()), "replicas": 2}}},
    }
    with pytest.raises(ApiException) as refused:
        kube.custom.create_namespaced_custom_object(
            "kubeflow.org", "v1", namespace, "pytorchjobs", job
        )
    assert "validator.pytorchjob.training-operator.kubeflow.org" in str(refused.value.body)


# --- Kueue ---------------------------------------------------------------------------------


@pytest.fixture
def queue(devenv: DevEnv, kueue: Kueue, namespace: str) -> Iterator[tuple[str, str]]:  # noqa: F811
    """A LocalQueue in `namespace` on a fresh ClusterQueue with a quota of one CPU; yields
    (local queue, cluster queue)."""
    assert devenv.api is not None
    name = f"cq-{secrets.token_hex(3)}"
    create_resource_flavor(devenv.api, "default-flavor")
    create_cluster_queue(devenv.api, name, "default-flavor", cpu="1", memory="1Gi")
    create_local_queue(devenv.api, namespace, "team", name)
    yield "team", name
    delete_cluster_queue(devenv.api, name)


def queued_job(name: str, queue_name: str, seconds: int, suspend: bool | None = True) -> Any:
    spec: dict[str, Any] = {
        "backoffLimit": 0,
        "template": {
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": LOCAL,
                "containers": [
                    {
                        "name": "main",
                        "image": "docmodel/trainer:dev",
                        "command": ["sleep", str(seconds)],
                        "resources": {"requests": {"cpu": "1", "memory": "64Mi"}},
                    }
                ],
            }
        },
    }
    if suspend is not None:
        spec["suspend"] = suspend
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {QUEUE_LABEL: queue_name}},
        "spec": spec,
    }


def workload_of(kube: Kube, namespace: str, job: str) -> dict[str, Any] | None:
    group, version = KUEUE_API.split("/")
    listing = kube.custom.list_namespaced_custom_object(group, version, namespace, "workloads")
    for workload in listing["items"]:
        owners = workload["metadata"].get("ownerReferences") or []
        if any(o["kind"] == "Job" and o["name"] == job for o in owners):
            return dict(workload)
    return None


def quota(kube: Kube, namespace: str, job: str) -> dict[str, Any] | None:
    workload = workload_of(kube, namespace, job)
    return condition(workload, "QuotaReserved") if workload else None


def at(condition: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromisoformat(condition["lastTransitionTime"])


def job_done(kube: Kube, namespace: str, name: str) -> str | None:
    status = kube.batch.read_namespaced_job_status(name, namespace).status
    for found in status.conditions or []:
        if found.type in ("Complete", "Failed") and found.status == "True":
            return str(found.type)
    return None


def test_kueue_admits_a_second_job_only_when_the_first_frees_the_quota(
    kube: Kube,
    namespace: str,
    queue: tuple[str, str],
    kueue: Kueue,  # noqa: F811
) -> None:
    local_queue, cluster_queue = queue
    kube.batch.create_namespaced_job(namespace, queued_job("first", local_queue, 4))
    admitted = wait_for(
        lambda: (q := quota(kube, namespace, "first")) and q["status"] == "True" and q,
        60,
        f"Kueue to admit Job first (log: {kueue.log_path})",
    )
    kube.batch.create_namespaced_job(namespace, queued_job("second", local_queue, 1))
    pending = wait_for(
        lambda: (q := quota(kube, namespace, "second")) and q["status"] == "False" and q,
        30,
        "the Workload of Job second to wait for quota",
    )
    assert "insufficient unused quota for cpu" in pending["message"], pending
    assert kube.batch.read_namespaced_job("second", namespace).spec.suspend is True
    local = kube.custom.get_namespaced_custom_object(
        "kueue.x-k8s.io", "v1beta2", namespace, "localqueues", local_queue
    )
    assert local["spec"]["clusterQueue"] == cluster_queue

    assert wait_for(lambda: job_done(kube, namespace, "first"), 60, "Job first") == "Complete"
    first = kube.batch.read_namespaced_job_status("first", namespace).status
    second_admitted = wait_for(
        lambda: (q := quota(kube, namespace, "second")) and q["status"] == "True" and q,
        60,
        "Kueue to admit Job second once Job first finished",
    )
    assert wait_for(lambda: job_done(kube, namespace, "second"), 60, "Job second") == "Complete"
    # Admitted after the first had finished, never alongside it.
    assert at(second_admitted) >= first.completion_time
    assert at(admitted) <= at(pending)


def test_kueue_webhook_suspends_a_queued_job_on_creation(
    kube: Kube,
    namespace: str,
    queue: tuple[str, str],
    kueue: Kueue,  # noqa: F811
) -> None:
    created = kube.batch.create_namespaced_job(
        namespace, queued_job("unsuspended", queue[0], 1, suspend=False)
    )
    assert created.spec.suspend is True  # Kueue's mutating webhook, before any pod exists
    plain = queued_job("unqueued", queue[0], 1, suspend=None)
    del plain["metadata"]["labels"]
    assert not kube.batch.create_namespaced_job(namespace, plain).spec.suspend
