"""The builders against expected objects: names, Jobs, the server Deployment and the Service."""

from __future__ import annotations

import json
from typing import Any

import pytest

from docmodel.api import DocModel, parse_docmodel
from docmodel.builders import (
    JOB_WORKDIR,
    NameTooLong,
    Owner,
    PodDefaults,
    StoreConfig,
    build_deployment,
    build_job,
    build_service,
    child_name,
    deployment_name,
    job_name,
    pod_failure_policy,
    service_endpoint,
    step_command,
)
from docmodel.failures import EXIT_BAD_INPUT, EXIT_NO_DATA

REV = "3f2a9c01de"
OWNER = Owner(name="handbook", namespace="ml", uid="0b7c-uid")
STORE = StoreConfig("s3://artifacts/dm", endpoint="http://minio:9000", secret_name="store-creds")
TRAINER, SERVER = "docmodel/trainer:0.1.0", "docmodel/server:0.1.0"
SECRET_VALUE = "do-not-inline-me"

FULL: dict[str, Any] = {
    "apiVersion": "docmodel.dev/v1alpha1",
    "kind": "DocModel",
    "metadata": {"name": "handbook", "namespace": "ml"},
    "spec": {
        "source": {"bucket": "docs", "prefix": "handbook/", "secretRef": {"name": "docs-creds"}},
        "baseModel": {"tokenSecretRef": {"name": "hf", "key": "token"}},
        "dataset": {
            "generator": "teacher",
            "teacher": {
                "endpoint": "http://teacher:8000/v1",
                "model": "big",
                "secretRef": {"name": "teacher", "key": "api-key"},
            },
        },
        "training": {
            "resources": {"gpu": 2, "cpu": "8", "memory": "64Gi"},
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [
                {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
            ],
            "priorityClassName": "training",
            "backoffLimit": 3,
            "activeDeadlineSeconds": 7200,
        },
        "serving": {
            "replicas": 2,
            "port": 8080,
            "apiKeySecretRef": {"name": "api", "key": "token"},
            "progressDeadlineSeconds": 600,
        },
    },
}
DM = parse_docmodel(FULL)
LABELS = {
    "app.kubernetes.io/name": "docmodel",
    "app.kubernetes.io/instance": "handbook",
    "app.kubernetes.io/managed-by": "docmodel-operator",
    "docmodel.dev/revision": REV,
}
OWNER_REFS = [
    {
        "apiVersion": "docmodel.dev/v1alpha1",
        "kind": "DocModel",
        "name": "handbook",
        "uid": "0b7c-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
]


def secret(name: str, secret_name: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name, "key": key}}}


def test_train_job_is_the_expected_object() -> None:
    job = build_job(DM, OWNER, "train", REV, STORE, TRAINER)
    manifest = job["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert manifest["name"] == "DOCMODEL_MANIFEST"
    assert json.loads(manifest["value"])["spec"]["training"]["backoffLimit"] == 3
    labels = {**LABELS, "app.kubernetes.io/component": "train", "docmodel.dev/step": "train"}
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": f"handbook-{REV}-train",
            "namespace": "ml",
            "labels": labels,
            "ownerReferences": OWNER_REFS,
        },
        "spec": {
            "backoffLimit": 3,
            "activeDeadlineSeconds": 7200,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "train",
                            "operator": "In",
                            "values": [EXIT_BAD_INPUT, EXIT_NO_DATA],
                        },
                    },
                    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            },
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "train",
                            "image": TRAINER,
                            "command": ["docmodel-trainer"],
                            "args": [
                                "train",
                                "--store",
                                "s3://artifacts/dm",
                                "--revision",
                                REV,
                                "--workdir",
                                f"{JOB_WORKDIR}/ml/handbook/{REV}/train",
                            ],
                            "env": [
                                manifest,
                                {"name": "DOCMODEL_STORE_ENDPOINT", "value": "http://minio:9000"},
                                secret(
                                    "DOCMODEL_STORE_AWS_ACCESS_KEY_ID",
                                    "store-creds",
                                    "AWS_ACCESS_KEY_ID",
                                ),
                                secret(
                                    "DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY",
                                    "store-creds",
                                    "AWS_SECRET_ACCESS_KEY",
                                ),
                                secret("AWS_ACCESS_KEY_ID", "docs-creds", "AWS_ACCESS_KEY_ID"),
                                secret(
                                    "AWS_SECRET_ACCESS_KEY", "docs-creds", "AWS_SECRET_ACCESS_KEY"
                                ),
                                secret("HF_TOKEN", "hf", "token"),
                            ],
                            "resources": {
                                "requests": {
                                    "cpu": "8",
                                    "memory": "64Gi",
                                    "ephemeral-storage": "29Gi",
                                    "nvidia.com/gpu": "2",
                                },
                                "limits": {
                                    "cpu": "8",
                                    "memory": "64Gi",
                                    "ephemeral-storage": "29Gi",
                                    "nvidia.com/gpu": "2",
                                },
                            },
                            "terminationMessagePolicy": "FallbackToLogsOnError",
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "readOnlyRootFilesystem": True,
                                "capabilities": {"drop": ["ALL"]},
                            },
                            "volumeMounts": [
                                {"name": "work", "mountPath": JOB_WORKDIR},
                                {"name": "tmp", "mountPath": "/tmp"},
                            ],
                        }
                    ],
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 10001,
                        "runAsGroup": 10001,
                        "fsGroup": 10001,
                        "seccompProfile": {"type": "RuntimeDefault"},
                    },
                    "volumes": [{"name": "work", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
                    "nodeSelector": {"nvidia.com/gpu.product": "H100"},
                    "tolerations": [
                        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
                    ],
                    "priorityClassName": "training",
                },
            },
        },
    }


