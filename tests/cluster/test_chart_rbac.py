"""What the chart's ServiceAccount may do, asked of the real API server with the account's own
token (SelfSubjectAccessReview): every call the operator makes is allowed, in the namespaces it
watches or cluster-wide, and a table of others is refused."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from docmodel_devenv.engines import install_crds, kueue_crds, pytorchjob_crd, trainjob_crd
from docmodel_devenv.pytest_plugin import Kube
from docmodel_devenv.stack import DevEnv

from testkit.chartlib import CHART, fresh_namespace, helm, service_account_kubeconfig, values_file

pytestmark = [pytest.mark.cluster]

# (verb, group, resource, subresource, name): what the operator and Kopf call in a namespace
# they watch.
IN_WATCHED: list[tuple[str, str, str, str, str]] = [
    *[(v, "docmodel.dev", "docmodels", "", "") for v in ("list", "watch")],
    ("patch", "docmodel.dev", "docmodels", "status", "handbook"),
    ("update", "docmodel.dev", "docmodels", "finalizers", "handbook"),
    *[(v, "batch", "jobs", "", "") for v in ("list", "watch", "create", "deletecollection")],
    ("get", "batch", "jobs", "", "handbook-3f2a9c01de-train"),
    *[(v, "", "pods", "", "") for v in ("list", "watch")],
    *[(v, "apps", "deployments", "", "") for v in ("list", "watch", "create")],
    *[(v, "apps", "deployments", "", "handbook-3f2a9c01de") for v in ("patch", "delete")],
    *[(v, "", "services", "", "") for v in ("list", "watch", "create")],
    ("patch", "", "services", "", "handbook"),
    *[(v, "", "events", "", "") for v in ("create", "list")],
    ("create", "networking.k8s.io", "networkpolicies", "", ""),
    *[
        (v, "networking.k8s.io", "networkpolicies", "", "handbook-server")
        for v in ("patch", "delete")
    ],
    ("create", "policy", "poddisruptionbudgets", "", ""),
    *[
        (v, "policy", "poddisruptionbudgets", "", "handbook-3f2a9c01de")
        for v in ("patch", "delete")
    ],
    *[(v, "", "secrets", "", "") for v in ("list", "watch")],
    ("get", "", "secrets", "", "docmodel-store"),
    # Distributed training's engines and Kueue's Workloads (allowed whether or not the
    # cluster serves them: RBAC names resources, not what is installed).
    *[
        (v, "kubeflow.org", "pytorchjobs", "", "")
        for v in ("list", "watch", "create", "deletecollection")
    ],
    *[
        (v, "trainer.kubeflow.org", "trainjobs", "", "")
        for v in ("list", "watch", "create", "deletecollection")
    ],
    ("list", "kueue.x-k8s.io", "workloads", "", ""),
]
# Cluster-scoped reads of Kopf.
CRD_READ = [
    (v, "apiextensions.k8s.io", "customresourcedefinitions", "", "") for v in ("list", "watch")
]
NAMESPACE_READ = [(v, "", "namespaces", "", "") for v in ("list", "watch")]
PEERING = [
    *[(v, "kopf.dev", "clusterkopfpeerings", "", "") for v in ("list", "watch", "create")],
    *[(v, "kopf.dev", "clusterkopfpeerings", "", "docmodel") for v in ("get", "patch")],
]
# Refused wherever the operator runs: writes it never makes, reads it never needs.
REFUSED_IN_WATCHED = [
    *[(v, "", "secrets", "", "") for v in ("create", "deletecollection")],
    *[(v, "", "secrets", "", "docmodel-store") for v in ("update", "patch", "delete")],
    *[(v, "docmodel.dev", "docmodels", "", "") for v in ("create", "deletecollection")],
    *[(v, "docmodel.dev", "docmodels", "", "handbook") for v in ("update", "patch", "delete")],
    ("create", "", "pods", "", ""),
    ("create", "", "pods", "exec", "handbook-3f2a9c01de-train-x"),
    ("get", "", "pods", "log", "handbook-3f2a9c01de-train-x"),
    ("update", "apps", "deployments", "", "handbook-3f2a9c01de"),
    ("delete", "", "services", "", "handbook"),
    ("delete", "batch", "jobs", "", "handbook-3f2a9c01de-train"),
    *[
        (v, "kubeflow.org", "pytorchjobs", "", "handbook-3f2a9c01de-train")
        for v in ("get", "update", "patch", "delete")
    ],
    ("update", "trainer.kubeflow.org", "trainjobs", "", "handbook-3f2a9c01de-train"),
    *[(v, "kueue.x-k8s.io", "workloads", "", "") for v in ("create", "watch")],
    ("create", "kueue.x-k8s.io", "clusterqueues", "", ""),
    ("update", "networking.k8s.io", "networkpolicies", "", "handbook-server"),
    ("delete", "", "events", "", "handbook.1"),
    ("get", "", "configmaps", "", ""),
    ("create", "", "serviceaccounts", "token", "default"),
    ("create", "rbac.authorization.k8s.io", "roles", "", ""),
    ("create", "rbac.authorization.k8s.io", "rolebindings", "", ""),
]
REFUSED_CLUSTER = [
    *[(v, "", "nodes", "", "") for v in ("get", "list")],
    ("create", "", "namespaces", "", ""),
    ("delete", "", "namespaces", "", "kube-system"),
    *[(v, "apiextensions.k8s.io", "customresourcedefinitions", "", "") for v in ("create",)],
    *[
        (v, "apiextensions.k8s.io", "customresourcedefinitions", "", "docmodels.docmodel.dev")
        for v in ("update", "patch", "delete")
    ],
    ("create", "rbac.authorization.k8s.io", "clusterroles", "", ""),
    ("create", "rbac.authorization.k8s.io", "clusterrolebindings", "", ""),
    ("bind", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin"),
    ("escalate", "rbac.authorization.k8s.io", "clusterroles", "", "cluster-admin"),
    ("impersonate", "", "users", "", "admin"),
    ("impersonate", "", "serviceaccounts", "", ""),
]


class Access:
    """SelfSubjectAccessReviews as the ServiceAccount whose kubeconfig this holds."""

    def __init__(self, kubeconfig: Path):
        self.kubeconfig = kubeconfig
        self.api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
        self.api = client.AuthorizationV1Api(self.api_client)

    def can_i(self, kubectl: Path, verb: str, resource: str, namespace: str) -> str:
        """`kubectl auth can-i VERB RESOURCE -n NAMESPACE` as the ServiceAccount: yes or no."""
        argv = [str(kubectl), f"--kubeconfig={self.kubeconfig}", "auth", "can-i", verb, resource]
        result = subprocess.run(
            [*argv, f"--namespace={namespace}"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        return result.stdout.strip()

    def allowed(self, check: tuple[str, ...], namespace: str) -> bool:
        verb, group, resource, subresource, *rest = check
        name = rest[0] if rest else ""
        review = client.V1SelfSubjectAccessReview(
            spec=client.V1SelfSubjectAccessReviewSpec(
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb,
                    group=group,
                    resource=resource,
                    subresource=subresource or None,
                    name=name or None,
                    namespace=namespace or None,
                )
            )
        )
        return bool(self.api.create_self_subject_access_review(review).status.allowed)

    def mismatches(
        self, checks: list[tuple[str, ...]], namespace: str, expected: bool
    ) -> list[str]:
        where = f"in {namespace}" if namespace else "cluster-wide"
        return [
            f"{'refused' if expected else 'allowed'}: {' '.join(c for c in check if c)} {where}"
            for check in checks
            if self.allowed(check, namespace) != expected
        ]


@contextmanager
def installed(
    devenv: DevEnv, kube: Kube, release: str, namespace: str, values: dict[str, Any], tmp: Path
) -> Iterator[Access]:
    """The chart installed as `release` (no pod: replicaCount 0); its ServiceAccount's access."""
    values = {"replicaCount": 0, "crds": {"enabled": False}, **values}
    path = values_file(values, tmp)
    helm(
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "-f",
        str(path),
        kubeconfig=devenv.kubeconfig,
    )
    access = None
    try:
        name = f"{release}-docmodel-operator"
        kubeconfig = service_account_kubeconfig(
            kube, devenv.kubeconfig, namespace, name, tmp / f"{release}.kubeconfig"
        )
        access = Access(kubeconfig)
        yield access
    finally:
        if access is not None:
            access.api_client.close()
        helm("uninstall", release, "-n", namespace, kubeconfig=devenv.kubeconfig)


