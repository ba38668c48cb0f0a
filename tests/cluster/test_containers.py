"""The project's own images, built with Podman (scripts/build-images.sh), run as the dev
cluster's pods: the Helm chart installs the operator image, the operator's Jobs run the trainer
image and its Deployment the server image, each a container on the container-mode node
(`docmodel_devenv.containers`). What a user meets first, checked where a user would: the images
start, import what they need, run as non-root on a read-only root with no capabilities, and the
whole lifecycle works through them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from docmodel.api import GROUP, PLURAL, VERSION
from docmodel.storage import S3Store, upload_tree
from docmodel_devenv import build, images
from docmodel_devenv.images import PODMAN_RUN, run_podman
from docmodel_devenv.podrunner import CONTAINER_NODE_LABELS, PodRunner
from docmodel_devenv.pytest_plugin import Kube, S3Bucket
from docmodel_devenv.serviceproxy import ServiceProxy
from docmodel_devenv.stack import DevEnv

from testkit.chartlib import CHART, fresh_namespace, helm, values_file
from testkit.clusterlib import enforce_restricted, wait_for
from testkit.models import tiny_base_model
from testkit.operatorlib import (
    ANSWER,
    AddedEvents,
    condition,
    docmodel,
    free_port,
    put_docs,
    wait_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow, pytest.mark.containers]

# A base-model name no image and no cache holds: the pods take it from its S3 mirror.
MIRRORED = "docmodel-tests/tiny-llama-mirror"
UID = 10001

# Run in each image as its user: every distribution that the project's extras require is
# installed and its top-level modules import, and every module of the project's own packages
# imports. A dependency missing from an image (or a module removed from it) fails here, named.
IMPORT_CHECK = """
import importlib, pkgutil, re, sys
from importlib import metadata
extras, packages = sys.argv[1].split(","), sys.argv[2:]
failed = []
modules_of = {}
for module, dists in metadata.packages_distributions().items():
    for dist in dists:
        modules_of.setdefault(dist.lower().replace("_", "-"), []).append(module)
for line in metadata.distribution("docmodel").requires or []:
    name = re.match(r"[A-Za-z0-9._-]+", line).group(0)
    marker = line.partition(";")[2]
    wanted = re.findall(r'extra == "([^"]+)"', marker)
    if wanted and not set(wanted) & set(extras):
        continue
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        failed.append(f"{name}: required by docmodel[{','.join(extras)}] but not installed")
        continue
    for module in modules_of.get(name.lower().replace("_", "-"), []):
        if module.startswith("_") or not module.isidentifier():
            continue
        try:
            importlib.import_module(module)
        except Exception as error:
            failed.append(f"{name} ({module}): {type(error).__name__}: {error}")
for name in packages:
    package = importlib.import_module(name)
    for module in pkgutil.walk_packages(package.__path__, name + "."):
        try:
            importlib.import_module(module.name)
        except Exception as error:
            failed.append(f"{module.name}: {type(error).__name__}: {error}")
