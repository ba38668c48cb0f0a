"""The container mode's translation of a pod spec into Podman's terms, and the image build's
inputs. (Running them is tests/cluster/test_containers.py.)"""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest

from docmodel_devenv import containers, images
from docmodel_devenv.containers import (
    ContainerConfigError,
    ContainerRuntime,
    Volumes,
    cpus,
    memory_bytes,
    resource_args,
    security_args,
)

ROOT = Path(__file__).resolve().parents[2]


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "ns", "uid": "0123456789abcdef"},
        "spec": {"containers": [{"name": "c", "image": "img"}], **spec},
    }


def test_quantities() -> None:
    assert memory_bytes("2Gi") == 2 * 2**30
    assert memory_bytes("512Mi") == 512 * 2**20
    assert memory_bytes("1G") == 10**9
    assert memory_bytes(1024) == 1024
    with pytest.raises(ContainerConfigError, match="invalid memory quantity '2Gb'"):
        memory_bytes("2Gb")
    assert cpus("500m") == 0.5
    assert cpus("2") == 2.0
    assert resource_args({"resources": {"limits": {"memory": "1Gi", "cpu": "250m"}}}) == [
        "--memory",
        str(2**30),
        "--cpus",
        "0.25",
    ]
    assert resource_args({"resources": {"requests": {"memory": "1Gi"}}}) == []


def test_restricted_security_context_becomes_podman_flags() -> None:
    spec = {
        "securityContext": {
            "readOnlyRootFilesystem": True,
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
        }
    }
    args = security_args(pod(securityContext={"runAsUser": 10001, "runAsNonRoot": True}), spec, "")
    assert args == [
        "--user", "10001",
        "--read-only", "--read-only-tmpfs=false",
        "--security-opt", "no-new-privileges",
        "--cap-drop", "all",
    ]  # fmt: skip
    # The container's context overrides the pod's, field by field; fsGroup joins the groups.
    args = security_args(
        pod(securityContext={"runAsUser": 1, "runAsGroup": 2, "fsGroup": 3}),
        {"securityContext": {"runAsUser": 4}},
        "",
    )
    assert args[:2] == ["--user", "4:2"]
    assert args[2:] == ["--group-add", "3"]
    # A group alone keeps the image's user.
    assert security_args(pod(securityContext={"runAsGroup": 7}), {}, "10001:10001")[:2] == [
        "--user",
        "10001:7",
    ]


def test_run_as_non_root_is_checked_against_the_image_user() -> None:
    non_root = pod(securityContext={"runAsNonRoot": True})
    with pytest.raises(ContainerConfigError, match="image will run as root"):
        security_args(non_root, {}, "")
    with pytest.raises(ContainerConfigError, match="image will run as root"):
        security_args(non_root, {}, "root")
    with pytest.raises(ContainerConfigError, match="non-numeric user"):
        security_args(non_root, {}, "docmodel")
    assert security_args(non_root, {}, "10001:10001") == []