def test_namespaced_install_grants_only_the_watched_namespaces(
    devenv: DevEnv, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    with (
        fresh_namespace(devenv, "watched-a") as first,
        fresh_namespace(devenv, "watched-b") as second,
        fresh_namespace(devenv, "other") as other,
    ):
        values = {
            "watchNamespaces": [first, second],
            "peering": {"enabled": True},
            "store": {"uri": "s3://acme-docmodel/artifacts"},
        }
        with installed(devenv, kube, "rbac-ns", namespace, values, tmp_path) as access:
            problems = []
            for watched in (first, second):
                problems += access.mismatches(IN_WATCHED, watched, True)
                problems += access.mismatches(REFUSED_IN_WATCHED, watched, False)
            problems += access.mismatches(CRD_READ + NAMESPACE_READ + PEERING, "", True)
            # Nothing in a namespace it does not watch, its own included, nor across all.
            for elsewhere in (other, namespace, ""):
                problems += access.mismatches(IN_WATCHED, elsewhere, False)
            problems += access.mismatches(REFUSED_CLUSTER, "", False)
            problems += access.mismatches(
                [
                    ("delete", "kopf.dev", "clusterkopfpeerings", "", "docmodel"),
                    ("patch", "kopf.dev", "clusterkopfpeerings", "", "another-operator"),
                    ("get", "kopf.dev", "clusterkopfpeerings", "", "another-operator"),
                ],
                "",
                False,
            )
    assert not problems, "\n".join(problems)


def test_cluster_wide_install_grants_the_operators_calls_everywhere_and_no_more(
    devenv: DevEnv, kube: Kube, namespace: str, tmp_path: Path
) -> None:
    values = {"store": {"uri": "s3://acme-docmodel/artifacts"}}
    with installed(devenv, kube, "rbac-cluster", namespace, values, tmp_path) as access:
        problems = access.mismatches(IN_WATCHED + CRD_READ, "", True)
        problems += access.mismatches(IN_WATCHED, "kube-system", True)
        problems += access.mismatches(REFUSED_IN_WATCHED, "", False)
        problems += access.mismatches(REFUSED_IN_WATCHED, "kube-system", False)
        problems += access.mismatches(REFUSED_CLUSTER, "", False)
        # Standalone (peering off): no peering and no namespace reads, which Kopf does not
        # make when it watches every namespace.
        problems += access.mismatches(NAMESPACE_READ + PEERING, "", False)
        # The training engines and Kueue, as an administrator checks them with kubectl on a
        # cluster that serves them (kubectl maps a resource name through discovery).
        assert devenv.api is not None
        install_crds(devenv.api, [pytorchjob_crd(), trainjob_crd(), *kueue_crds()])
        kubectl = devenv.binaries["kubectl"]
        for verb, resource, expected in ENGINE_CAN_I:
            answer = access.can_i(kubectl, verb, resource, namespace)
            if answer != expected:
                problems.append(f"kubectl auth can-i {verb} {resource}: {answer!r}, not {expected}")
    assert not problems, "\n".join(problems)


# `kubectl auth can-i` as the operator's ServiceAccount: the verbs distributed training and
# queues need, and no others.
ENGINE_CAN_I = [
    *[
        (verb, resource, "yes")
        for resource in ("pytorchjobs.kubeflow.org", "trainjobs.trainer.kubeflow.org")
        for verb in ("list", "watch", "create", "deletecollection")
    ],
    *[
        (verb, resource, "no")
        for resource in ("pytorchjobs.kubeflow.org", "trainjobs.trainer.kubeflow.org")
        for verb in ("get", "update", "patch", "delete")
    ],
    ("list", "workloads.kueue.x-k8s.io", "yes"),
    *[(verb, "workloads.kueue.x-k8s.io", "no") for verb in ("create", "update", "delete")],
    *[
        (verb, resource, "no")
        for resource in ("clusterqueues.kueue.x-k8s.io", "localqueues.kueue.x-k8s.io")
        for verb in ("list", "create")
    ],
]