print("\\n".join(failed) or "ok")
sys.exit(1 if failed else 0)
"""
EXTRAS = {"operator": "operator", "trainer": "trainer", "server": "server"}
PACKAGES = {
    "operator": ["docmodel", "docmodel_operator"],
    "trainer": ["docmodel", "docmodel_trainer", "docmodel_embedding"],
    "server": ["docmodel", "docmodel_server", "docmodel_embedding"],
}
# Modules that need a GPU build (bitsandbytes, vLLM) and are only imported where one is.
GPU_ONLY = {"docmodel_server.vllm_engine"}


def podman(
    *args: str, check: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    result = run_podman(*args, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: {result.stdout}{result.stderr}")
    return result


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """The images (built by scripts/test.sh before the tests; reused here)."""
    if os.environ.get("DOCMODEL_TEST_IMAGES", "1") == "0":
        pytest.skip("DOCMODEL_TEST_IMAGES=0: the container images are not built on this machine")
    try:
        records = images.build_all()
    except images.ImageError as error:
        pytest.fail(f"the images could not be built: {error}", pytrace=False)
    return {name: str(record["tag"]) for name, record in records.items()}


def run_in_image(
    tag: str, *argv: str, entrypoint: str = "python3"
) -> subprocess.CompletedProcess[str]:
    """`argv` in `tag` as the chart runs the operator: uid 10001, read-only root, no
    capabilities, no privilege escalation, only /tmp writable."""
    return podman(
        "run", "--rm", "--pull", "never", *PODMAN_RUN,
        "--user", f"{UID}:{UID}", "--read-only", "--read-only-tmpfs=false",
        "--cap-drop", "all", "--security-opt", "no-new-privileges", "--tmpfs", "/tmp",
        "--entrypoint", entrypoint, tag, *argv,
        check=False,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["operator", "trainer", "server"])
def test_image_imports_everything_it_ships_as_non_root_on_a_read_only_root(
    built: dict[str, str], name: str
) -> None:
    tag = built[name]
    result = run_in_image(tag, "-c", IMPORT_CHECK, EXTRAS[name], *PACKAGES[name])
    failures = [
        line
        for line in result.stdout.splitlines()
        if line != "ok" and line.split(":")[0] not in GPU_ONLY
    ]
    assert not failures and "Traceback" not in result.stderr, (
        f"image {tag}: what does not import as uid {UID} on a read-only root:\n"
        + "\n".join(failures)
        + result.stderr[-2000:]
    )


@pytest.mark.parametrize("name", ["operator", "trainer", "server"])
def test_image_holds_no_build_tools_caches_or_source_tree(built: dict[str, str], name: str) -> None:
    tag = built[name]
    info = images.inspect(tag)
    labels = info.get("Labels") or {}
    for key in ("source", "revision", "version"):
        assert labels.get(f"org.opencontainers.image.{key}"), f"image {tag}: no {key} label"
    assert labels["org.opencontainers.image.version"] == images.chart_version()
    assert info["Config"]["User"] == f"{UID}:{UID}", (
        f"image {tag} runs as {info['Config']['User']!r}"
    )
    found = run_in_image(
        tag,
        "-c",
        "for p in /src /dist /tmp/dist /opt/uv /opt/docmodel/core /root/.cache/uv /tmp/.cache/uv "
        "/root/.cache/pip /usr/bin/gcc /usr/bin/cc /usr/bin/make /usr/bin/uv; do "
        '[ -e "$p" ] && echo "$p"; done; '
        "command -v gcc cc uv pip3 pip 2>/dev/null; true",
        entrypoint="sh",
    )
    present = [line for line in found.stdout.splitlines() if line.strip()]
    # pip ships with every venv (ensurepip) and the image's Python may have one: it is a tool
    # of the runtime, not a build cache.
    present = [p for p in present if not p.endswith(("/pip", "/pip3"))]
    assert not present, f"image {tag} holds build leftovers: {present}"


def test_trainer_image_gives_its_help_and_the_server_image_its_dry_run(
    built: dict[str, str],
) -> None:
    help_text = run_in_image(built["trainer"], "--help", entrypoint="docmodel-trainer")
    assert help_text.returncode == 0, f"image {built['trainer']}: {help_text.stderr[-2000:]}"
    for step in ("ingest", "train", "evaluate"):
        assert step in help_text.stdout
    server = run_in_image(built["server"], "--help", entrypoint="docmodel-server")
    assert server.returncode == 0, f"image {built['server']}: {server.stderr[-2000:]}"


# --- the whole lifecycle, every pod a container -------------------------------------------


@pytest.fixture(scope="module")
def container_node(devenv: DevEnv, built: dict[str, str]) -> Iterator[PodRunner]:
    """The container-mode node, beside the process-mode one, for this module's pods."""
    assert devenv.api is not None and devenv.control_plane is not None
    pki = devenv.control_plane.pki
    runner = PodRunner.containers(
        devenv.api,
        devenv.workdir / "containers",
        kubernetes_version=build.FAMILIES["kubernetes"].version(),
        log_tls=(pki.serving_cert, pki.serving_key, pki.ca_cert),
    )
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="module")
def services(devenv: DevEnv) -> Iterator[ServiceProxy]:
    """Service addresses (a user-space kube-proxy on loopback)."""
    assert devenv.api is not None
    proxy = ServiceProxy(devenv.api)
    try:
        yield proxy
    finally:
        proxy.stop()


def running_container(runner: PodRunner, namespace: str, prefix: str) -> str:
    """The Podman name of the running container of the pod `namespace/prefix*`."""
    for worker in list(runner.workers.values()):
        metadata = worker.pod["metadata"]
        if metadata["namespace"] == namespace and metadata["name"].startswith(prefix):
            for container in worker.containers:
                if container.running:
                    return container.runtime_name
    raise AssertionError(f"no running container of a pod {namespace}/{prefix}*")


