"""The local node's container mode: a pod's containers run with Podman from the pod's image.

What the kubelet would do, for the parts of a pod spec this project's workloads and chart use:

- the image's entrypoint and command, replaced by the container's ``command`` and ``args``
  (Kubernetes semantics: ``command`` replaces ENTRYPOINT and drops CMD, ``args`` replaces CMD);
  an image that is not in local storage is never pulled (``ErrImageNeverPull``);
- the environment the process mode resolves (``env``, ``envFrom``, Secret and ConfigMap keys,
  the downward API) plus ``KUBERNETES_SERVICE_HOST/PORT``, and nothing of the host's. Values
  reach Podman through its own environment (``-e NAME``), never its command line;
- volumes: ``emptyDir`` (a directory of the pod, mode 0777 as the kubelet makes it), ``secret``,
  ``configMap`` and ``projected`` (service-account token from the TokenRequest API bound to the
  pod, ConfigMap keys, downward-API fields), mounted read-only except emptyDir;
- ``securityContext`` of the pod and the container: ``runAsUser``/``runAsGroup``,
  ``runAsNonRoot`` (checked against the image's user, as the kubelet does),
  ``readOnlyRootFilesystem`` (with no tmpfs added, unlike Podman's default),
  ``capabilities``, ``allowPrivilegeEscalation: false`` (no-new-privileges), ``privileged``;
- ``resources.limits`` of memory and CPU;
- host networking: a pod's address is a loopback address, as in process mode;
- the pod's hostname and the runner's managed /etc/hosts (`podenv.hosts_file`), mounted over the
  container's as the kubelet mounts its own.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import procs
from .images import PODMAN_GLOBAL, PODMAN_RUN, run_podman
from .kubeapi import ApiError, KubeApi
from .podenv import EnvError, pod_field, pod_hostname

log = logging.getLogger(__name__)

Obj = dict[str, Any]
RUNTIME_PREFIX = "podman://"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
_QUANTITY = re.compile(r"^([0-9.]+)([A-Za-z]*)$")
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class ContainerConfigError(EnvError):
    """The pod asks for something the container cannot be created with (the kubelet's
    CreateContainerConfigError)."""


class ImageNeverPulled(RuntimeError):
    """The image is not in local storage, and nothing is ever pulled."""


def memory_bytes(quantity: str | int) -> int:
    text = str(quantity)
    match = _QUANTITY.match(text)
    if not match or match.group(2) not in {**_BINARY, **_DECIMAL}:
        raise ContainerConfigError(f"invalid memory quantity {text!r}")
    number, unit = float(match.group(1)), match.group(2)
    return int(number * _BINARY.get(unit, _DECIMAL.get(unit, 1)))


def cpus(quantity: str | int | float) -> float:
    text = str(quantity)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def container_name(pod: Obj, container: str) -> str:
    """A Podman name unique to the pod (its uid) and container."""
    metadata = pod["metadata"]
    return f"k8s_{container}_{metadata['name']}_{metadata['namespace']}_{metadata['uid'][:8]}"


def image_user(image: str) -> str:
    result = run_podman("image", "inspect", "--format", "{{.Config.User}}", image)
    if result.returncode != 0:
        raise ImageNeverPulled(
            f'Container image "{image}" is not present with pull policy of Never '
            "(build it: scripts/build-images.sh)"
        )
    return result.stdout.strip()


def security_args(pod: Obj, spec: Obj, declared: str) -> list[str]:
    """Podman flags for the pod's and the container's securityContext; `declared` is the
    image's own USER."""
    pod_context: Obj = pod["spec"].get("securityContext") or {}
    context: Obj = {**pod_context, **(spec.get("securityContext") or {})}
    args: list[str] = []
    user, group = context.get("runAsUser"), context.get("runAsGroup")
    if user is not None:
        args += ["--user", f"{user}:{group}" if group is not None else str(user)]
    elif group is not None:
        args += ["--user", f"{declared.split(':')[0] or 0}:{group}"]
    if context.get("runAsNonRoot"):
        effective = str(user) if user is not None else (declared.split(":")[0] or "0")
        if effective in ("0", "root"):
            raise ContainerConfigError("container has runAsNonRoot and image will run as root")
        if not effective.isdigit():
            raise ContainerConfigError(
                f"container has runAsNonRoot and image has non-numeric user ({effective}), "
                "cannot verify user is non-root"
            )
    for gid in pod_context.get("supplementalGroups") or []:
        args += ["--group-add", str(gid)]
    if "fsGroup" in pod_context:
        args += ["--group-add", str(pod_context["fsGroup"])]
    if context.get("privileged"):
        args.append("--privileged")
    if context.get("readOnlyRootFilesystem"):
        # Podman adds tmpfs mounts on /tmp, /var/tmp and /run to a read-only container by
        # default; a Kubernetes pod gets none.
        args += ["--read-only", "--read-only-tmpfs=false"]
    if context.get("allowPrivilegeEscalation") is False:
        args += ["--security-opt", "no-new-privileges"]
    capabilities = context.get("capabilities") or {}
    for cap in capabilities.get("drop") or []:
        args += ["--cap-drop", "all" if cap.upper() == "ALL" else cap]
    for cap in capabilities.get("add") or []:
        args += ["--cap-add", cap]
    profile = (context.get("seccompProfile") or {}).get("type")
    if profile == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    return args