class FakeApi:
    """The two calls `Volumes` makes, answered from dictionaries."""

    def __init__(self, objects: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objects = objects
        self.token_requests: list[tuple[str, dict[str, Any]]] = []

    def get(self, group: str, kind: str, name: str, namespace: str) -> dict[str, Any]:
        from docmodel_devenv.kubeapi import ApiError

        if (kind, name) not in self.objects:
            raise ApiError(404, "not found")
        return self.objects[(kind, name)]

    def request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        self.token_requests.append((path, body))
        return {"status": {"token": "header.payload.signature"}}


def test_volumes_are_made_as_the_kubelet_makes_them(tmp_path: Path) -> None:
    secret = {"data": {"AWS_SECRET_ACCESS_KEY": base64.b64encode(b"s3cr3t").decode()}}
    api = FakeApi(
        {
            ("secrets", "store"): secret,
            ("configmaps", "kube-root-ca.crt"): {"data": {"ca.crt": "PEM"}},
        }
    )
    spec = pod(
        serviceAccountName="op",
        volumes=[
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
            {"name": "creds", "secret": {"secretName": "store", "defaultMode": 0o400}},
            {
                "name": "kube-api-access",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
                        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
                    ]
                },
            },
        ],
    )  # fmt: skip
    volumes = Volumes(api, spec, tmp_path)  # type: ignore[arg-type]
    volumes.make()
    empty = tmp_path / "tmp"
    assert stat.S_IMODE(empty.stat().st_mode) == 0o777
    key = tmp_path / "creds" / "AWS_SECRET_ACCESS_KEY"
    assert key.read_bytes() == b"s3cr3t"
    assert stat.S_IMODE(key.stat().st_mode) == 0o400
    access = tmp_path / "kube-api-access"
    assert (access / "token").read_text() == "header.payload.signature"
    assert (access / "ca.crt").read_text() == "PEM"
    assert (access / "namespace").read_text() == "ns"
    ((path, request),) = api.token_requests
    assert path == "/api/v1/namespaces/ns/serviceaccounts/op/token"
    assert request["spec"]["boundObjectRef"] == {
        "apiVersion": "v1", "kind": "Pod", "name": "p", "uid": "0123456789abcdef"
    }  # fmt: skip

    mounts = volumes.mount_args(
        {
            "volumeMounts": [
                {"name": "tmp", "mountPath": "/tmp"},
                {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"},
            ]
        }
    )  # fmt: skip
    assert mounts == [
        "-v", f"{empty}:/tmp:rw",
        "-v", f"{access}:/var/run/secrets/kubernetes.io/serviceaccount:ro",
    ]  # fmt: skip


def test_a_missing_secret_or_an_escaping_path_is_a_config_error(tmp_path: Path) -> None:
    missing = pod(volumes=[{"name": "v", "secret": {"secretName": "absent"}}])
    with pytest.raises(ContainerConfigError, match='secret "absent" not found'):
        Volumes(FakeApi({}), missing, tmp_path).make()  # type: ignore[arg-type]
    Volumes(
        FakeApi({}),  # type: ignore[arg-type]
        pod(volumes=[{"name": "v", "secret": {"secretName": "absent", "optional": True}}]),
        tmp_path,
    ).make()
    api = FakeApi({("configmaps", "cm"): {"data": {"k": "v"}}})
    escaping = pod(
        volumes=[
            {"name": "v", "configMap": {"name": "cm", "items": [{"key": "k", "path": "../../x"}]}}
        ]
    )
    with pytest.raises(ContainerConfigError, match="leaves the volume"):
        Volumes(api, escaping, tmp_path / "pod").make()  # type: ignore[arg-type]
    with pytest.raises(ContainerConfigError, match="unsupported volume type"):
        Volumes(api, pod(volumes=[{"name": "v", "hostPath": {"path": "/"}}]), tmp_path).make()  # type: ignore[arg-type]


def test_run_command_keeps_values_off_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(containers, "image_user", lambda image: "10001:10001")
    spec = {
        "name": "train",
        "image": "ghcr.io/docmodel/trainer:0.1.0-cpu",
        "command": ["docmodel-trainer"],
        "args": ["train", "--revision", "r1"],
        "volumeMounts": [{"name": "work", "mountPath": "/var/lib/docmodel/work"}],
        "resources": {"limits": {"memory": "2Gi"}},
    }
    the_pod = pod(volumes=[{"name": "work", "emptyDir": {}}], terminationGracePeriodSeconds=5)
    volumes = Volumes(FakeApi({}), the_pod, tmp_path)  # type: ignore[arg-type]
    volumes.make()
    env = {"AWS_SECRET_ACCESS_KEY": "s3cr3t", "DOCMODEL_REVISION": "r1"}
    runtime = ContainerRuntime(api=None, owner=str(tmp_path))  # type: ignore[arg-type]
    argv = runtime.argv(the_pod, spec, env, volumes, "k8s_train")
    assert argv[argv.index("--label") + 1] == f"dev.docmodel.devenv.workdir={tmp_path}"
    assert "s3cr3t" not in " ".join(argv)
    assert argv[argv.index("-e") : argv.index("-e") + 4] == [
        "-e", "AWS_SECRET_ACCESS_KEY", "-e", "DOCMODEL_REVISION",
    ]  # fmt: skip
    # Podman needs its own PATH: a container's PATH is given inline instead.
    with_path = runtime.argv(the_pod, spec, {**env, "PATH": "/opt/bin"}, volumes, "k8s_train")
    assert with_path[with_path.index("-e") : with_path.index("-e") + 6] == [
        "-e", "AWS_SECRET_ACCESS_KEY", "-e", "DOCMODEL_REVISION", "-e", "PATH=/opt/bin",
    ]  # fmt: skip
    # command replaces ENTRYPOINT; args follow the image; nothing is pulled.
    image_at = argv.index("ghcr.io/docmodel/trainer:0.1.0-cpu")
    assert argv[image_at + 1 :] == ["train", "--revision", "r1"]
    assert json.loads(argv[argv.index("--entrypoint") + 1]) == ["docmodel-trainer"]
    assert argv[argv.index("--pull") + 1] == "never"
    assert argv[argv.index("--stop-timeout") + 1] == "5"
    assert argv[argv.index("--memory") + 1] == str(2 * 2**30)
    assert f"{tmp_path / 'work'}:/var/lib/docmodel/work:rw" in argv


def test_image_inputs_cover_its_context_and_nothing_else() -> None:
    operator = images.IMAGES["operator"]
    files = {str(p.relative_to(ROOT)) for p in images.context_files(operator)}
    assert {"requirements.lock", "pyproject.toml", "core/docmodel/api/__init__.py"} <= files
    assert "operator/docmodel_operator/main.py" in files
    assert not any(f.startswith(("trainer-image/", "server-image/", "tests/")) for f in files)
    assert not any("__pycache__" in f for f in files)
    first = images.inputs_hash(operator, "sha256:base", {"VERSION": "0.1.0"})
    assert first == images.inputs_hash(operator, "sha256:base", {"VERSION": "0.1.0"})
    assert first != images.inputs_hash(operator, "sha256:other", {"VERSION": "0.1.0"})
    assert first != images.inputs_hash(operator, "sha256:base", {"VERSION": "0.2.0"})


def test_image_tags_are_the_charts() -> None:
    version = images.chart_version()
    assert images.image_tag("operator") == f"ghcr.io/docmodel/operator:{version}"
    assert images.image_tag("trainer") == f"ghcr.io/docmodel/trainer:{version}-cpu"
    assert images.image_tag("server") == f"ghcr.io/docmodel/server:{version}-cpu"
    values = (ROOT / "charts" / "docmodel-operator" / "values.yaml").read_text()
    assert "repository: ghcr.io/docmodel/operator" in values
    assert f"trainerImage: ghcr.io/docmodel/trainer:{version}" in values
    assert f"serverImage: ghcr.io/docmodel/server:{version}" in values


def test_the_build_trusts_the_hosts_ca_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("PEM")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert images.ca_bundle(None) == bundle
    assert images.ca_bundle(str(bundle)) == bundle
    with pytest.raises(images.ImageError, match="does not exist"):
        images.ca_bundle(str(tmp_path / "absent.pem"))
    monkeypatch.delenv("SSL_CERT_FILE")
    system = images.SYSTEM_CA_BUNDLE
    assert images.ca_bundle(None) == (system if system.is_file() else None)