def describe(runner: PodRunner) -> str:
    """Every container of the container node: its image, state, restarts and last log lines,
    for a failure message that names the image and the cause."""
    lines = []
    for worker in list(runner.workers.values()):
        for container in [*worker.init_containers, *worker.containers]:
            state = json.dumps(container.state)
            lines.append(
                f"- {worker.key} container {container.name} (image {container.spec.get('image')}):"
                f" {state}, restarts {container.restart_count}"
            )
            if container.log_path.exists():
                text = container.log_path.read_text(errors="replace").splitlines()[-12:]
                lines.extend(f"    | {line}" for line in text)
    return "\n".join(lines) or "(no pod ran on the container node)"


@contextlib.contextmanager
def explained(runner: PodRunner) -> Iterator[None]:
    """A failed assertion inside gets the container node's containers appended."""
    try:
        yield
    except AssertionError as error:
        raise AssertionError(f"{error}\n\nContainers:\n{describe(runner)}") from None


def posture(name: str) -> dict[str, Any]:
    """Podman's own view of a running container."""
    (info,) = json.loads(podman("container", "inspect", name).stdout)
    return dict(info)


def assert_restricted(name: str, writable: set[str]) -> None:
    """Non-root, read-only root, no capabilities, no privilege escalation, and no writable
    path but `writable` (the declared volumes)."""
    info = posture(name)
    config, host = info["Config"], info["HostConfig"]
    assert config["User"].split(":")[0] not in ("", "0", "root"), (name, config["User"])
    assert host["ReadonlyRootfs"] is True, f"{name}: root filesystem is writable"
    assert not info.get("EffectiveCaps"), f"{name}: capabilities {info.get('EffectiveCaps')}"
    assert "no-new-privileges" in (host.get("SecurityOpt") or []), host.get("SecurityOpt")
    mounts = {m["Destination"]: m for m in info["Mounts"]}
    rw = {dest for dest, m in mounts.items() if m.get("RW")}
    assert rw == writable, f"{name}: writable mounts {sorted(rw)}, expected {sorted(writable)}"
    probe = " ".join(f"/ /etc /opt /usr /var /home /root {' '.join(sorted(writable))}".split())
    result = podman(
        "exec", name, "sh", "-c",
        f'for d in {probe}; do f="$d/.docmodel-write-check"; '
        'if (echo x > "$f") 2>/dev/null; then echo "$d"; rm -f "$f"; fi; done',
    )  # fmt: skip
    can_write = set(result.stdout.split())
    assert can_write == writable, (
        f"{name}: writes to {sorted(can_write)}, expected {sorted(writable)}"
    )


