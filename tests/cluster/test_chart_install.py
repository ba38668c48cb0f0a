"""The Helm chart on the real control plane: its manifests pass a server-side dry run, a bad
value is refused, `helm install` creates the operator, the operator running as the chart's
ServiceAccount (its token, the Deployment's environment) serves a DocModel, and `helm uninstall`
leaves the CRD and the DocModels."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from docmodel.api import GROUP, PLURAL, VERSION
from docmodel_devenv.pytest_plugin import Kube, S3Bucket
from docmodel_devenv.stack import DevEnv

from testkit.chartlib import (
    ARGOCD,
    CHART,
    HEALTH,
    binary,
    fresh_namespace,
    helm,
    render,
    resolve_env,
    service_account_kubeconfig,
    values_file,
)
from testkit.clusterlib import kubectl, wait_for
from testkit.models import tiny_base_model
from testkit.operatorlib import (
    LOCAL_NODE,
    condition,
    docmodel,
    free_port,
    get,
    put_docs,
    running_operator,
    wait_status,
)

pytestmark = [pytest.mark.cluster]

CRD_NAME = f"{PLURAL}.{GROUP}"
# The chart's own pod goes to a kwok node, where it is scheduled and reported running but
# nothing runs: the test runs the operator process itself, as that pod would.
KWOK_NODE = {"docmodel.dev/node-kind": "kwok"}
NOT_INHERITED = ("DOCMODEL_", "AWS_", "KUBECONFIG", "KUBERNETES_")


def changed_fields(desired: Any, live: Any, path: str = "") -> list[str]:
    """Where `live` lost or changed a field `desired` sets (fields it adds are not listed:
    Argo CD's diff does not flag them either)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return [path or "/"]
        out = []
        for key, value in desired.items():
            child = f"{path}/{key.replace('~', '~0').replace('/', '~1')}"
            if value in ("", None, {}, []) and key not in live:
                continue  # an empty value the API types omit
            out += [child] if key not in live else changed_fields(value, live[key], child)
        return out
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return [path]
        return [
            p
            for i, item in enumerate(desired)
            for p in changed_fields(item, live[i], f"{path}/{i}")
        ]
    return [] if desired == live else [path]


def dry_run(devenv: DevEnv, docs: list[dict[str, Any]], directory: Path) -> list[dict[str, Any]]:
    """Server-side apply of `docs` with dryRun=All: what the API server would store. (With
    --force-conflicts: the CRD may already belong to another field manager, e.g. a release.)"""
    path = directory / "manifests.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    result = kubectl(
        devenv,
        "apply",
        "--server-side",
        "--dry-run=server",
        "--force-conflicts",
        "--field-manager=chart-dry-run",
        "-o",
        "json",
        "-f",
        str(path),
    )
    out = json.loads(result.stdout)
    items: list[dict[str, Any]] = out["items"] if out.get("kind") == "List" else [out]
    return items


@pytest.mark.parametrize("mode", ["cluster-wide", "namespaced"])
def test_rendered_manifests_pass_a_server_side_dry_run(
    devenv: DevEnv, crd: str, namespace: str, tmp_path: Path, mode: str
) -> None:
    values: dict[str, Any] = {"store": {"uri": "s3://acme-docmodel/artifacts"}}
    with fresh_namespace(devenv, "watched") as watched:
        if mode == "namespaced":
            values["watchNamespaces"] = [watched, namespace]
        docs = render(values, release=f"dry-{mode}", namespace=namespace)
        stored = dry_run(devenv, docs, tmp_path)
    assert [(o["kind"], o["metadata"]["name"]) for o in stored] == [
        (d["kind"], d["metadata"]["name"]) for d in docs
    ]
    # The API server keeps every field the manifests set: nothing for Argo CD to flag.
    for desired, live in zip(docs, stored, strict=True):
        assert changed_fields(desired, live) == [], desired["kind"]


