"""The local node's stand-in for cluster DNS (a pod's managed /etc/hosts and hostname) and the
training engines' certificates, webhook configurations and Kueue configuration. (Running the
engines is tests/cluster/test_engines.py.)"""

from __future__ import annotations

import datetime
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from docmodel_devenv import containers, engines, procs
from docmodel_devenv.containers import ContainerRuntime, Volumes
from docmodel_devenv.kubeapi import ApiError
from docmodel_devenv.podenv import (
    hosts_file,
    in_pod_namespaces,
    pod_hostname,
    pod_namespaces_available,
    write_in_place,
)
from docmodel_devenv.podworker import PodWorker

NS = "team"
needs_namespaces = pytest.mark.skipif(
    not pod_namespaces_available(), reason="needs root and unshare(1) for a private namespace"
)


def a_pod(name: str, ip: str = "", ready: bool = True, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending"}
    if ip:
        status["podIP"] = ip
        status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
    return {
        "metadata": {"name": name, "namespace": NS, "uid": f"uid-{name}", "labels": labels},
        "spec": {"containers": [{"name": "main", "image": "img"}], **spec},
        "status": status,
    }


def a_service(name: str, selector: dict[str, str] | None, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": NS}, "spec": {"selector": selector, **spec}}


def names_of(text: str, ip: str) -> list[str]:
    return [n for line in text.splitlines() if line.startswith(ip + "\t") for n in line.split()[1:]]


def test_hosts_file_holds_the_kubelets_entries_and_the_service_names_dns_would_answer() -> None:
    master = a_pod("job-master-0", "127.0.0.11", labels={"role": "master"})
    worker = a_pod("job-worker-0", "127.0.0.12", labels={"role": "worker"})
    starting = a_pod("job-worker-1", "127.0.0.13", ready=False, labels={"role": "worker"})
    done = a_pod("old", "127.0.0.14", labels={"role": "worker"})
    done["status"]["phase"] = "Succeeded"
    elsewhere = {**a_pod("x", "127.0.0.15", labels={"role": "master"})}
    elsewhere["metadata"] = {**elsewhere["metadata"], "namespace": "other"}
    pods = [master, worker, starting, done, elsewhere]
    services = [
        a_service("job-master-0", {"role": "master"}, clusterIP="None"),
        a_service("workers", {"role": "worker"}, clusterIP="None"),
        a_service("eager", {"role": "worker"}, clusterIP="None", publishNotReadyAddresses=True),
        a_service("api", {"role": "worker"}, clusterIP="10.0.0.7"),
        a_service("nobody", {"role": "none"}, clusterIP="None"),
        a_service("external", None, type="ExternalName", externalName="example.org"),
    ]
    text = hosts_file(worker, "127.0.0.12", services, pods)
    assert text.startswith("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n")
    assert "::1\tlocalhost ip6-localhost ip6-loopback\n" in text
    # The master's headless Service resolves to the master pod, by every name DNS answers.
    assert names_of(text, "127.0.0.11") == [
        f"job-master-0.{NS}.svc.cluster.local",
        f"job-master-0.{NS}.svc",
        f"job-master-0.{NS}",
        "job-master-0",
    ]
    worker_names = names_of(text, "127.0.0.12")
    assert worker_names[0] == "job-worker-0"  # the pod's own name first, as the kubelet writes
    assert {"workers", "eager", "api"} <= set(worker_names)
    # Not ready: only where the Service publishes addresses that are not ready.
    assert [n for n in names_of(text, "127.0.0.13") if "." not in n] == ["eager"]
    for absent in ("127.0.0.14", "127.0.0.15", "nobody", "external", "10.0.0.7"):
        assert absent not in text


def test_hosts_file_has_the_pods_subdomain_aliases_and_hostname() -> None:
    member = a_pod(
        "trainer-0-abcde",
        "127.0.0.21",
        labels={"app": "t"},
        hostname="trainer-0",
        subdomain="trainers",
        hostAliases=[{"ip": "127.0.0.99", "hostnames": ["s3.local", "minio"]}],
    )
    services = [a_service("trainers", {"app": "t"}, clusterIP="None")]
    text = hosts_file(member, "127.0.0.21", services, [member])
    assert f"127.0.0.21\ttrainer-0.trainers.{NS}.svc.cluster.local\ttrainer-0\n" in text
    assert "# Entries added by HostAliases.\n127.0.0.99\ts3.local\tminio\n" in text
    assert f"trainer-0.trainers.{NS}.svc.cluster.local" in names_of(text, "127.0.0.21")[2:]
    assert "trainer-0.trainers" in names_of(text, "127.0.0.21")
    assert pod_hostname(member) == "trainer-0"
    assert pod_hostname(a_pod("a" * 62 + "-b")) == "a" * 62  # 63 characters, no trailing "-"


def test_the_hosts_file_is_rewritten_in_place(tmp_path: Path) -> None:
    path = tmp_path / "etc-hosts"
    write_in_place(path, "127.0.0.1\tlocalhost\n127.0.0.11\tmaster\n")
    inode = path.stat().st_ino
    write_in_place(path, "127.0.0.1\tlocalhost\n")
    assert path.read_text() == "127.0.0.1\tlocalhost\n"
    assert path.stat().st_ino == inode  # a bind mount of the file sees the change


@needs_namespaces
def test_a_pod_process_sees_its_hosts_file_and_hostname_and_the_host_does_not(
    tmp_path: Path,
) -> None:
    before = Path("/etc/hosts").read_text()
    hosts = tmp_path / "etc-hosts"
    write_in_place(hosts, "127.0.0.1\tlocalhost\n127.0.0.11\tjob-master-0\n")
    script = "getent hosts job-master-0; hostname; read line; getent hosts job-worker-0"
    process = subprocess.Popen(
        in_pod_namespaces(["sh", "-c", script], hosts, "job-worker-0"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().split() == ["127.0.0.11", "job-master-0"]
    assert process.stdout.readline() == "job-worker-0\n"
    # Updated while the process runs (a retrying init container sees the new names).
    write_in_place(hosts, "127.0.0.1\tlocalhost\n127.0.0.12\tjob-worker-0\n")
    output, _ = process.communicate("go\n", timeout=30)
    assert process.returncode == 0, output
    assert output.split() == ["127.0.0.12", "job-worker-0"]
    assert Path("/etc/hosts").read_text() == before
    assert os.uname().nodename != "job-worker-0"


class FakeApi:
    """`get` of Services and pods of a namespace, from lists."""

    def __init__(self, services: list[dict[str, Any]], pods: list[dict[str, Any]]) -> None:
        self.services, self.pods = services, pods
        self.calls: list[str] = []

    def get(self, api_version: str, plural: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(plural)
        if plural == "services":
            return {"items": self.services}
        if plural == "pods":
            return {"items": self.pods}
        raise ApiError(404, "not found")


def worker_for(pod: dict[str, Any], api: FakeApi, tmp_path: Path) -> PodWorker:
    return PodWorker(
        api,  # type: ignore[arg-type]
        pod,
        pod["status"].get("podIP", "127.0.0.30"),
        "127.0.0.1",
        tmp_path / "pod",
        [],
        {},
        hosts=True,
    )


def test_worker_writes_the_hosts_file_and_reads_pods_only_behind_a_selector(
    tmp_path: Path,
) -> None:
    master = a_pod("m", "127.0.0.31", labels={"r": "m"})
    api = FakeApi([a_service("m", {"r": "m"}, clusterIP="None")], [master])
    worker = worker_for(a_pod("w", "127.0.0.30"), api, tmp_path)
    worker.refresh_hosts()
    assert worker.hosts_path is not None
    assert names_of(worker.hosts_path.read_text(), "127.0.0.31")[-1] == "m"
    assert api.calls == ["services", "pods"]
    without_selectors = FakeApi([a_service("external", None)], [master])
    worker_for(a_pod("w2", "127.0.0.32"), without_selectors, tmp_path / "2").refresh_hosts()
    assert without_selectors.calls == ["services"]
    # A hostNetwork pod keeps the host's /etc/hosts, as with the kubelet.
    host_network = worker_for(a_pod("h", "127.0.0.33", hostNetwork=True), api, tmp_path / "3")
    assert host_network.hosts_path is None


def test_a_missing_executable_is_still_a_run_container_error(tmp_path: Path) -> None:
    pod = a_pod("w", "127.0.0.30")
    pod["spec"]["containers"][0]["command"] = ["no-such-program-here"]
    worker = worker_for(pod, FakeApi([], []), tmp_path)
    (container,) = worker.containers
    worker._start(container)
    assert container.process is None
    assert container.state["waiting"]["reason"] == "RunContainerError"
    assert "no-such-program-here" in container.state["waiting"]["message"]


@needs_namespaces
def test_a_pod_process_runs_with_its_hosts_file_and_hostname(tmp_path: Path) -> None:
    master = a_pod("job-master-0", "127.0.0.41", labels={"r": "m"})
    pod = a_pod("job-worker-0", "127.0.0.42")
    pod["spec"]["containers"][0]["command"] = [
        "sh",
        "-c",
        "getent hosts job-master-0.team.svc; hostname; echo $HOSTNAME",
    ]
    api = FakeApi([a_service("job-master-0", {"r": "m"}, clusterIP="None")], [master])
    worker = worker_for(pod, api, tmp_path)
    (container,) = worker.containers
    worker._start(container)
    assert container.process is not None
    assert container.process.wait(30) == 0
    lines = container.log_path.read_text().splitlines()
    assert lines[0].split()[0] == "127.0.0.41"
    assert lines[1:] == ["job-worker-0", "job-worker-0"]


def test_a_container_gets_the_hosts_file_and_the_pods_hostname(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(containers, "image_user", lambda image: "")
    pod = a_pod("job-worker-0", "127.0.1.12")
    spec = {"name": "main", "image": "img", "command": ["python"]}
    volumes = Volumes(None, pod, tmp_path)  # type: ignore[arg-type]
    runtime = ContainerRuntime(api=None, owner=str(tmp_path))  # type: ignore[arg-type]
    hosts = tmp_path / "etc-hosts"
    argv = runtime.argv(pod, spec, {}, volumes, "k8s_main", hosts)
    assert argv[argv.index("--hostname") + 1] == "job-worker-0"
    assert f"{hosts}:/etc/hosts:ro" in argv  # the kubelet-managed file; not the pod's to write
    assert "--hostname" not in runtime.argv(pod, spec, {}, volumes, "k8s_main")


# --- the engines -----------------------------------------------------------------------------


def test_webhook_certificates_are_what_the_certificate_managers_keep(tmp_path: Path) -> None:
    pki = engines.webhook_pki(
        tmp_path, "training-operator-ca", "training-operator", "training-operator.kubeflow.svc"
    )
    ca = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(pki.cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName) == ["training-operator-ca"]
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["training-operator.kubeflow.svc"]
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    # cert-controller renews what expires within 90 days and reads PKCS#1 RSA keys.
    soon = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=91)
    assert ca.not_valid_after_utc > soon and cert.not_valid_after_utc > soon
    assert pki.ca_key.read_text().startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert sorted(pki.secret_data()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    copied = pki.copy_to(tmp_path / "volume", with_ca=False)
    assert sorted(p.name for p in copied.iterdir()) == ["tls.crt", "tls.key"]


SERVICE_HOOKS = {
    "apiVersion": engines.WEBHOOK_API,
    "kind": "MutatingWebhookConfiguration",
    "metadata": {"name": "mutating-webhook-configuration"},
    "webhooks": [
        {
            "name": f"m{plural}.kb.io",
            "clientConfig": {"service": {"name": "webhook-service", "path": f"/mutate-{plural}"}},
            "rules": [{"apiGroups": [group], "resources": [plural]}],
        }
        for group, plural in [
            ("batch", "jobs"),
            ("kubeflow.org", "pytorchjobs"),
            ("kubeflow.org", "tfjobs"),
            ("", "pods"),
            ("kueue.x-k8s.io", "workloads"),
        ]
    ],
}


def test_webhooks_are_sent_to_loopback_for_the_enabled_kinds_only() -> None:
    resources = engines.framework_resources(engines.KUEUE_FRAMEWORKS)
    assert resources == {
        "kueue.x-k8s.io": None,
        "batch": {"jobs"},
        "kubeflow.org": {"pytorchjobs"},
    }
    configuration = engines.local_webhook_configuration(
        SERVICE_HOOKS,
        "kueue-mutating-webhook-configuration",
        "https://127.0.0.1:9443",
        b"CA",
        lambda hook: engines.serves(hook, resources),
    )
    assert configuration is not None
    hooks = {hook["name"]: hook["clientConfig"] for hook in configuration["webhooks"]}
    assert sorted(hooks) == ["mjobs.kb.io", "mpytorchjobs.kb.io", "mworkloads.kb.io"]
    assert hooks["mjobs.kb.io"] == {"url": "https://127.0.0.1:9443/mutate-jobs", "caBundle": "Q0E="}
    assert configuration["metadata"]["name"] == "kueue-mutating-webhook-configuration"
    assert SERVICE_HOOKS["webhooks"][0]["clientConfig"]["service"]  # the manifest is untouched
    pods = engines.framework_resources(["pod"])
    spared = engines._spare_system_namespaces(
        engines.local_webhook_configuration(
            SERVICE_HOOKS, "x", "https://127.0.0.1:1", b"", lambda h: engines.serves(h, pods)
        ),
        "kueue-system",
    )
    assert spared is not None
    selector = {h["name"]: h.get("namespaceSelector") for h in spared["webhooks"]}
    assert selector["mworkloads.kb.io"] is None
    assert selector["mpods.kb.io"]["matchExpressions"][0]["values"] == [
        "kube-system",
        "kueue-system",
    ]


def test_kueue_configuration_for_the_dev_cluster(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "health": {"healthProbeBindAddress": ":8081"},
        "metrics": {"bindAddress": ":8443"},
        "webhook": {"port": 9443},
        "leaderElection": {"leaderElect": True, "resourceName": "c1f6bfd2.kueue.x-k8s.io"},
        "integrations": {"frameworks": ["batch/job", "pod", "ray.io/rayjob"]},
        "controller": {"groupKindConcurrency": {"Job.batch": 5}},
    }
    config = engines.kueue_configuration(
        base,
        namespace="kueue-system",
        health_port=1,
        metrics_port=2,
        webhook_port=3,
        cert_dir=tmp_path,
    )
    assert config["health"] == {"healthProbeBindAddress": "127.0.0.1:1"}
    assert config["metrics"] == {"bindAddress": "127.0.0.1:2"}
    assert config["webhook"] == {"port": 3, "host": "127.0.0.1", "certDir": str(tmp_path)}
    assert config["integrations"]["frameworks"] == ["batch/job", "kubeflow.org/pytorchjob"]
    assert config["manageJobsWithoutQueueName"] is False
    assert config["internalCertManagement"] == {"enable": False}
    assert config["leaderElection"]["leaderElect"] is False
    assert config["featureGates"] == {"VisibilityOnDemand": False}
    assert config["controller"] == base["controller"]
    assert base["leaderElection"]["leaderElect"] is True


def test_cluster_queue_quota_covers_cpu_memory_and_optionally_gpus() -> None:
    queue = engines.cluster_queue_manifest("cq", "default-flavor", 2, "4Gi", gpus=1)
    (group,) = queue["spec"]["resourceGroups"]
    assert group["coveredResources"] == ["cpu", "memory", "nvidia.com/gpu"]
    (flavor,) = group["flavors"]
    assert flavor["name"] == "default-flavor"
    assert {r["name"]: r["nominalQuota"] for r in flavor["resources"]} == {
        "cpu": "2",
        "memory": "4Gi",
        "nvidia.com/gpu": "1",
    }
    assert queue["spec"]["namespaceSelector"] == {}  # every namespace
    cpu_only = engines.cluster_queue_manifest("cq", "f", "1", "1Gi")
    assert cpu_only["spec"]["resourceGroups"][0]["coveredResources"] == ["cpu", "memory"]


def test_the_pytorch_init_container_waits_for_the_master_name_and_is_restricted() -> None:
    text = engines.PYTORCH_INIT_CONTAINER
    for field, value in (("MasterAddr", "job-master-0"), ("InitContainerImage", "img")):
        text = text.replace("{{." + field + "}}", value)
    (container,) = yaml.safe_load(text.replace("{{.MaxTries}}", "100"))
    assert "getent hosts job-master-0" in container["command"][2]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False and context["runAsNonRoot"] is True
    assert context["capabilities"] == {"drop": ["ALL"]}


def test_private_mounts_quote_their_arguments() -> None:
    argv = engines._with_private_mounts(
        ["/bin/engine", "--flag=a b"], [["mount", "--bind", "/dir with space", "/target"]]
    )
    assert argv[:5] == ["unshare", "--mount", "--propagation", "private", "--"]
    assert argv[7] == "mount --bind '/dir with space' /target && exec \"$@\""
    assert argv[8:] == ["sh", "/bin/engine", "--flag=a b"]


def test_the_engines_manifests_from_the_module_cache() -> None:
    try:
        manifests = engines.load_manifests(
            engines.module_dir("kueue") / "config/components/webhook/manifests.yaml"
        )
        pytorchjob = engines.load_manifests(engines.pytorchjob_crd())
    except engines.EngineError as missing:
        pytest.skip(str(missing))
    resources = engines.framework_resources(engines.KUEUE_FRAMEWORKS)
    kept = [
        hook["name"]
        for manifest in manifests
        for hook in manifest["webhooks"]
        if engines.serves(hook, resources)
    ]
    assert {"mjob.kb.io", "vjob.kb.io", "mpytorchjob.kb.io", "vworkload.kb.io"} <= set(kept)
    assert not {"mpod.kb.io", "mdeployment.kb.io", "mrayjob.kb.io"} & set(kept)
    assert pytorchjob[0]["metadata"]["name"] == "pytorchjobs.kubeflow.org"


def test_an_engine_that_exits_names_its_log(tmp_path: Path) -> None:
    engine = engines.TrainingOperator(None, tmp_path / "kubeconfig", tmp_path)  # type: ignore[arg-type]
    engine.health_port = engines.free_port()
    engine.process = procs.start(
        "engine", ["sh", "-c", "echo certificates are missing; exit 3"], engine.log_path
    )
    with pytest.raises(engines.EngineError) as failed:
        engine._wait_ready(10)
    message = str(failed.value)
    assert message.startswith("training-operator did not become ready (http://127.0.0.1:")
    assert f"log: {engine.log_path}" in message
    assert "exited with code 3" in message and "certificates are missing" in message
    engine.stop()
