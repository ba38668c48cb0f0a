"""A container's environment, resolved the way the kubelet does it: ``envFrom``
first, then ``env`` (literal values with ``$(VAR)`` expansion, Secret and
ConfigMap keys, pod fields), then the process environment of the local node; and a pod's
/etc/hosts and hostname, with the Service names cluster DNS would answer."""

from __future__ import annotations

import base64
import functools
import os
import re
import shutil
import subprocess
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


# --- /etc/hosts and the hostname of a pod -------------------------------------------------
#
# The kubelet gives every pod (but a hostNetwork one) a hostname of its own and a managed
# /etc/hosts bind-mounted into its containers; cluster DNS answers Service names. The local
# node has neither DNS server nor routable Service addresses, so it writes the names cluster
# DNS would answer into that same hosts file: a Service of the pod's namespace resolves to the
# ready pods it selects (every one for a headless Service, the first for one with a cluster
# IP), and `<hostname>.<subdomain>` to a pod behind a headless Service named `<subdomain>`.
# The runner rewrites the file in place as pods come and go, as DNS answers would change.

CLUSTER_DOMAIN = "cluster.local"
HOSTS_HEADER = "# Kubernetes-managed hosts file.\n"
_HOSTS_BASE = (
    "127.0.0.1\tlocalhost\n"
    "::1\tlocalhost ip6-localhost ip6-loopback\n"
    "fe00::0\tip6-localnet\n"
    "fe00::0\tip6-mcastprefix\n"
    "fe00::1\tip6-allnodes\n"
    "fe00::2\tip6-allrouters\n"
)
_SERVICES_HEADER = (
    "\n# Service names, as cluster DNS would answer them (the local node has no DNS).\n"
)
# In a private mount and UTS namespace: the pod's hosts file over /etc/hosts, its hostname.
_IN_POD_SCRIPT = (
    'mount --bind "$0" /etc/hosts && printf %s "$1" > /proc/sys/kernel/hostname '
    '&& shift && exec "$@"'
)


def pod_hostname(pod: Obj) -> str:
    """The pod's hostname as the kubelet sets it: ``spec.hostname`` or the pod's name, cut
    to 63 characters."""
    name = pod["spec"].get("hostname") or pod["metadata"]["name"]
    return str(name)[:63].rstrip("-.")


def _service_names(name: str, namespace: str) -> list[str]:
    fqdn = f"{name}.{namespace}.svc.{CLUSTER_DOMAIN}"
    return [fqdn, f"{name}.{namespace}.svc", f"{name}.{namespace}", name]


def _selects(selector: dict[str, str], pod: Obj) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return all(labels.get(key) == value for key, value in selector.items())


def _serving(pod: Obj, not_ready_too: bool) -> bool:
    """Whether DNS would answer with this pod: it has an address, is not finished or being
    deleted, and is Ready (or the Service publishes addresses that are not)."""
    status = pod.get("status") or {}
    if not status.get("podIP") or status.get("phase") in ("Succeeded", "Failed"):
        return False
    if pod["metadata"].get("deletionTimestamp"):
        return False
    if not_ready_too:
        return True
    conditions = status.get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def service_entries(namespace: str, services: list[Obj], pods: list[Obj]) -> list[str]:
    """Hosts-file lines for the Services of `namespace` that have a pod behind them."""
    lines: list[str] = []
    for service in sorted(services, key=lambda s: s["metadata"]["name"]):
        spec, name = service.get("spec") or {}, service["metadata"]["name"]
        selector = spec.get("selector") or {}
        if not selector or spec.get("type") == "ExternalName":
            continue
        not_ready_too = bool(spec.get("publishNotReadyAddresses"))
        behind = sorted(
            (
                p
                for p in pods
                if p["metadata"].get("namespace", namespace) == namespace
                and _selects(selector, p)
                and _serving(p, not_ready_too)
            ),
            key=lambda p: p["metadata"]["name"],
        )
        if not behind:
            continue
        headless = spec.get("clusterIP") == "None"
        # A cluster IP routes nowhere here (no kube-proxy): the name goes to a pod instead.
        for pod in behind if headless else behind[:1]:
            lines.append("\t".join([pod["status"]["podIP"], *_service_names(name, namespace)]))
        if headless:
            for pod in behind:
                pod_spec = pod.get("spec") or {}
                if pod_spec.get("subdomain") == name and pod_spec.get("hostname"):
                    host = f"{pod_spec['hostname']}.{name}"
                    lines.append(
                        "\t".join([pod["status"]["podIP"], *_service_names(host, namespace)])
                    )
    return lines


def hosts_file(pod: Obj, pod_ip: str, services: list[Obj], pods: list[Obj]) -> str:
    """The pod's /etc/hosts: the kubelet's managed file (localhost, the pod's own name,
    ``hostAliases``), then the Service names of its namespace."""
    namespace = pod["metadata"].get("namespace", "default")
    hostname, spec = pod_hostname(pod), pod["spec"]
    text = HOSTS_HEADER + _HOSTS_BASE
    if spec.get("subdomain"):
        domain = f"{spec['subdomain']}.{namespace}.svc.{CLUSTER_DOMAIN}"
        text += f"{pod_ip}\t{hostname}.{domain}\t{hostname}\n"
    else:
        text += f"{pod_ip}\t{hostname}\n"
    aliases = spec.get("hostAliases") or []
    if aliases:
        text += "\n# Entries added by HostAliases.\n"
        for alias in aliases:
            text += "\t".join([alias["ip"], *alias.get("hostnames", [])]) + "\n"
    entries = service_entries(namespace, services, pods)
    if entries:
        text += _SERVICES_HEADER + "\n".join(entries) + "\n"
    return text


def cluster_names(api: KubeApi, namespace: str) -> tuple[list[Obj], list[Obj]]:
    """The Services of `namespace` and, if any of them selects pods, its pods."""
    services = api.get("v1", "services", namespace=namespace).get("items", [])
    if not any((s.get("spec") or {}).get("selector") for s in services):
        return services, []
    return services, api.get("v1", "pods", namespace=namespace).get("items", [])


def write_in_place(path: Path, text: str) -> None:
    """Replace the file's content keeping its inode: a bind mount of it shows the change."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def in_pod_namespaces(argv: list[str], hosts: Path, hostname: str) -> list[str]:
    """`argv` run in a private mount and UTS namespace, with `hosts` over /etc/hosts and
    `hostname` as its hostname; nothing changes for the host."""
    return [
        "unshare", "--mount", "--uts", "--propagation", "private", "--",
        "sh", "-c", _IN_POD_SCRIPT, str(hosts), hostname, *argv,
    ]  # fmt: skip


@functools.cache
def pod_namespaces_available() -> bool:
    """Whether this machine lets the runner give a process its own mount and UTS namespace
    (root, and unshare(1) installed)."""
    if shutil.which("unshare") is None or not Path("/etc/hosts").exists():
        return False
    try:
        result = subprocess.run(
            in_pod_namespaces(["true"], Path("/etc/hosts"), "probe"),
            capture_output=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0