def test_api_server_only_adds_defaults_to_a_docmodel(
    devenv: DevEnv, crd: str, namespace: str, tmp_path: Path
) -> None:
    """Why the example Application ignores a DocModel's /status only: the API server adds the
    spec's defaults (additions, which Argo CD's diff does not flag) and changes nothing the
    manifest sets; the operator writes the status and nothing else (the install test below)."""
    application = yaml.safe_load((ARGOCD / "application.yaml").read_text())
    ignored = {
        (rule["group"], rule["kind"]): rule["jsonPointers"]
        for rule in application["spec"]["ignoreDifferences"]
    }
    assert ignored[(GROUP, "DocModel")] == ["/status"]
    for path in sorted((ARGOCD / "docmodels").glob("*.yaml")):
        obj = yaml.safe_load(path.read_text())
        obj["metadata"]["namespace"] = namespace
        (live,) = dry_run(devenv, [obj], tmp_path)
        assert live["spec"]["training"], "the API server filled in the defaults"
        assert changed_fields(obj, live) == [], path.name


def test_helm_install_refuses_a_bad_value(devenv: DevEnv, namespace: str) -> None:
    result = helm(
        "install",
        "bad",
        str(CHART),
        "--namespace",
        namespace,
        "--set",
        "replicaCount=x",
        kubeconfig=devenv.kubeconfig,
        check=False,
    )
    assert result.returncode != 0
    assert "at '/replicaCount': got string, want integer" in result.stderr, result.stderr
    listed = helm("list", "--namespace", namespace, "-q", kubeconfig=devenv.kubeconfig)
    assert listed.stdout.strip() == ""


