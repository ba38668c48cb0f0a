"""Real controllers on the dev cluster: Jobs on fake kwok GPU nodes, Jobs and a
Deployment as real processes on the local node, S3 writes, garbage collection."""

from __future__ import annotations

import ipaddress
import json
import urllib.request
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from docmodel_devenv.pytest_plugin import Kube, S3Bucket
from docmodel_devenv.stack import DevEnv

from testkit.clusterlib import kubectl, wait_for

pytestmark = pytest.mark.cluster

LOCAL = {"docmodel.dev/node-kind": "local"}
KWOK_GPU = {"docmodel.dev/node-kind": "kwok", "nvidia.com/gpu.present": "true"}


def job(
    name: str, container: dict[str, Any], node_selector: dict[str, str], backoff: int = 0
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": node_selector,
                    "containers": [{"name": "main", "image": "docmodel/trainer:dev", **container}],
                }
            },
        },
    }


def job_condition(kube: Kube, namespace: str, name: str) -> str | None:
    status = kube.batch.read_namespaced_job_status(name, namespace).status
    for condition in status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def job_pods(kube: Kube, namespace: str, name: str) -> list[Any]:
    return list(kube.core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def test_gpu_job_is_scheduled_to_a_kwok_gpu_node_and_completes(kube: Kube, namespace: str) -> None:
    manifest = job(
        "train",
        {
            "command": ["docmodel-trainer", "train"],
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
        },
        KWOK_GPU,
    )
    kube.batch.create_namespaced_job(namespace, manifest)
    assert wait_for(lambda: job_condition(kube, namespace, "train"), 60, "Job train") == "Complete"
    (pod,) = job_pods(kube, namespace, "train")
    node = kube.core.read_node(pod.spec.node_name)
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-H100-80GB-HBM3"
    assert node.status.capacity["nvidia.com/gpu"] == "8"


def test_local_job_writes_an_object_to_s3(
    devenv: DevEnv, kube: Kube, namespace: str, s3_bucket: S3Bucket
) -> None:
    secret = s3_bucket.put_secret(devenv, namespace)
    script = (
        "import os, boto3\n"
        "body = f\"{os.environ['POD_NAME']} {os.environ['POD_IP']}\"\n"
        "boto3.client('s3').put_object(Bucket=os.environ['BUCKET'], Key='out/hello.txt', Body=body)\n"
        "print('Wrote object', flush=True)\n"
    )
    container = {
        "command": ["python", "-c", script],
        "envFrom": [{"secretRef": {"name": secret}}],
        "env": [
            {"name": "BUCKET", "value": s3_bucket.name},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        ],
        "resources": {"limits": {"nvidia.com/gpu": "1"}},
    }
    kube.batch.create_namespaced_job(namespace, job("write", container, LOCAL))
    assert wait_for(lambda: job_condition(kube, namespace, "write"), 90, "Job write") == "Complete"
    (pod,) = job_pods(kube, namespace, "write")
    assert pod.spec.node_name == "docmodel-local"
    assert devenv.runner is not None
    assert ipaddress.ip_address(pod.status.pod_ip) in ipaddress.ip_network(
        devenv.runner.pod_network
    )
    body = s3_bucket.client().get_object(Bucket=s3_bucket.name, Key="out/hello.txt")["Body"].read()
    assert body.decode() == f"{pod.metadata.name} {pod.status.pod_ip}"


def test_failed_local_pod_reports_its_last_log_lines(kube: Kube, namespace: str) -> None:
    script = "import sys\nfor i in range(30): print(f'line {i}')\nprint('Failed: disk on fire', file=sys.stderr)\nsys.exit(3)"
    container = {
        "command": ["python", "-u", "-c", script],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    kube.batch.create_namespaced_job(namespace, job("fail", container, LOCAL))
    assert wait_for(lambda: job_condition(kube, namespace, "fail"), 60, "Job fail") == "Failed"
    (pod,) = job_pods(kube, namespace, "fail")
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 3
    assert "Failed: disk on fire" in terminated.message
    assert "line 29" in terminated.message and "line 5\n" not in terminated.message
    # The API server proxies log requests to the local node, as it would to a kubelet.
    logs = kube.core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=2)
    assert logs.splitlines() == ["line 29", "Failed: disk on fire"]


def test_deleting_an_owner_garbage_collects_its_children(kube: Kube, namespace: str) -> None:
    owner = kube.core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": "owner",
        "uid": owner.metadata.uid,
    }
    for name in ("child-a", "child-b"):
        kube.core.create_namespaced_config_map(
            namespace, {"metadata": {"name": name, "ownerReferences": [reference]}}
        )
    kube.core.delete_namespaced_config_map("owner", namespace)

    def children_gone() -> bool:
        names = {cm.metadata.name for cm in kube.core.list_namespaced_config_map(namespace).items}
        return not names & {"child-a", "child-b"}

    wait_for(children_gone, 30, "garbage collection of child-a and child-b")


