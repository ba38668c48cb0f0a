"""Helpers for the Helm chart and Argo CD tests: the helm binary and the health-script runner
(both built from their Go modules under tools/ on first use, then cached), rendering the chart,
and credentials of the chart's ServiceAccount."""

from __future__ import annotations

import atexit
import base64
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from docmodel_devenv import build

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "docmodel-operator"
ARGOCD = ROOT / "argocd"
HEALTH = ARGOCD / "resource_customizations" / "docmodel.dev" / "DocModel"


@cache
def binary(family: str, name: str) -> Path:
    """A built binary of `family`, built now if it is not in the cache yet."""
    return build.build_family(build.FAMILIES[family])[name]


@cache
def _helm_home() -> Path:
    # Helm keeps its repositories, plugins and cache under these; the tests use none of the
    # user's, and leave none behind.
    home = Path(tempfile.mkdtemp(prefix="docmodel-helm-"))
    atexit.register(shutil.rmtree, home, True)
    return home


def helm(
    *args: str, kubeconfig: Path | None = None, check: bool = True, timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run the built helm; with `check`, fail with its output when it fails."""
    home = _helm_home()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    command = [str(binary("helm", "helm")), *args]
    if kubeconfig is not None:
        command.append(f"--kubeconfig={kubeconfig}")
    result = subprocess.run(
        command, capture_output=True, text=True, env=env, check=False, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}"
        )
    return result


def values_file(values: dict[str, Any], directory: Path | None = None) -> Path:
    """Write `values` to a YAML file for `helm -f`."""
    handle, name = tempfile.mkstemp(prefix="values-", suffix=".yaml", dir=directory)
    with os.fdopen(handle, "w") as out:
        yaml.safe_dump(values, out)
    return Path(name)


def template(
    values: dict[str, Any] | None = None,
    *,
    release: str = "docmodel",
    namespace: str = "docmodel-system",
    args: tuple[str, ...] = (),
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with `values`."""
    path = values_file(values or {})
    try:
        return helm(
            "template", release, str(CHART), "--namespace", namespace, "-f", str(path), *args,
            check=check,
        )  # fmt: skip
    finally:
        path.unlink()


def render(values: dict[str, Any] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """The chart's objects for `values`, parsed."""
    text = template(values, **kwargs).stdout
    return [doc for doc in yaml.safe_load_all(text) if doc]


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = objects(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def container_env(deployment: dict[str, Any]) -> dict[str, Any]:
    """The operator container's env, by name (a value, or the valueFrom mapping)."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def service_account_kubeconfig(
    kube: Any, admin_kubeconfig: Path, namespace: str, name: str, path: Path
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount `namespace/name` with a token the
    API server issues for it (TokenRequest), exactly as a pod of it would: the same user and
    groups, so the same RBAC."""
    from kubernetes import client

    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    token = kube.core.create_namespaced_service_account_token(name, namespace, request)
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]  # the server and its CA, embedded
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "dev", "cluster": cluster}],
        "users": [{"name": name, "user": {"token": token.status.token}}],
        "contexts": [{"name": name, "context": {"cluster": "dev", "user": name}}],
        "current-context": name,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


@contextmanager
def fresh_namespace(devenv: Any, prefix: str) -> Iterator[str]:
    """A new namespace (with its default ServiceAccount, so it can run pods), deleted after."""
    from docmodel_devenv.kubeapi import create_namespace

    api = devenv.api
    name = f"{prefix}-{secrets.token_hex(3)}"
    create_namespace(api, name)
    try:
        yield name
    finally:
        api.delete("v1", "namespaces", name)


def resolve_env(kube: Any, namespace: str, deployment: dict[str, Any]) -> dict[str, str]:
    """The operator container's environment as the kubelet would give it: literal values and
    Secret keys of the Deployment's namespace."""
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "valueFrom" not in item:
            env[item["name"]] = item.get("value", "")
            continue
        ref = item["valueFrom"].get("secretKeyRef")
        assert ref is not None, f"the test resolves only secretKeyRef, not {item['valueFrom']}"
        secret = kube.core.read_namespaced_secret(ref["name"], namespace)
        env[item["name"]] = base64.b64decode(secret.data[ref["key"]]).decode()
    return env