def adopt_crd(devenv: DevEnv, release: str, namespace: str) -> None:
    """Mark the CRD applied from crds/ as the release's, so that Helm takes it over (what
    docs/install.md says to do after a `kubectl apply -f crds/`)."""
    kubectl(devenv, "label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    kubectl(
        devenv,
        "annotate",
        "--overwrite",
        "crd",
        CRD_NAME,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


def ready(obj: dict[str, Any]) -> bool:
    """Whether the DocModel is Ready; an end it cannot leave fails at once, with its status."""
    status = obj.get("status") or {}
    if status.get("phase") in ("Failed", "Rejected"):
        raise AssertionError("the DocModel ended " + json.dumps(status, indent=1)[-4000:])
    return (condition(obj, "Ready") or {}).get("status") == "True"


def whoami(kubeconfig: Path) -> str:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    try:
        review = client.AuthenticationV1Api(api_client).create_self_subject_review(
            client.V1SelfSubjectReview()
        )
    finally:
        api_client.close()
    return str(review.status.user_info.username)


def health_of(obj: dict[str, Any], directory: Path) -> dict[str, Any]:
    """What the Argo CD health script says of a live object."""
    path = directory / "live.yaml"
    path.write_text(yaml.safe_dump(obj))
    result = subprocess.run(
        [str(binary("argocd-health", "argocd-health")), str(HEALTH / "health.lua"), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    out: dict[str, Any] = json.loads(result.stdout)
    return out


@pytest.mark.e2e
@pytest.mark.slow
def test_installed_chart_runs_the_operator_as_its_service_account_and_uninstall_keeps_crds(
    devenv: DevEnv, kube: Kube, crd: str, namespace: str, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    release = "docmodel"
    base_model = str(tiny_base_model())
    with fresh_namespace(devenv, "ml") as watched:
        # The store's Secret: the operator's in the release namespace, the pods' in the
        # DocModel's; and the Secret the DocModel's source names.
        s3_bucket.put_secret(devenv, namespace, "docmodel-store")
        s3_bucket.put_secret(devenv, watched, "docmodel-store")
        s3_bucket.put_secret(devenv, watched)
        creds = s3_bucket.credentials
        values = {
            "watchNamespaces": [watched],
            "store": {
                "uri": f"s3://{s3_bucket.name}/artifacts",
                "endpoint": creds.endpoint,
                "region": creds.region,
            },
            "workloads": {"nodeSelector": LOCAL_NODE},
            "operator": {
                "resyncSeconds": 2,
                "cleanupDelaySeconds": 5,
                "livenessPort": free_port(),
                "metricsPort": free_port(),
            },
            "nodeSelector": KWOK_NODE,
        }
        adopt_crd(devenv, release, namespace)
        installed = helm(
            "install",
            release,
            str(CHART),
            "--namespace",
            namespace,
            "-f",
            str(values_file(values, tmp_path)),
            "--wait",
            "--timeout=120s",
            kubeconfig=devenv.kubeconfig,
        )
        # The notes say what to create next, with this release's names.
        assert f"watching the namespaces {watched}" in installed.stdout
        assert f"kubectl -n {watched} create secret generic docmodel-store" in installed.stdout
        assert f"kubectl -n {watched} wait --for=condition=Ready dm/handbook" in installed.stdout

        name = f"{release}-docmodel-operator"
        deployment = kube.apps.read_namespaced_deployment(name, namespace)
        assert deployment.status.available_replicas == 1
        assert deployment.spec.template.spec.service_account_name == name
        crd_obj = kube.apiextensions.read_custom_resource_definition(CRD_NAME)
        assert crd_obj.metadata.annotations["helm.sh/resource-policy"] == "keep"
        assert crd_obj.metadata.labels["helm.sh/chart"].startswith("docmodel-operator-")

        # The operator as the chart's pod would run it: the installed Deployment's environment
        # (Secret keys resolved as the kubelet does) and the ServiceAccount's own token.
        manifest = helm("get", "manifest", release, "-n", namespace, kubeconfig=devenv.kubeconfig)
        (rendered,) = [
            d for d in yaml.safe_load_all(manifest.stdout) if d and d["kind"] == "Deployment"
        ]
        token_config = service_account_kubeconfig(
            kube, devenv.kubeconfig, namespace, name, tmp_path / "operator.kubeconfig"
        )
        assert whoami(token_config) == f"system:serviceaccount:{namespace}:{name}"
        # (The test's own process environment minus anything that configures the operator or
        # its credentials: all of that comes from the chart.)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)},
            "PYTHONUNBUFFERED": "1",
            **resolve_env(kube, namespace, rendered),
            "KUBECONFIG": str(token_config),
        }
        with running_operator(env, tmp_path / "operator.log") as operator:
            put_docs(
                s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"]
            )
            body = docmodel("handbook", s3_bucket.name, s3_bucket.endpoint, base_model)
            body["metadata"]["namespace"] = watched
            kube.custom.create_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, body)
            obj = wait_status(kube, watched, "handbook", ready, 600, "Ready")
            assert obj["status"]["phase"] == "Ready"
            assert (condition(obj, "Promoted") or {}).get("status") == "True"
            log = operator.text()
        for forbidden in ("Forbidden", "forbidden", "403", "Not enough permissions"):
            assert forbidden not in log, f"{forbidden!r} in the operator's log:\n{log[-4000:]}"
        # The operator wrote the status only: no finalizer, no annotation of its own.
        assert not obj["metadata"].get("finalizers")
        assert not (obj["metadata"].get("annotations") or {})
        assert health_of(obj, tmp_path)["status"] == "Healthy"

        helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=devenv.kubeconfig)
        # The release's objects are gone; the CRD (keep) and the DocModel are not.
        wait_for(
            lambda: (
                not kube.apps.list_namespaced_deployment(
                    namespace, label_selector=f"app.kubernetes.io/instance={release}"
                ).items
            ),
            60,
            "the operator's Deployment to go",
        )
        rbac = client.RbacAuthorizationV1Api(kube.api_client)
        cluster_role = f"{name}-{namespace}"
        assert not [r for r in rbac.list_cluster_role().items if r.metadata.name == cluster_role]
        assert not rbac.list_namespaced_role(watched).items
        kept = kube.apiextensions.read_custom_resource_definition(CRD_NAME)
        assert kept.metadata.annotations["helm.sh/resource-policy"] == "keep"
        assert get(kube, watched, "handbook")["status"]["phase"] == "Ready"


def test_peered_operator_runs_as_its_service_account(
    devenv: DevEnv, kube: Kube, crd: str, namespace: str, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    """With peering, the ServiceAccount may create the ClusterKopfPeering, and Kopf may watch it
    and patch its record into it, while the operator reconciles."""
    release = "peered"
    peering = f"docmodel-{namespace[-12:]}"
    with fresh_namespace(devenv, "ml") as watched:
        s3_bucket.put_secret(devenv, namespace, "docmodel-store")
        s3_bucket.put_secret(devenv, watched, "docmodel-store")
        s3_bucket.put_secret(devenv, watched)
        values = {
            "replicaCount": 2,
            "watchNamespaces": [watched],
            "peering": {"enabled": True, "name": peering},
            "crds": {"enabled": False},  # the session's CRDs come from crds/
            "store": {
                "uri": f"s3://{s3_bucket.name}/artifacts",
                "endpoint": s3_bucket.endpoint,
                "region": s3_bucket.credentials.region,
            },
            "workloads": {"nodeSelector": LOCAL_NODE},
            "operator": {"livenessPort": free_port(), "metricsPort": free_port()},
            "nodeSelector": KWOK_NODE,
        }
        path = values_file(values, tmp_path)
        helm("install", release, str(CHART), "-n", namespace, "-f", str(path), "--wait",
             "--timeout=120s", kubeconfig=devenv.kubeconfig)  # fmt: skip
        try:
            name = f"{release}-docmodel-operator"
            manifest = helm(
                "get", "manifest", release, "-n", namespace, kubeconfig=devenv.kubeconfig
            )
            (rendered,) = [
                d for d in yaml.safe_load_all(manifest.stdout) if d and d["kind"] == "Deployment"
            ]
            assert rendered["spec"]["replicas"] == 2
            token_config = service_account_kubeconfig(
                kube, devenv.kubeconfig, namespace, name, tmp_path / "operator.kubeconfig"
            )
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(NOT_INHERITED)},
                "PYTHONUNBUFFERED": "1",
                **resolve_env(kube, namespace, rendered),
                "KUBECONFIG": str(token_config),
            }
            put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll"])
            with running_operator(env, tmp_path / "operator.log") as operator:
                started = wait_for(
                    lambda: "Started operator" in operator.text() and operator.text(),
                    60,
                    "the operator to start",
                )
                identity = started.split("identity=", 1)[1].split()[0]
                body = docmodel("peered", s3_bucket.name, s3_bucket.endpoint, "/unused/model")
                body["metadata"]["namespace"] = watched
                kube.custom.create_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, body)
                wait_for(lambda: "Created job=" in operator.text(), 60, "the first Job")
                record = wait_for(
                    lambda: (
                        kube.custom.get_cluster_custom_object(
                            "kopf.dev", "v1", "clusterkopfpeerings", peering
                        ).get("status")
                        or {}
                    ).get(identity),
                    30,
                    "the operator's record in its peering",
                )
                assert record["priority"] > 0
                log = operator.text()
            for forbidden in ("Forbidden", "forbidden", "403", "Not enough permissions"):
                assert forbidden not in log, f"{forbidden!r} in the operator's log:\n{log[-4000:]}"
        finally:
            helm("uninstall", release, "-n", namespace, kubeconfig=devenv.kubeconfig)
            with contextlib.suppress(ApiException):  # not there if the operator never started
                kube.custom.delete_cluster_custom_object(
                    "kopf.dev", "v1", "clusterkopfpeerings", peering
                )