def test_ingest_job_needs_no_gpu_and_gets_the_teacher_key() -> None:
    job = build_job(DM, OWNER, "ingest", REV, STORE, TRAINER)
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert job["metadata"]["name"] == f"handbook-{REV}-ingest"
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert not {"nodeSelector", "tolerations", "priorityClassName"} & set(pod)
    assert secret("DOCMODEL_TEACHER_API_KEY", "teacher", "api-key") in container["env"]


def test_evaluation_job_scores_the_serving_revision_and_is_named_for_it() -> None:
    job = build_job(DM, OWNER, "evaluate", REV, STORE, TRAINER, serving_revision="0000000001")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][-2:] == ["--serving-revision", "0000000001"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "2"
    name = job["metadata"]["name"]
    assert name == job_name(DM, "evaluate", REV, "0000000001")
    assert name != job_name(DM, "evaluate", REV, None)
    assert job_name(DM, "evaluate", REV, REV) == job_name(DM, "evaluate", REV, None)
    other = FULL | {"spec": FULL["spec"] | {"evaluation": {"maxQuestions": 10, "minQuestions": 5}}}
    assert job_name(parse_docmodel(other), "evaluate", REV) != job_name(DM, "evaluate", REV)


def test_no_secret_value_is_ever_inlined() -> None:
    objects = [
        *(build_job(DM, OWNER, s, REV, STORE, TRAINER) for s in ("ingest", "train", "evaluate")),  # type: ignore[arg-type]
        build_deployment(DM, OWNER, REV, STORE, SERVER),
        build_service(DM, OWNER, REV),
    ]
    text = json.dumps(objects)
    assert SECRET_VALUE not in text
    for obj in objects[:-1]:
        pod = obj["spec"]["template"]["spec"]
        for env in pod["containers"][0]["env"]:
            name = env["name"]
            if any(word in name for word in ("SECRET", "TOKEN", "API_KEY", "ACCESS_KEY")):
                assert "secretKeyRef" in env["valueFrom"], name


def test_server_deployment_is_the_expected_object() -> None:
    deployment = build_deployment(DM, OWNER, REV, STORE, SERVER)
    labels = {**LABELS, "app.kubernetes.io/component": "server"}
    spec = deployment["spec"]
    assert deployment["metadata"]["name"] == f"handbook-{REV}" == deployment_name("handbook", REV)
    assert deployment["metadata"]["ownerReferences"] == OWNER_REFS
    assert set(deployment["metadata"]["annotations"]) == {"docmodel.dev/serving-digest"}
    assert spec["replicas"] == 2 and spec["progressDeadlineSeconds"] == 600
    assert spec["selector"] == {
        "matchLabels": {
            "app.kubernetes.io/instance": "handbook",
            "app.kubernetes.io/component": "server",
            "docmodel.dev/revision": REV,
        }
    }
    assert spec["template"]["metadata"]["labels"] == labels
    container = spec["template"]["spec"]["containers"][0]
    assert container["command"] == ["docmodel-server"] and container["image"] == SERVER
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["readinessProbe"]["exec"]["command"] == ["docmodel-server", "probe", "--ready"]
    assert container["livenessProbe"]["exec"]["command"] == ["docmodel-server", "probe", "--live"]
    assert container["startupProbe"]["failureThreshold"] * 10 == 600
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["DOCMODEL_SERVED_NAME"] == "handbook"
    assert env["DOCMODEL_ADAPTER_URI"] == f"s3://artifacts/dm/ml/handbook/rev-{REV}/adapter"
    assert env["DOCMODEL_REVISION"] == REV and env["DOCMODEL_PORT"] == "8080"
    assert env["POD_IP"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    assert env["DOCMODEL_API_KEY"] == {"secretKeyRef": {"name": "api", "key": "token"}}


def test_service_selects_one_revision() -> None:
    service = build_service(DM, OWNER, REV)
    assert service == {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": "handbook",
            "namespace": "ml",
            "labels": {
                "app.kubernetes.io/name": "docmodel",
                "app.kubernetes.io/instance": "handbook",
                "app.kubernetes.io/component": "server",
                "app.kubernetes.io/managed-by": "docmodel-operator",
            },
            "ownerReferences": OWNER_REFS,
        },
        "spec": {
            "selector": {
                "app.kubernetes.io/instance": "handbook",
                "app.kubernetes.io/component": "server",
                "docmodel.dev/revision": REV,
            },
            "ports": [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    assert service_endpoint(DM) == "http://handbook.ml.svc:8080/v1"


def longest() -> DocModel:
    return parse_docmodel(FULL | {"metadata": {"name": "a" * 40, "namespace": "ml"}})


def test_names_fit_63_characters_and_are_stable() -> None:
    dm = longest()
    names = [job_name(dm, s, "f" * 10, "e" * 10) for s in ("ingest", "train", "evaluate")]  # type: ignore[arg-type]
    names.append(deployment_name(dm.metadata.name, "f" * 10))
    assert all(len(n) <= 63 for n in names), names
    again = [job_name(dm, s, "f" * 10, "e" * 10) for s in ("ingest", "train", "evaluate")]  # type: ignore[arg-type]
    assert names[:3] == again
    with pytest.raises(NameTooLong):
        child_name("a" * 50, "f" * 10, "ingest")


def test_pod_failure_policy_follows_the_exit_code_table() -> None:
    rule = pod_failure_policy("train")["rules"][0]
    assert rule["onExitCodes"]["values"] == [EXIT_BAD_INPUT, EXIT_NO_DATA]


def test_step_commands_carry_the_docmodel_but_no_status() -> None:
    with_status = parse_docmodel({**FULL, "status": {"phase": "Ready"}})
    command = step_command(with_status, "ingest", REV, STORE, source_dir="/docs")
    assert command.args[-2:] == ["--source-dir", "/docs"]
    manifest = json.loads(command.literal_env()["DOCMODEL_MANIFEST"])
    assert set(manifest) == {"apiVersion", "kind", "metadata", "spec"}
    assert "DOCMODEL_TEACHER_API_KEY" not in command.literal_env()


def test_evaluation_and_serving_schedule_on_their_own_settings() -> None:
    spec = FULL["spec"] | {
        "evaluation": {
            "resources": {"gpu": 1, "cpu": "4", "memory": "24Gi"},
            "nodeSelector": {"pool": "eval"},
        },
        "serving": FULL["spec"]["serving"]
        | {
            "nodeSelector": {"pool": "serve"},
            "tolerations": [{"key": "serve", "operator": "Exists"}],
        },
    }
    dm = parse_docmodel(FULL | {"spec": spec})
    pod = build_job(dm, OWNER, "evaluate", REV, STORE, TRAINER)["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "eval"}
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    # Unset tolerations and priority class fall back to training's.
    assert pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert pod["priorityClassName"] == "training"
    server = build_deployment(dm, OWNER, REV, STORE, SERVER)["spec"]["template"]["spec"]
    assert server["nodeSelector"] == {"pool": "serve"}
    assert server["tolerations"] == [{"key": "serve", "operator": "Exists"}]


def test_pods_without_a_node_of_their_own_take_the_operators_defaults() -> None:
    defaults = PodDefaults(node_selector={"docmodel.dev/node-kind": "local"})
    ingest = build_job(DM, OWNER, "ingest", REV, STORE, TRAINER, defaults=defaults)
    assert ingest["spec"]["template"]["spec"]["nodeSelector"] == {"docmodel.dev/node-kind": "local"}
    train = build_job(DM, OWNER, "train", REV, STORE, TRAINER, defaults=defaults)
    assert train["spec"]["template"]["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    server = build_deployment(DM, OWNER, REV, STORE, SERVER, defaults)
    assert server["spec"]["template"]["spec"]["nodeSelector"] == {"docmodel.dev/node-kind": "local"}
    recreate = parse_docmodel(FULL | {"spec": FULL["spec"] | {"serving": {"strategy": "Recreate"}}})
    assert build_deployment(recreate, OWNER, REV, STORE, SERVER)["spec"]["strategy"] == {
        "type": "Recreate"
    }
