"""A container's environment, resolved the way the kubelet does it: ``envFrom``
first, then ``env`` (literal values with ``$(VAR)`` expansion, Secret and
ConfigMap keys, pod fields), then the process environment of the local node."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

from .kubeapi import ApiError, KubeApi

Obj = dict[str, Any]

_REFERENCE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
# Host variables a local process needs and that never leak pod identity.
_PASSTHROUGH = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "TERM")
_PASSTHROUGH_PREFIXES = ("HF_", "UV_")


class EnvError(RuntimeError):
    """A referenced Secret, ConfigMap or key is missing (the kubelet's CreateContainerConfigError)."""


def expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: known names are replaced, ``$$`` escapes."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REFERENCE.sub(replace, value)


def pod_field(pod: Obj, path: str) -> str:
    metadata, status, spec = pod["metadata"], pod.get("status", {}), pod["spec"]
    bracket = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if bracket:
        return str(metadata.get(bracket.group(1), {}).get(bracket.group(2), ""))
    values = {
        "metadata.name": metadata["name"],
        "metadata.namespace": metadata.get("namespace", "default"),
        "metadata.uid": metadata.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": status.get("podIP", ""),
        "status.podIPs": ",".join(ip["ip"] for ip in status.get("podIPs", [])),
        "status.hostIP": status.get("hostIP", ""),
        "status.hostIPs": ",".join(ip["ip"] for ip in status.get("hostIPs", [])),
    }
    if path not in values:
        raise EnvError(f"unsupported fieldRef fieldPath={path}")
    return str(values[path])


class _Lookups:
    """Secrets and ConfigMaps of one namespace, read once per container start."""

    def __init__(self, api: KubeApi, namespace: str) -> None:
        self.api, self.namespace = api, namespace
        self.cache: dict[tuple[str, str], Obj | None] = {}

    def data(self, kind: str, name: str, optional: bool) -> dict[str, str] | None:
        key = (kind, name)
        if key not in self.cache:
            try:
                self.cache[key] = self.api.get("v1", kind, name, namespace=self.namespace)
            except ApiError as error:
                if error.status != 404:
                    raise
                self.cache[key] = None
        obj = self.cache[key]
        if obj is None:
            if optional:
                return None
            raise EnvError(f'{kind[:-1]} "{name}" not found')
        if kind == "secrets":
            return {k: base64.b64decode(v).decode() for k, v in obj.get("data", {}).items()}
        return dict(obj.get("data", {}))

    def key(self, kind: str, ref: Obj) -> str | None:
        optional = bool(ref.get("optional", False))
        data = self.data(kind, ref["name"], optional)
        if data is None:
            return None
        if ref["key"] not in data:
            if optional:
                return None
            raise EnvError(
                f"couldn't find key {ref['key']} in {kind[:-1]} {self.namespace}/{ref['name']}"
            )
        return data[ref["key"]]


def container_env(
    api: KubeApi,
    pod: Obj,
    container: Obj,
    path_prefix: list[Path],
    extra: dict[str, str],
    inherit_host: bool = True,
) -> dict[str, str]:
    """The full process environment for ``container`` of ``pod``; without `inherit_host` (a
    container, which has its image's own PATH and HOME), only the pod's variables and `extra`."""
    lookups = _Lookups(api, pod["metadata"].get("namespace", "default"))
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        prefix = source.get("prefix", "")
        for kind, ref_key in (("configmaps", "configMapRef"), ("secrets", "secretRef")):
            if ref_key in source:
                ref = source[ref_key]
                data = lookups.data(kind, ref["name"], bool(ref.get("optional", False))) or {}
                env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env", []):
        name, value_from = var["name"], var.get("valueFrom")
        value: str | None
        if value_from is None:
            value = expand(var.get("value", ""), env)
        elif "secretKeyRef" in value_from:
            value = lookups.key("secrets", value_from["secretKeyRef"])
        elif "configMapKeyRef" in value_from:
            value = lookups.key("configmaps", value_from["configMapKeyRef"])
        elif "fieldRef" in value_from:
            value = pod_field(pod, value_from["fieldRef"]["fieldPath"])
        elif "resourceFieldRef" in value_from:
            resource = value_from["resourceFieldRef"]["resource"]
            section, _, name_ = resource.partition(".")
            value = str(container.get("resources", {}).get(section, {}).get(name_, "0"))
        else:
            raise EnvError(f"unsupported valueFrom in env {name}")
        if value is not None:
            env[name] = value

    if not inherit_host:
        return {"HOSTNAME": pod["metadata"]["name"], **extra, **env}
    process_env = {k: v for k, v in os.environ.items() if k in _PASSTHROUGH}
    process_env.update({k: v for k, v in os.environ.items() if k.startswith(_PASSTHROUGH_PREFIXES)})
    process_env["PATH"] = os.pathsep.join(
        [*(str(p) for p in path_prefix), os.environ.get("PATH", "/usr/bin:/bin")]
    )
    process_env["HOSTNAME"] = pod["metadata"]["name"]
    process_env.update(extra)
    process_env.update(env)
    return process_env