def http_get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=2) as response:
        return int(response.status)


def web_deployment(name: str, replicas: int) -> dict[str, Any]:
    """``python -m http.server`` on the pod's own address, with HTTP probes."""
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": LOCAL,
                    "containers": [
                        {
                            "name": "web",
                            "image": "docmodel/server:dev",
                            "command": [
                                "python",
                                "-m",
                                "http.server",
                                "8080",
                                "--bind",
                                "$(POD_IP)",
                            ],
                            "env": [
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                }
                            ],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/", "port": "http"},
                                "periodSeconds": 1,
                            },
                            "livenessProbe": {
                                "httpGet": {"path": "/", "port": 8080},
                                "periodSeconds": 2,
                            },
                        }
                    ],
                },
            },
        },
    }


def test_deployment_on_the_local_node_becomes_available(kube: Kube, namespace: str) -> None:
    deployment = web_deployment("web", replicas=2)
    kube.apps.create_namespaced_deployment(namespace, deployment)

    def available() -> bool:
        status = kube.apps.read_namespaced_deployment_status("web", namespace).status
        return any(
            c.type == "Available" and c.status == "True" for c in status.conditions or []
        ) and (status.ready_replicas == 2)

    wait_for(available, 60, "Deployment web Available")
    pods = kube.core.list_namespaced_pod(namespace, label_selector="app=web").items
    ips = {pod.status.pod_ip for pod in pods}
    assert len(ips) == 2  # same port, different loopback addresses
    for ip in ips:
        assert http_get(f"http://{ip}:8080/") == 200

    # Deleting the Deployment garbage-collects its ReplicaSet and pods, which stops the processes.
    kube.apps.delete_namespaced_deployment("web", namespace, propagation_policy="Foreground")

    def stopped() -> bool:
        for ip in ips:
            try:
                http_get(f"http://{ip}:8080/")
                return False
            except OSError:
                pass
        if kube.core.list_namespaced_pod(namespace, label_selector="app=web").items:
            return False
        try:  # foreground deletion removes the Deployment last
            kube.apps.read_namespaced_deployment("web", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for(stopped, 60, "web pods, their processes and the Deployment gone")


def test_kubectl_sees_every_node(devenv: DevEnv) -> None:
    nodes = json.loads(kubectl(devenv, "get", "nodes", "-o", "json").stdout)["items"]
    kinds = {
        n["metadata"]["name"]: n["metadata"]["labels"]["docmodel.dev/node-kind"] for n in nodes
    }
    assert kinds["docmodel-local"] == "local"
    assert sum(kind == "kwok" for kind in kinds.values()) >= 2
    for node in nodes:
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready and ready[0]["status"] == "True", node["metadata"]["name"]


def test_local_pod_gets_the_kubelets_environment_after_its_init_containers(
    kube: Kube, namespace: str
) -> None:
    kube.core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"MODEL": "tiny", "EPOCHS": "2"}}
    )
    kube.core.create_namespaced_secret(
        namespace, {"metadata": {"name": "token"}, "string_data": {"value": "s3cr3t"}}
    )
    expected = {
        "CFG_MODEL": "tiny",
        "CFG_EPOCHS": "2",
        "TOKEN": "s3cr3t",
        "NAMESPACE": namespace,
        "GREETING": "model=tiny",
        "OPTIONAL": None,
    }
    check = (
        "import json, os, sys\n"
        f"expected = json.loads({json.dumps(json.dumps(expected))})\n"
        "actual = {k: os.environ.get(k) for k in expected}\n"
        "print(actual, flush=True)\n"
        "sys.exit(0 if actual == expected and sys.argv[1] == 'tiny' else 1)\n"
    )
    container = {
        "command": ["python", "-c", check],
        "args": ["$(CFG_MODEL)"],
        "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}],
        "env": [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "token", "key": "value"}}},
            {"name": "NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "GREETING", "value": "model=$(CFG_MODEL)"},
            {
                "name": "OPTIONAL",
                "valueFrom": {"secretKeyRef": {"name": "absent", "key": "x", "optional": True}},
            },
        ],
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    manifest = job("env", container, LOCAL)
    manifest["spec"]["template"]["spec"]["initContainers"] = [
        {
            "name": "prepare",
            "image": "docmodel/trainer:dev",
            "command": ["python", "-c", "print('ok')"],
        }
    ]
    kube.batch.create_namespaced_job(namespace, manifest)
    outcome = wait_for(lambda: job_condition(kube, namespace, "env"), 60, "Job env")
    (pod,) = job_pods(kube, namespace, "env")
    main = pod.status.container_statuses[0].state.terminated
    assert outcome == "Complete", main.message
    (init,) = pod.status.init_container_statuses
    assert init.state.terminated.exit_code == 0
    assert init.state.terminated.finished_at <= main.started_at
