"""Every child the builders render, for every example and test spec, as the API server takes
it: each DocModel is applied (the CRD accepts it), then its Jobs, Deployment, Service,
NetworkPolicies and disruption budget, and a pod from each pod template, are sent with a
server-side dry run into a namespace that enforces the restricted Pod Security Standard. A
combination of fields the CRD accepts but a Job, a Deployment or a pod refuses fails here, not
in a cluster's Job controller."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client.exceptions import ApiException

from docmodel.api import GROUP, PLURAL, VERSION, parse_docmodel
from docmodel.builders import (
    STEPS,
    Owner,
    StoreConfig,
    build_deployment,
    build_disruption_budget,
    build_job,
    build_server_policy,
    build_service,
    build_steps_policy,
)
from docmodel_devenv.pytest_plugin import Kube
from docmodel_devenv.stack import DevEnv

from testkit.clusterlib import enforce_restricted
from testkit.operatorlib import docmodel

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
REVISION = "3f2a9c01de"
STORE = StoreConfig("s3://artifacts/dm", "http://minio:9000", "docmodel-store")


def specs() -> list[tuple[str, dict[str, Any]]]:
    """Every DocModel of examples/, and the specs the cluster tests apply."""
    out = []
    for path in sorted(ROOT.glob("examples/**/*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "DocModel":
                out.append((str(path.relative_to(ROOT)), doc))
    tests = docmodel("lifecycle", "docs", "http://127.0.0.1:9000", "/models/tiny")
    out.append(("tests: the operator's lifecycle", tests))
    out.append(
        (
            "tests: several replicas, a policy with peers",
            docmodel(
                "replicas",
                "docs",
                "http://127.0.0.1:9000",
                "/models/tiny",
                serving={
                    "replicas": 3,
                    "networkPolicy": {
                        "allowFrom": [
                            {"namespaceSelector": {"matchLabels": {"team": "portal"}}},
                            {"podSelector": {"matchLabels": {"app": "chat"}}},
                        ]
                    },
                },
                security={"readOnlyRootFilesystem": False, "runAsUser": 1000},
            ),
        )
    )
    return out


SPECS = specs()


def rendered(body: dict[str, Any], owner: Owner) -> list[dict[str, Any]]:
    dm = parse_docmodel(body)
    serving = "0123456789"
    out = [build_job(dm, owner, step, REVISION, STORE, "docmodel/trainer:0") for step in STEPS]
    out.append(build_job(dm, owner, "evaluate", REVISION, STORE, "t:0", serving_revision=serving))
    out.append(build_deployment(dm, owner, REVISION, STORE, "docmodel/server:0"))
    out += [build_service(dm, owner, REVISION), build_server_policy(dm, owner)]
    out.append(build_steps_policy(dm, owner))
    budget = build_disruption_budget(dm, owner, REVISION)
    if budget is not None:
        out.append(budget)
    return out


def create_dry(kube: Kube, namespace: str, obj: dict[str, Any]) -> None:
    from kubernetes import client

    networking = client.NetworkingV1Api(kube.api_client)
    policy = client.PolicyV1Api(kube.api_client)
    create = {
        "Job": kube.batch.create_namespaced_job,
        "Deployment": kube.apps.create_namespaced_deployment,
        "Service": kube.core.create_namespaced_service,
        "Pod": kube.core.create_namespaced_pod,
        "NetworkPolicy": networking.create_namespaced_network_policy,
        "PodDisruptionBudget": policy.create_namespaced_pod_disruption_budget,
    }[obj["kind"]]
    create(namespace, obj, dry_run="All", field_validation="Strict")


def pod_of(obj: dict[str, Any]) -> dict[str, Any]:
    template = copy.deepcopy(obj["spec"]["template"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {**template.get("metadata", {}), "name": f"{obj['metadata']['name']}-x"},
        "spec": template["spec"],
    }


@pytest.fixture
def priority_class(kube: Kube) -> None:
    """The PriorityClass examples/complete.yaml names (the Priority admission checks it)."""
    from kubernetes import client

    scheduling = client.SchedulingV1Api(kube.api_client)
    body = {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": "batch-low"},
        "value": 100,
    }
    try:
        scheduling.create_priority_class(body)
    except ApiException as exc:
        if exc.status != 409:
            raise


@pytest.mark.parametrize(("origin", "body"), SPECS, ids=[origin for origin, _ in SPECS])
def test_every_rendered_child_is_accepted_in_a_restricted_namespace(
    kube: Kube, crd: str, namespace: str, priority_class: None, origin: str, body: dict[str, Any]
) -> None:
    enforce_restricted(kube, namespace)
    body = copy.deepcopy(body)
    body["metadata"] = {"name": body["metadata"]["name"], "namespace": namespace}
    created = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    owner = Owner(body["metadata"]["name"], namespace, created["metadata"]["uid"])
    # The operator parses the object as the API server stored it (with its defaults).
    children = rendered(created, owner)
    kinds = [c["kind"] for c in children]
    assert kinds.count("NetworkPolicy") == 2 and "Deployment" in kinds, kinds
    refused = []
    for child in children + [pod_of(c) for c in children if c["kind"] in ("Job", "Deployment")]:
        try:
            create_dry(kube, namespace, child)
        except ApiException as exc:
            refused.append(f"{child['kind']} {child['metadata']['name']}: {exc.body}")
    assert refused == [], f"{origin}: " + "\n".join(refused)


# -- the training engines' resources, against the engines' own CRDs -----------------------------


@pytest.fixture(scope="module")
def engine_crds_installed(devenv: DevEnv) -> None:
    """The PyTorchJob CRD of Kubeflow's training operator and the TrainJob CRD of Kubeflow
    Trainer, from their Go modules, Established."""
    from docmodel_devenv.engines import install_crds, pytorchjob_crd, trainjob_crd

    assert devenv.api is not None
    install_crds(devenv.api, [pytorchjob_crd(), trainjob_crd()])


@pytest.mark.parametrize("strategy", ["DDP", "FSDP"])
def test_engine_resources_are_accepted_by_the_engines_real_crds(
    kube: Kube, crd: str, namespace: str, engine_crds_installed: None, strategy: str
) -> None:
    from docmodel.builders import build_pytorchjob, build_trainjob

    body = docmodel("dist", "docs", "http://127.0.0.1:9000", "/models/tiny")
    body["metadata"] = {"name": "dist", "namespace": namespace}
    body["spec"].setdefault("training", {}).update(
        {
            "distributed": {"nodes": 3, "processesPerNode": 2, "strategy": strategy},
            "queueName": "gpu-team",
            "resources": {"gpu": 2, "cpu": "8", "memory": "32Gi"},
            "nodeSelector": {"nvidia.com/gpu.product": "H100"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
        }
    )
    created = kube.custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict"
    )
    dm = parse_docmodel(created)
    owner = Owner("dist", namespace, created["metadata"]["uid"])
    for group, version, plural, obj in (
        ("kubeflow.org", "v1", "pytorchjobs", build_pytorchjob(dm, owner, REVISION, STORE, "t:0")),
        (
            "trainer.kubeflow.org",
            "v1alpha1",
            "trainjobs",
            build_trainjob(dm, owner, REVISION, STORE, "t:0"),
        ),
    ):
        # Strict: a field the engine's schema does not know is an error, not silently pruned;
        # the schema's types and validation rules run as on a real create.
        kube.custom.create_namespaced_custom_object(
            group, version, namespace, plural, obj, dry_run="All", field_validation="Strict"
        )
