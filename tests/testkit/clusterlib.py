"""Helpers shared by the cluster tests."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from docmodel_devenv.stack import DevEnv


def kubectl(env: DevEnv, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the built kubectl against the dev cluster; fail with its stderr. A `--timeout=Ns`
    argument (kubectl wait) bounds the command too, with a minute to spare."""
    limit = 60.0
    for arg in args:
        if arg.startswith("--timeout=") and arg.endswith("s") and arg[10:-1].isdigit():
            limit = max(limit, float(arg[10:-1]) + 60)
    result = subprocess.run(
        [str(env.binaries["kubectl"]), f"--kubeconfig={env.kubeconfig}", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=limit,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll until ``predicate()`` returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


def enforce_restricted(kube: Any, namespace: str, image: str = "docmodel/any:0") -> None:
    """Label `namespace` to enforce the restricted Pod Security Standard (the API server's
    own admission) and check that it does: a bare pod is refused by a server-side dry run."""
    from kubernetes.client.exceptions import ApiException

    kube.core.patch_namespace(namespace, {"metadata": {"labels": RESTRICTED}})
    bare = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "bare"},
        "spec": {"containers": [{"name": "c", "image": image}]},
    }
    try:
        kube.core.create_namespaced_pod(namespace, bare, dry_run="All")
    except ApiException as refused:
        assert "violates PodSecurity" in str(refused.body), refused.body
    else:
        raise AssertionError(f"namespace {namespace} admits a pod that runs as root")