def test_chart_operator_trains_evaluates_and_serves_in_containers(
    devenv: DevEnv,
    kube: Kube,
    crd: str,
    namespace: str,
    s3_bucket: S3Bucket,
    container_node: PodRunner,
    services: ServiceProxy,
    built: dict[str, str],
    tmp_path: Path,
) -> None:
    release = "docmodel"
    on_containers = dict(CONTAINER_NODE_LABELS)
    store = S3Store(s3_bucket.name, "", client=s3_bucket.client())
    upload_tree(tiny_base_model(), store, "models/tiny")
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    with fresh_namespace(devenv, "ml") as watched:
        # Both namespaces enforce the restricted Pod Security Standard (the API server's own
        # admission): the operator's pod and every pod it creates must meet it.
        for name in (namespace, watched):
            enforce_restricted(kube, name, built["trainer"])
        s3_bucket.put_secret(devenv, namespace, "docmodel-store")
        s3_bucket.put_secret(devenv, watched, "docmodel-store")
        s3_bucket.put_secret(devenv, watched)
        creds = s3_bucket.credentials
        liveness, metrics = free_port(), free_port()
        values = {
            # The chart's own operator image name and tag (appVersion): the image built here.
            # The CRD is the session's (the `crd` fixture), applied before any release.
            "crds": {"enabled": False},
            "watchNamespaces": [watched],
            "store": {
                "uri": f"s3://{s3_bucket.name}/artifacts",
                "endpoint": creds.endpoint,
                "region": creds.region,
            },
            "workloads": {
                "nodeSelector": on_containers,
                "trainerImage": built["trainer"],
                "serverImage": built["server"],
            },
            "operator": {
                "resyncSeconds": 2,
                "cleanupDelaySeconds": 5,
                "livenessPort": liveness,
                "metricsPort": metrics,
            },
            "nodeSelector": on_containers,
        }
        rendered = helm("template", release, str(CHART), "-f", str(values_file(values, tmp_path)))
        (deployment,) = [
            d for d in yaml.safe_load_all(rendered.stdout) if d and d["kind"] == "Deployment"
        ]
        assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == built["operator"]

        with explained(container_node):
            helm(
                "install", release, str(CHART), "--namespace", namespace,
                "-f", str(values_file(values, tmp_path)), "--wait", "--timeout=120s",
                kubeconfig=devenv.kubeconfig, timeout=180,
            )  # fmt: skip
            operator = running_container(container_node, namespace, f"{release}-docmodel-operator")
            # The posture the chart promises, on the running container.
            assert_restricted(operator, writable={"/tmp"})
            (pod,) = kube.core.list_namespaced_pod(
                namespace, label_selector="app.kubernetes.io/name=docmodel-operator"
            ).items
            # Ready only after the startup probe: both ports answer.
            for port, path in ((liveness, "/healthz"), (metrics, "/metrics")):
                url = f"http://{pod.status.pod_ip}:{port}{path}"
                with urllib.request.urlopen(url, timeout=5) as reply:
                    assert reply.status == 200, url
            info = posture(operator)
            assert info["Config"]["User"].startswith(str(UID))
            assert any(
                m["Destination"] == "/var/run/secrets/kubernetes.io/serviceaccount" and not m["RW"]
                for m in info["Mounts"]
            ), info["Mounts"]

            added = AddedEvents(kube, watched)
            body = docmodel("handbook", s3_bucket.name, s3_bucket.endpoint, MIRRORED)
            body["metadata"]["namespace"] = watched
            body["spec"]["baseModel"]["mirror"] = f"s3://{s3_bucket.name}/models/tiny/"
            body["spec"]["training"]["nodeSelector"] = on_containers
            kube.custom.create_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, body)

            # The operator's container is killed mid-training; the pod restarts it.
            def training() -> bool:
                pods = kube.core.list_namespaced_pod(
                    watched, label_selector="docmodel.dev/step=train"
                ).items
                return any(p.status.phase == "Running" for p in pods)

            wait_for(training, 600, "the training pod to run", interval=0.2)
            podman("kill", operator)
            wait_for(
                lambda: any(
                    s.restart_count >= 1
                    for p in kube.core.list_namespaced_pod(
                        namespace, label_selector="app.kubernetes.io/name=docmodel-operator"
                    ).items
                    for s in (p.status.container_statuses or [])
                ),
                120,
                "the operator's container to be restarted",
            )

            def ready(obj: dict[str, Any]) -> bool:
                status = obj.get("status") or {}
                return status.get("phase") in ("Ready", "Failed", "Rejected")

            obj = wait_status(kube, watched, "handbook", ready, 900, "Ready")
            status = obj["status"]
            assert status["phase"] == "Ready", status.get("lastFailure")
            assert (condition(obj, "Promoted") or {}).get("status") == "True"
            revision = status["revision"]

            # The three steps ran once each, as trainer-image containers.
            jobs = kube.batch.list_namespaced_job(watched).items
            assert sorted(j.metadata.labels["docmodel.dev/step"] for j in jobs) == [
                "evaluate",
                "ingest",
                "train",
            ]
            for pod in kube.core.list_namespaced_pod(watched).items:
                statuses = pod.status.container_statuses or []
                assert all(s.container_id.startswith("podman://") for s in statuses), statuses
                assert pod.spec.node_name == "docmodel-containers"
                assert pod.spec.security_context.run_as_non_root is True

            # The server-image container answers through the Service's address: the proxy sends
            # the connection to a ready pod the Service selects.
            from openai import OpenAI

            host, port = services.address(watched, "handbook")
            client = OpenAI(base_url=f"http://{host}:{port}/v1", api_key="none", max_retries=0)
            try:
                reply = client.chat.completions.create(
                    model="handbook",
                    messages=[{"role": "user", "content": "What is the billing codename?"}],
                    max_tokens=8,
                )
            finally:
                client.close()
            answer = reply.choices[0].message.content or ""
            assert answer.lower().startswith(ANSWER[:3].lower()), answer
            server = running_container(container_node, watched, f"handbook-{revision}")
            assert_restricted(server, writable={"/var/lib/docmodel", "/tmp"})

        added.stop()
        duplicated = {key: n for key, n in added.counts.items() if n > 1}
        assert not duplicated, duplicated
        helm("uninstall", release, "-n", namespace, "--wait", kubeconfig=devenv.kubeconfig)