def resource_args(spec: Obj) -> list[str]:
    limits = (spec.get("resources") or {}).get("limits") or {}
    args: list[str] = []
    if "memory" in limits:
        args += ["--memory", str(memory_bytes(limits["memory"]))]
    if "cpu" in limits:
        args += ["--cpus", f"{cpus(limits['cpu']):g}"]
    return args


def _write(directory: Path, relative: str, data: bytes, mode: int) -> None:
    path = directory / relative
    if not path.resolve().is_relative_to(directory.resolve()):
        raise ContainerConfigError(f"volume item path {relative!r} leaves the volume")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(mode)


def _key_items(source: Obj, data: dict[str, bytes], what: str) -> dict[str, bytes]:
    items = source.get("items")
    if not items:
        return data
    picked: dict[str, bytes] = {}
    for item in items:
        if item["key"] not in data:
            if source.get("optional"):
                continue
            raise ContainerConfigError(f"couldn't find key {item['key']} in {what}")
        picked[item["path"]] = data[item["key"]]
    return picked


class Volumes:
    """A pod's volumes, made as directories under the pod's work directory."""

    def __init__(self, api: KubeApi, pod: Obj, root: Path) -> None:
        self.api, self.pod, self.root = api, pod, root
        self.namespace = pod["metadata"].get("namespace", "default")
        self.paths: dict[str, tuple[Path, bool]] = {}  # name: (host path, read-only)

    def _object_data(self, kind: str, name: str, optional: bool) -> dict[str, bytes] | None:
        try:
            obj = self.api.get("v1", kind, name, namespace=self.namespace)
        except ApiError as error:
            if error.status == 404 and optional:
                return None
            if error.status == 404:
                raise ContainerConfigError(f'{kind[:-1]} "{name}" not found') from error
            raise
        if kind == "secrets":
            return {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
        return data

    def _token(self, source: Obj) -> bytes:
        metadata = self.pod["metadata"]
        account = self.pod["spec"].get("serviceAccountName") or "default"
        request = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [source["audience"]] if source.get("audience") else [],
                "expirationSeconds": int(source.get("expirationSeconds", 3607)),
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata["name"],
                    "uid": metadata["uid"],
                },
            },
        }
        answer = self.api.request(
            "POST",
            f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token",
            body=request,
        )
        return str(answer["status"]["token"]).encode()

    def _downward(self, items: list[Obj]) -> dict[str, bytes]:
        return {
            item["path"]: pod_field(self.pod, item["fieldRef"]["fieldPath"]).encode()
            for item in items
        }

    def make(self) -> None:
        for volume in self.pod["spec"].get("volumes") or []:
            name = volume["name"]
            directory = self.root / name
            if directory.exists():
                shutil.rmtree(directory)
            directory.mkdir(parents=True)
            if "emptyDir" in volume:
                directory.chmod(0o777)
                self.paths[name] = (directory, False)
                continue
            files: dict[str, bytes] = {}
            mode = 0o644
            if "secret" in volume or "configMap" in volume:
                kind, source = (
                    ("secrets", volume["secret"])
                    if "secret" in volume
                    else ("configmaps", volume["configMap"])
                )
                object_name = source.get("secretName") or source.get("name")
                data = self._object_data(kind, object_name, bool(source.get("optional")))
                files = _key_items(
                    source, data or {}, f"{kind[:-1]} {self.namespace}/{object_name}"
                )
                mode = int(source.get("defaultMode", 0o644))
            elif "projected" in volume:
                projected = volume["projected"]
                mode = int(projected.get("defaultMode", 0o644))
                for source in projected.get("sources") or []:
                    if "serviceAccountToken" in source:
                        token = source["serviceAccountToken"]
                        files[token["path"]] = self._token(token)
                    elif "configMap" in source or "secret" in source:
                        kind = "configmaps" if "configMap" in source else "secrets"
                        ref = source.get("configMap") or source.get("secret")
                        data = self._object_data(kind, ref["name"], bool(ref.get("optional")))
                        files.update(_key_items(ref, data or {}, f"{kind[:-1]} {ref['name']}"))
                    elif "downwardAPI" in source:
                        files.update(self._downward(source["downwardAPI"].get("items") or []))
            elif "downwardAPI" in volume:
                files = self._downward(volume["downwardAPI"].get("items") or [])
            else:
                kinds = sorted(set(volume) - {"name"})
                raise ContainerConfigError(f"volume {name}: unsupported volume type {kinds}")
            directory.chmod(0o755)
            for relative, content in files.items():
                _write(directory, relative, content, mode)
            self.paths[name] = (directory, True)

    def mount_args(self, spec: Obj) -> list[str]:
        args: list[str] = []
        for mount in spec.get("volumeMounts") or []:
            if mount["name"] not in self.paths:
                raise ContainerConfigError(f"volume {mount['name']} is mounted but not declared")
            path, read_only = self.paths[mount["name"]]
            if mount.get("subPath"):
                path = path / mount["subPath"]
                path.mkdir(parents=True, exist_ok=True)
            options = "ro" if read_only or mount.get("readOnly") else "rw"
            args += ["-v", f"{path}:{mount['mountPath']}:{options}"]
        return args


