"""What the builders give every pod beyond its work: the restricted security contexts (and the
spec fields that adapt them), disk sized from the base model, the NetworkPolicies and which
pods each selects, the servers' disruption budget."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from docmodel.api import DocModel, SpecError, parse_docmodel
from docmodel.builders import (
    STEPS,
    Owner,
    StoreConfig,
    build_deployment,
    build_disruption_budget,
    build_job,
    build_server_policy,
    build_steps_policy,
    ephemeral_storage,
    model_parameters,
)

OWNER = Owner(name="handbook", namespace="ml", uid="0b7c-uid")
STORE = StoreConfig("s3://artifacts/dm")
REVISIONS = ("3f2a9c01de", "77aa01bc02")
BASE: dict[str, Any] = {
    "apiVersion": "docmodel.dev/v1alpha1",
    "kind": "DocModel",
    "metadata": {"name": "handbook", "namespace": "ml"},
    "spec": {"source": {"bucket": "docs"}},
}


def docmodel(name: str = "handbook", **spec: Any) -> DocModel:
    manifest = copy.deepcopy(BASE)
    manifest["metadata"]["name"] = name
    manifest["spec"].update(spec)
    return parse_docmodel(manifest)


def pods_of(dm: DocModel) -> list[dict[str, Any]]:
    """Every pod template the operator would create for `dm`: each step of two revisions and
    the servers of both."""
    owner = Owner(dm.metadata.name, dm.metadata.namespace, "uid")
    out = []
    for revision in REVISIONS:
        for step in STEPS:
            out.append(build_job(dm, owner, step, revision, STORE, "t")["spec"]["template"])
        out.append(build_deployment(dm, owner, revision, STORE, "s")["spec"]["template"])
    return out


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return list(obj["spec"]["template"]["spec"]["containers"])


# --------------------------------------------------------------------------------------------
# Security contexts
# --------------------------------------------------------------------------------------------


def test_every_pod_is_restricted_by_default() -> None:
    dm = docmodel()
    for template in pods_of(dm):
        pod = template["spec"]
        assert pod["securityContext"] == {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "runAsGroup": 10001,
            "fsGroup": 10001,
            "seccompProfile": {"type": "RuntimeDefault"},
        }
        for container in pod["containers"]:
            assert container["securityContext"] == {
                "allowPrivilegeEscalation": False,
                "readOnlyRootFilesystem": True,
                "capabilities": {"drop": ["ALL"]},
            }
        assert all("emptyDir" in volume for volume in pod["volumes"])


def test_security_fields_adapt_user_and_root_filesystem_but_never_allow_root() -> None:
    security = {"runAsUser": 1000, "runAsGroup": 2000, "fsGroup": 3000}
    dm = docmodel(security={**security, "readOnlyRootFilesystem": False})
    for template in pods_of(dm):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert {k: pod["securityContext"][k] for k in security} == security
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    with pytest.raises(SpecError, match=r"spec\.security\.runAsUser"):
        docmodel(security={"runAsUser": 0})


# --------------------------------------------------------------------------------------------
# Disk
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parameters"),
    [
        ("meta-llama/Llama-3.1-8B-Instruct", 8e9),
        ("meta-llama/Llama-3.1-70B-Instruct", 70e9),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", 135e6),
        ("mistralai/Mixtral-8x7B-Instruct-v0.1", 56e9),
        ("Qwen/Qwen2.5-0.5B", 0.5e9),
        ("/models/llama", None),
        ("org/model-v2", None),
    ],
)
def test_model_parameters_come_from_the_name(name: str, parameters: float | None) -> None:
    assert model_parameters(name) == parameters


def test_disk_is_sized_from_the_base_model_unless_the_spec_gives_it() -> None:
    # 8B in bf16 is 14.9 GiB; a quarter more and 10 GiB for a step's files.
    assert ephemeral_storage("meta-llama/Llama-3.1-8B-Instruct", 10) == "29Gi"
    assert ephemeral_storage("meta-llama/Llama-3.1-70B-Instruct", 10) == "173Gi"
    assert ephemeral_storage("/models/llama", 10) == "64Gi"
    dm = docmodel()
    owner = OWNER
    disk = {
        step: containers(build_job(dm, owner, step, REVISIONS[0], STORE, "t"))[0]["resources"]
        for step in STEPS
    }
    server = containers(build_deployment(dm, owner, REVISIONS[0], STORE, "s"))[0]["resources"]
    for resources in (*disk.values(), server):
        assert (
            resources["requests"]["ephemeral-storage"] == resources["limits"]["ephemeral-storage"]
        )
    assert disk["ingest"]["limits"]["ephemeral-storage"] == "10Gi"
    assert disk["train"]["limits"]["ephemeral-storage"] == "29Gi"
    assert disk["evaluate"]["limits"]["ephemeral-storage"] == "29Gi"
    assert server["limits"]["ephemeral-storage"] == "23Gi"
    given = docmodel(
        training={"resources": {"ephemeralStorage": "50Gi"}},
        serving={"resources": {"ephemeralStorage": "40Gi"}},
    )
    train = containers(build_job(given, owner, "train", REVISIONS[0], STORE, "t"))[0]
    assert train["resources"]["limits"]["ephemeral-storage"] == "50Gi"
    served = containers(build_deployment(given, owner, REVISIONS[0], STORE, "s"))[0]
    assert served["resources"]["requests"]["ephemeral-storage"] == "40Gi"


# --------------------------------------------------------------------------------------------
# Network policies: each selects exactly the pods it is meant for
# --------------------------------------------------------------------------------------------


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        present = expr["key"] in labels
        value = labels.get(expr["key"])
        match expr["operator"]:
            case "In":
                ok = present and value in expr["values"]
            case "NotIn":
                ok = not present or value not in expr["values"]
            case "Exists":
                ok = present
            case "DoesNotExist":
                ok = not present
        if not ok:
            return False
    return True


def test_each_policy_selects_exactly_its_pods() -> None:
    dm, neighbour = docmodel(), docmodel("handbook-v2")
    ours, theirs = pods_of(dm), pods_of(neighbour)
    operator_pod = {
        "metadata": {
            "labels": {
                "app.kubernetes.io/name": "docmodel-operator",
                "app.kubernetes.io/instance": "handbook",
            }
        }
    }
    everyone = [*ours, *theirs, operator_pod]
    server = build_server_policy(dm, OWNER)
    steps = build_steps_policy(dm, OWNER)

    def selected(policy: dict[str, Any]) -> list[dict[str, Any]]:
        return [
            p for p in everyone if selects(policy["spec"]["podSelector"], p["metadata"]["labels"])
        ]

    servers = [
        p for p in ours if p["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
    ]
    step_pods = [p for p in ours if p not in servers]
    assert len(servers) == 2 and len(step_pods) == 6
    assert selected(server) == servers  # both revisions' servers, nothing else
    assert selected(steps) == step_pods  # every step of every revision, nothing else
    # Together they cover every pod the operator makes for this DocModel.
    assert [p for p in ours if p not in selected(server) + selected(steps)] == []


def test_servers_take_only_the_serving_port_from_the_allowed_peers() -> None:
    dm = docmodel(serving={"port": 8080})
    policy = build_server_policy(dm, OWNER)
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    # Default: every pod of the DocModel's own namespace, on the serving port only.
    assert policy["spec"]["ingress"] == [
        {"from": [{"podSelector": {}}], "ports": [{"protocol": "TCP", "port": 8080}]}
    ]
    allowed = docmodel(
        serving={
            "networkPolicy": {
                "allowFrom": [
                    {"podSelector": {"matchLabels": {"app": "portal"}}},
                    {
                        "namespaceSelector": {"matchLabels": {"team": "chat"}},
                        "podSelector": {"matchLabels": {"role": "api"}},
                    },
                ]
            }
        }
    )
    assert build_server_policy(allowed, OWNER)["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"app": "portal"}}},
        {
            "namespaceSelector": {"matchLabels": {"team": "chat"}},
            "podSelector": {"matchLabels": {"role": "api"}},
        },
    ]
    steps = build_steps_policy(dm, OWNER)
    assert steps["spec"]["policyTypes"] == ["Ingress"] and steps["spec"]["ingress"] == []
    for policy in (build_server_policy(dm, OWNER), steps):
        assert policy["metadata"]["ownerReferences"][0]["uid"] == "0b7c-uid"


def test_a_peer_without_a_selector_is_refused() -> None:
    with pytest.raises(SpecError, match="a peer needs namespaceSelector, podSelector or both"):
        docmodel(serving={"networkPolicy": {"allowFrom": [{}]}})


# --------------------------------------------------------------------------------------------
# Disruption budget
# --------------------------------------------------------------------------------------------


def test_budget_only_for_several_replicas_and_only_over_its_revision() -> None:
    assert build_disruption_budget(docmodel(), OWNER, REVISIONS[0]) is None
    dm = docmodel(serving={"replicas": 3})
    budget = build_disruption_budget(dm, OWNER, REVISIONS[0])
    assert budget is not None
    assert budget["spec"]["maxUnavailable"] == 1
    selected = [
        p for p in pods_of(dm) if selects(budget["spec"]["selector"], p["metadata"]["labels"])
    ]
    assert len(selected) == 1
    assert selected[0]["metadata"]["labels"]["docmodel.dev/revision"] == REVISIONS[0]
    assert selected[0]["metadata"]["labels"]["app.kubernetes.io/component"] == "server"