OWNER_LABEL = "dev.docmodel.devenv.workdir"
PODMAN_OWN_ENV = ("PATH", "HOME", "TMPDIR")


@dataclass
class ContainerRuntime:
    """Podman as the local node's container runtime. Every container it starts is labelled
    with `owner` (the runner's work directory), so that containers a killed test run left
    behind are found and removed by the next runner (`remove_stale`)."""

    api: KubeApi
    owner: str = ""
    version: str = ""

    def check(self) -> None:
        """Podman and runc are installed (scripts/build-images.sh installs them)."""
        missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(
                f"container mode needs {' and '.join(missing)}: run scripts/build-images.sh "
                "(it installs them and builds the images)"
            )
        result = subprocess.run(
            ["podman", "--version"], capture_output=True, text=True, check=False
        )
        self.version = "podman://" + result.stdout.strip().rpartition(" ")[2]
        self.remove_stale()

    def remove_stale(self) -> None:
        """Remove the containers of runners whose work directory is gone (a run that was
        killed before it could stop them: they would hold their pods' addresses and ports)."""
        result = run_podman(
            "ps", "--all", "--filter", f"label={OWNER_LABEL}",
            "--format", f'{{{{.Names}}}} {{{{index .Labels "{OWNER_LABEL}"}}}}',
        )  # fmt: skip
        for line in result.stdout.splitlines():
            name, _, owner = line.partition(" ")
            if owner and not Path(owner).exists():
                log.info("Removing a container left behind name=%s owner=%s", name, owner)
                self.remove(name)

    def argv(
        self,
        pod: Obj,
        spec: Obj,
        env: dict[str, str],
        volumes: Volumes,
        name: str,
        hosts: Path | None = None,
    ) -> list[str]:
        image = spec["image"]
        argv = [
            "podman",
            *PODMAN_GLOBAL,
            "run",
            "--rm",
            "--name",
            name,
            "--pull",
            "never",
            "--label",
            f"{OWNER_LABEL}={self.owner}",
            *PODMAN_RUN,
            "--stop-timeout",
            str(int(pod["spec"].get("terminationGracePeriodSeconds", 30))),
            *security_args(pod, spec, image_user(image)),
            *resource_args(spec),
            *volumes.mount_args(spec),
            *(["--hostname", pod_hostname(pod), "-v", f"{hosts}:/etc/hosts:ro"] if hosts else []),
            # Names only: the values come from Podman's environment, off its command line.
            # Podman needs its own PATH, HOME and TMPDIR, so a container's are given inline.
            *(
                item
                for key, value in env.items()
                for item in ("-e", f"{key}={value}" if key in PODMAN_OWN_ENV else key)
            ),
        ]
        if spec.get("workingDir"):
            argv += ["--workdir", spec["workingDir"]]
        if spec.get("command"):
            argv += ["--entrypoint", json.dumps(spec["command"])]
        argv.append(image)
        if spec.get("args"):
            argv += list(spec["args"])
        return argv

    def start(
        self,
        key: str,
        pod: Obj,
        spec: Obj,
        env: dict[str, str],
        volumes: Volumes,
        log_path: Path,
        hosts: Path | None = None,
    ) -> tuple[subprocess.Popen[bytes], str]:
        name = container_name(pod, spec["name"])
        self.remove(name)  # a container of an earlier start that did not clean up
        argv = self.argv(pod, spec, env, volumes, name, hosts)
        # Podman's own environment carries the values (see `argv`), but for the variables
        # Podman itself needs, which keep the host's.
        podman_env = {**env, **{k: os.environ[k] for k in PODMAN_OWN_ENV if k in os.environ}}
        process = procs.start(key, argv, log_path, env=podman_env)
        return process, name

    def stop(self, process: subprocess.Popen[bytes], name: str, grace: float) -> int | None:
        if process.poll() is None:
            run_podman("stop", "--time", str(max(int(grace), 0)), name, timeout=grace + 30)
            # `podman run` returns the container's exit code once it has cleaned up; a signal
            # now would only be forwarded to a container that is gone.
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)
        code = procs.stop(process, grace=5.0)
        self.remove(name)
        return code

    def remove(self, name: str) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            run_podman("rm", "--force", "--ignore", "--time", "0", name, timeout=60)

    def exec(self, name: str, command: list[str], timeout: float) -> bool:
        return run_podman("exec", name, *command, timeout=timeout).returncode == 0
