"""The training engines on the dev cluster: Kubeflow's training operator (PyTorchJobs) and
Kueue (queues and quotas for Jobs and PyTorchJobs), each built from its Go module (the `build`
families ``training-operator`` and ``kueue``) and run as a local process against the dev API
server with the admin kubeconfig, like the control plane.

- CRDs come from the modules in the Go module cache: the training operator's PyTorchJob CRD only
  (the operator runs with ``--enable-scheme=pytorchjob``) and every Kueue CRD.
- Webhook certificates are made here (`webhook_pki`): a CA of the engine and a serving certificate
  for the engine's Service name and 127.0.0.1. The API server cannot reach a Service, so the
  webhook configurations from the modules are registered with ``url: https://127.0.0.1:<port>``
  and the CA as ``caBundle``; they are removed before the engine stops.
  - training operator: its certificate manager (cert-controller) keeps the certificates it finds
    in the Secret ``training-operator-webhook-cert`` (namespace ``kubeflow``) when they are valid,
    so that Secret is filled in advance; the files it waits for in the fixed directory
    ``/tmp/k8s-webhook-server/serving-certs`` (a Secret volume in a cluster) are bind-mounted
    there in a private mount namespace of the process.
  - Kueue: ``internalCertManagement`` is off and ``webhook.certDir`` names the certificates; the
    metrics server's fixed ``/etc/kueue/metrics/certs`` is an overlay on /etc in a private mount
    namespace of the process. Nothing is written to the host's /etc.
- Ports (health, metrics, webhooks) are free ports on 127.0.0.1 (the training operator's webhook
  server takes only a port, and listens on every address); leader election is off; logs go to
  ``<workdir>/logs/<engine>.log``.

    operator = TrainingOperator.for_devenv(devenv).start()
    kueue = Kueue.for_devenv(devenv).start()
    create_resource_flavor(devenv.api, "default")
    create_cluster_queue(devenv.api, "team", "default", cpu="4", memory="8Gi", gpus=1)
    create_local_queue(devenv.api, namespace, "team", "team")
"""

from __future__ import annotations

import base64
import contextlib
import copy
import datetime
import ipaddress
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from docmodel import labels

from . import build, procs
from .controlplane import free_port, http_ok
from .kubeapi import ApiError, KubeApi, create_namespace
from .podenv import pod_namespaces_available

if TYPE_CHECKING:
    from .stack import DevEnv

log = logging.getLogger(__name__)

Obj = dict[str, Any]

KUBEFLOW_API = "kubeflow.org/v1"
KUEUE_API = "kueue.x-k8s.io/v1beta2"
QUEUE_LABEL = labels.QUEUE_NAME
TRAINING_OPERATOR_NAMESPACE = "kubeflow"
KUEUE_NAMESPACE = "kueue-system"
KUEUE_FRAMEWORKS = ("batch/job", "kubeflow.org/pytorchjob")
WEBHOOK_API = "admissionregistration.k8s.io/v1"
_WEBHOOK_PLURALS = {
    "MutatingWebhookConfiguration": "mutatingwebhookconfigurations",
    "ValidatingWebhookConfiguration": "validatingwebhookconfigurations",
}
# Fixed in the engines' code: cmd/training-operator.v1 -> pkg/cert, and cmd/kueue/main.go.
TRAINING_OPERATOR_CERT_DIR = Path("/tmp/k8s-webhook-server/serving-certs")
KUEUE_METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")
# The training operator's init container of PyTorchJob workers (pkg/controller.v1/pytorch), with
# `getent hosts` (the resolver's files and DNS, so the pod's /etc/hosts too) for `nslookup` (DNS
# only): the local node answers Service names from the pod's /etc/hosts. And a security context,
# so that worker pods are admitted where the restricted Pod Security Standard is enforced.
PYTORCH_INIT_CONTAINER = """\
- name: init-pytorch
  image: {{.InitContainerImage}}
  imagePullPolicy: IfNotPresent
  resources:
    limits:
      cpu: 100m
      memory: 20Mi
    requests:
      cpu: 50m
      memory: 10Mi
  securityContext:
    runAsNonRoot: true
    runAsUser: 65534
    allowPrivilegeEscalation: false
    capabilities:
      drop: [ALL]
    seccompProfile:
      type: RuntimeDefault
  command: ['sh', '-c', 'err=1;for i in $(seq {{.MaxTries}}); do if getent hosts {{.MasterAddr}}; then err=0 && break; fi;echo waiting for master; sleep 2; done; exit $err']
"""


class EngineError(RuntimeError):
    """An engine could not be installed or started, or did not become ready."""


# --- modules, manifests and CRDs ---------------------------------------------------------


def module_dir(family_name: str) -> Path:
    """The family's upstream module in the Go module cache (the build downloads it)."""
    family = build.FAMILIES[family_name]
    directory = build.gomodcache() / f"{family.module}@{family.version()}"
    if not directory.is_dir():
        raise EngineError(
            f"{family.module} {family.version()} is not in the Go module cache ({directory}): "
            f"run `{sys.executable} -m docmodel_devenv build {family_name}`"
        )
    return directory


def engine_binary(family_name: str, name: str) -> Path:
    """The engine's binary, built on first use (`python -m docmodel_devenv build` does it)."""
    return build.build_family(build.FAMILIES[family_name])[name]


def load_manifests(path: Path) -> list[Obj]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the CRDs are megabytes of YAML
    with path.open() as file:
        return [doc for doc in yaml.load_all(file, Loader=loader) if doc]


def pytorchjob_crd() -> Path:
    return module_dir("training-operator") / "manifests/base/crds/kubeflow.org_pytorchjobs.yaml"


def trainjob_crd() -> Path:
    """Kubeflow Trainer's TrainJob CRD (its controller is not run here: it needs JobSet)."""
    return build.module_source("kubeflow-trainer") / (
        "manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml"
    )


def kueue_crds() -> list[Path]:
    return sorted((module_dir("kueue") / "config/components/crd/bases").glob("*.yaml"))


def _established(api: KubeApi, name: str) -> bool:
    crd = api.get("apiextensions.k8s.io/v1", "customresourcedefinitions", name)
    conditions = (crd.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def install_crds(api: KubeApi, paths: Iterable[Path], timeout: float = 60.0) -> list[str]:
    """Apply (server-side) the CRDs in `paths` and wait until each is Established."""
    names = []
    for path in paths:
        for crd in load_manifests(path):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            try:
                api.apply(crd, "customresourcedefinitions", manager="docmodel-devenv-engines")
            except ApiError as error:
                raise EngineError(f"Could not install CRD from {path}: {error}") from error
            names.append(crd["metadata"]["name"])
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting:
        waiting = [name for name in waiting if not _established(api, name)]
        if waiting and time.monotonic() > deadline:
            raise EngineError(f"CRDs not Established after {timeout:.0f}s: {', '.join(waiting)}")
        if waiting:
            time.sleep(0.2)
    log.info("Installed CRDs count=%d", len(names))
    return names


def ensure_namespace(api: KubeApi, name: str) -> None:
    try:
        create_namespace(api, name)
    except ApiError as error:
        if error.status != 409:
            raise


# --- webhook certificates and configurations ----------------------------------------------


@dataclass(frozen=True)
class WebhookPki:
    """An engine's webhook CA and serving certificate (PEM files; RSA keys in PKCS#1, which
    the training operator's certificate manager reads)."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def cert(self) -> Path:
        return self.directory / "tls.crt"

    @property
    def key(self) -> Path:
        return self.directory / "tls.key"

    def secret_data(self) -> dict[str, str]:
        """The Secret the certificate managers keep: ca.crt, ca.key, tls.crt, tls.key."""
        files = (self.ca_cert, self.ca_key, self.cert, self.key)
        return {f.name: base64.b64encode(f.read_bytes()).decode() for f in files}

    def copy_to(self, directory: Path, with_ca: bool = True) -> Path:
        """The serving certificate and key (and the CA) as a Secret volume holds them."""
        directory.mkdir(parents=True, exist_ok=True)
        for file in (self.cert, self.key, *((self.ca_cert,) if with_ca else ())):
            shutil.copyfile(file, directory / file.name)
        return directory


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # "RSA PRIVATE KEY" (PKCS#1)
        serialization.NoEncryption(),
    )


def _key_usage(cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=True,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _signed(
    subject: x509.Name,
    issuer: x509.Name,
    key: rsa.RSAPrivateKey,
    signer: rsa.RSAPrivateKey,
    window: tuple[datetime.datetime, datetime.datetime],
    *,
    ca: bool,
    san: list[x509.GeneralName],
    key_id: x509.SubjectKeyIdentifier | x509.AuthorityKeyIdentifier,
) -> x509.Certificate:
    """A certificate for `key`, signed by `signer`: a CA's, or a server's (serverAuth)."""
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(window[0])
        .not_valid_after(window[1])
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=ca), critical=True)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(key_id, critical=False)
    )
    if not ca:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(signer, hashes.SHA256())


def webhook_pki(
    directory: Path, ca_name: str, organization: str, dns_name: str, days: int = 365
) -> WebhookPki:
    """A CA named `ca_name` (also its DNS name, as cert-controller makes it) and a serving
    certificate for `dns_name` and 127.0.0.1. Valid for `days`: the certificate managers renew
    what expires within 90 days."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = WebhookPki(directory)
    now = datetime.datetime.now(datetime.UTC)
    begin, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=days)
    ca_key = _rsa_key()
    ca_subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, ca_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        ]
    )
    window = (begin, end)
    ca_cert = _signed(
        ca_subject,
        ca_subject,
        ca_key,
        ca_key,
        window,
        ca=True,
        san=[x509.DNSName(ca_name)],
        key_id=x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
    )
    key = _rsa_key()
    cert = _signed(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_name)]),
        ca_subject,
        key,
        ca_key,
        window,
        ca=False,
        san=[x509.DNSName(dns_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        key_id=x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
    )
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.ca_key.write_bytes(_pem_key(ca_key))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem_key(key))
    for private in (pki.ca_key, pki.key):
        private.chmod(0o600)
    return pki


def serves(hook: Obj, resources: dict[str, set[str] | None]) -> bool:
    """Whether a webhook's rules touch one of `resources` (API group: plural names, or None
    for the whole group)."""
    for rule in hook.get("rules", []):
        for group in rule.get("apiGroups", []):
            if group not in resources:
                continue
            names = resources[group]
            if names is None or any(r.split("/")[0] in names for r in rule.get("resources", [])):
                return True
    return False


def local_webhook_configuration(
    manifest: Obj, name: str, url: str, ca_bundle: bytes, keep: Callable[[Obj], bool]
) -> Obj | None:
    """`manifest`'s webhooks that `keep` accepts, each sent to ``<url><its service path>``
    (the API server cannot reach a Service here) and trusting `ca_bundle`; None if none."""
    webhooks = []
    for hook in manifest.get("webhooks", []):
        if not keep(hook):
            continue
        hook = copy.deepcopy(hook)
        path = hook.get("clientConfig", {}).get("service", {}).get("path", "/")
        hook["clientConfig"] = {"url": url + path, "caBundle": base64.b64encode(ca_bundle).decode()}
        webhooks.append(hook)
    if not webhooks:
        return None
    return {
        "apiVersion": WEBHOOK_API,
        "kind": manifest["kind"],
        "metadata": {"name": name, "labels": {labels.MANAGED_BY: "docmodel-devenv"}},
        "webhooks": webhooks,
    }


# --- the engines ---------------------------------------------------------------------------


def _with_private_mounts(argv: list[str], mounts: list[list[str]]) -> list[str]:
    """`argv` in a private mount namespace after the `mounts` commands (none reaches the host)."""
    script = " && ".join([*(shlex.join(command) for command in mounts), 'exec "$@"'])
    return [
        "unshare", "--mount", "--propagation", "private", "--",
        "sh", "-c", script, "sh", *argv,
    ]  # fmt: skip


@dataclass
class Engine:
    """One engine's process, ports, webhook configurations and files under the dev
    environment's work directory."""

    name: ClassVar[str] = ""
    api: KubeApi
    kubeconfig: Path
    workdir: Path
    webhooks: bool = True  # register the engine's admission webhooks with the API server
    process: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0
    webhook_port: int = 0
    seconds: float = 0.0
    registered: list[tuple[str, str]] = field(default_factory=list)  # (plural, name)

    @classmethod
    def for_devenv(cls, env: DevEnv, **kwargs: Any) -> Self:
        """The engine for a started dev environment (`DevEnv`)."""
        if env.api is None or env.control_plane is None:
            raise EngineError(f"{cls.name}: the dev environment is not started")
        return cls(env.api, env.kubeconfig, env.workdir, **kwargs)

    @property
    def directory(self) -> Path:
        return self.workdir / "engines" / self.name

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / f"{self.name}.log"

    @property
    def readyz(self) -> str:
        return f"http://127.0.0.1:{self.health_port}/readyz"

    @property
    def webhook_url(self) -> str:
        return f"https://127.0.0.1:{self.webhook_port}"

    def _env(self, **extra: str) -> dict[str, str]:
        # No TMPDIR: controller-runtime's default certificate directory is under it.
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.directory),
            "KUBECONFIG": str(self.kubeconfig),
            **extra,
        }

    def _allocate_ports(self) -> None:
        self.health_port = self.health_port or free_port()
        self.metrics_port = self.metrics_port or free_port()
        self.webhook_port = self.webhook_port or free_port()

    def _launch(self, argv: list[str], env: dict[str, str], mounts: list[list[str]]) -> None:
        if not pod_namespaces_available():
            raise EngineError(
                f"{self.name} needs a private mount namespace for its fixed certificate "
                "directory: run as root with unshare(1) installed"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = procs.start(
            self.name,
            _with_private_mounts(argv, mounts),
            self.log_path,
            env=env,
            cwd=self.directory,
        )

    def _wait_ready(self, timeout: float) -> None:
        url = self.readyz
        try:
            procs.wait_until(
                lambda: http_ok(url), timeout, self.name, self.process, self.log_path, 0.25
            )
        except (RuntimeError, TimeoutError) as error:
            raise EngineError(
                f"{self.name} did not become ready ({url}); log: {self.log_path}\n{error}"
            ) from None

    def _register(self, configurations: Iterable[Obj | None]) -> None:
        for configuration in configurations:
            if configuration is None:
                continue
            plural = _WEBHOOK_PLURALS[configuration["kind"]]
            try:
                self.api.apply(configuration, plural, manager="docmodel-devenv-engines")
            except ApiError as error:
                raise EngineError(
                    f"{self.name}: could not register {configuration['kind']} "
                    f"{configuration['metadata']['name']}: {error}"
                ) from error
            self.registered.append((plural, configuration["metadata"]["name"]))

    def start(self, timeout: float = 120.0) -> Self:
        started = time.monotonic()
        try:
            self._start(timeout)
        except ApiError as error:
            self.stop()
            raise EngineError(f"{self.name} could not be installed: {error}") from error
        except BaseException:
            self.stop()
            raise
        self.seconds = time.monotonic() - started
        log.info(
            "Started engine=%s health=%s webhooks=%s log=%s seconds=%.1f",
            self.name,
            self.readyz,
            bool(self.registered),
            self.log_path,
            self.seconds,
        )
        return self

    def _start(self, timeout: float) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Remove the webhook configurations (the API server would refuse the objects they
        cover once nothing answers), then stop the process."""
        for plural, name in reversed(self.registered):
            with contextlib.suppress(Exception):
                self.api.delete(WEBHOOK_API, plural, name)
        self.registered.clear()
        if self.process is not None:
            procs.stop(self.process, grace=5.0)
            self.process = None
            log.info("Stopped engine=%s", self.name)


@dataclass
class TrainingOperator(Engine):
    """Kubeflow's training operator (``training-operator.v1``) for PyTorchJobs."""

    name: ClassVar[str] = "training-operator"
    namespace: str = TRAINING_OPERATOR_NAMESPACE  # MY_POD_NAMESPACE: where its Secret is
    service_name: str = "training-operator"
    secret_name: str = "training-operator-webhook-cert"
    webhook_configuration: str = "validator.training-operator.kubeflow.org"
    # The image of the workers' init container (pods on the local process node run it with
    # the host's sh; the container node needs it in Podman's storage), and its template.
    init_container_image: str = "alpine:3.10"
    init_container_template: str = PYTORCH_INIT_CONTAINER

    def _start(self, timeout: float) -> None:
        binary = engine_binary("training-operator", "training-operator.v1")
        install_crds(self.api, [pytorchjob_crd()])
        ensure_namespace(self.api, self.namespace)
        pki = webhook_pki(
            self.directory / "pki",
            "training-operator-ca",
            "training-operator",
            f"{self.service_name}.{self.namespace}.svc",
        )
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.secret_name, "namespace": self.namespace},
            "type": "Opaque",
            "data": pki.secret_data(),
        }
        self.api.apply(secret, "secrets", manager="docmodel-devenv-engines")
        # The Secret as a volume at the fixed directory: an empty mount point on the host,
        # the certificates in the process's own mount namespace.
        mounted = pki.copy_to(self.directory / "serving-certs")
        TRAINING_OPERATOR_CERT_DIR.mkdir(parents=True, exist_ok=True)
        template = self.directory / "pytorch-init-container.yaml"
        template.write_text(self.init_container_template)
        self._allocate_ports()
        argv = [
            str(binary),
            f"--metrics-bind-address=127.0.0.1:{self.metrics_port}",
            f"--health-probe-bind-address=127.0.0.1:{self.health_port}",
            f"--webhook-server-port={self.webhook_port}",
            f"--webhook-service-name={self.service_name}",
            f"--webhook-secret-name={self.secret_name}",
            "--enable-scheme=pytorchjob",
            f"--pytorch-init-container-template-file={template}",
            f"--pytorch-init-container-image={self.init_container_image}",
            "--zap-log-level=info",
        ]
        mounts = [["mount", "--bind", str(mounted), str(TRAINING_OPERATOR_CERT_DIR)]]
        if self.webhooks:
            # Before the start, as an install has it: the certificate manager checks it.
            manifests = module_dir("training-operator") / "manifests/base/webhook/manifests.yaml"
            (manifest,) = load_manifests(manifests)
            self._register(
                [
                    local_webhook_configuration(
                        manifest,
                        self.webhook_configuration,
                        self.webhook_url,
                        pki.ca_cert.read_bytes(),
                        lambda hook: serves(hook, {"kubeflow.org": {"pytorchjobs"}}),
                    )
                ]
            )
        self._launch(argv, self._env(MY_POD_NAMESPACE=self.namespace), mounts)
        self._wait_ready(timeout)


_CORE_FRAMEWORKS = {"pod": "", "deployment": "apps", "statefulset": "apps"}


def framework_resources(frameworks: Iterable[str]) -> dict[str, set[str] | None]:
    """API groups and plurals of Kueue's own kinds and of the enabled integrations
    (``group/kind``, or ``pod``, ``deployment``, ``statefulset``)."""
    resources: dict[str, set[str] | None] = {"kueue.x-k8s.io": None}
    for framework in frameworks:
        group, _, kind = framework.rpartition("/")
        if not group:
            group = _CORE_FRAMEWORKS.get(kind, "")
        plurals = resources.setdefault(group, set())
        if plurals is not None:
            plurals.add(kind.lower() + "s")
    return resources


def _spare_system_namespaces(configuration: Obj | None, namespace: str) -> Obj | None:
    """Kueue's kustomization keeps its pod, deployment and statefulset webhooks out of
    kube-system and its own namespace."""
    if configuration is None:
        return None
    for hook in configuration["webhooks"]:
        if serves(hook, {"": None, "apps": None}):
            hook["namespaceSelector"] = {
                "matchExpressions": [
                    {
                        "key": "kubernetes.io/metadata.name",
                        "operator": "NotIn",
                        "values": ["kube-system", namespace],
                    }
                ]
            }
    return configuration


def kueue_configuration(
    base: Obj,
    *,
    namespace: str,
    health_port: int,
    metrics_port: int,
    webhook_port: int,
    cert_dir: Path,
    frameworks: Iterable[str] = KUEUE_FRAMEWORKS,
    manage_jobs_without_queue_name: bool = False,
) -> Obj:
    """Kueue's shipped configuration (`base`) for the dev cluster: loopback ports, our
    certificates, no leader election, no visibility API server (it would need certificates at
    a fixed path and an APIService), the given integrations."""
    config = copy.deepcopy(base)
    config.update(
        namespace=namespace,
        health={**config.get("health", {}), "healthProbeBindAddress": f"127.0.0.1:{health_port}"},
        metrics={**config.get("metrics", {}), "bindAddress": f"127.0.0.1:{metrics_port}"},
        webhook={"port": webhook_port, "host": "127.0.0.1", "certDir": str(cert_dir)},
        leaderElection={**config.get("leaderElection", {}), "leaderElect": False},
        internalCertManagement={"enable": False},
        manageJobsWithoutQueueName=manage_jobs_without_queue_name,
        integrations={**config.get("integrations", {}), "frameworks": list(frameworks)},
        featureGates={**config.get("featureGates", {}), "VisibilityOnDemand": False},
    )
    return config


@dataclass
class Kueue(Engine):
    """Kueue (``kueue``), managing batch/Job and kubeflow.org/PyTorchJob."""

    name: ClassVar[str] = "kueue"
    namespace: str = KUEUE_NAMESPACE
    frameworks: tuple[str, ...] = KUEUE_FRAMEWORKS
    manage_jobs_without_queue_name: bool = False

    @property
    def config_path(self) -> Path:
        return self.directory / "controller_manager_config.yaml"

    def _start(self, timeout: float) -> None:
        binary = engine_binary("kueue", "kueue")
        source = module_dir("kueue")
        crds = kueue_crds()
        if "kubeflow.org/pytorchjob" in self.frameworks:
            crds.append(pytorchjob_crd())  # the integration is set up only for known kinds
        install_crds(self.api, crds)
        ensure_namespace(self.api, self.namespace)
        pki = webhook_pki(
            self.directory / "pki",
            "kueue-ca",
            "kueue",
            f"kueue-webhook-service.{self.namespace}.svc",
        )
        cert_dir = pki.copy_to(self.directory / "webhook-certs")
        # /etc/kueue/metrics/certs, in the process's own view of /etc (an overlay).
        upper, work = self.directory / "etc-upper", self.directory / "etc-work"
        metrics_dir = upper / KUEUE_METRICS_CERT_DIR.relative_to("/etc")
        pki.copy_to(metrics_dir, with_ca=False)
        work.mkdir(parents=True, exist_ok=True)
        self._allocate_ports()
        base = load_manifests(source / "config/components/manager/controller_manager_config.yaml")
        config = kueue_configuration(
            base[0],
            namespace=self.namespace,
            health_port=self.health_port,
            metrics_port=self.metrics_port,
            webhook_port=self.webhook_port,
            cert_dir=cert_dir,
            frameworks=self.frameworks,
            manage_jobs_without_queue_name=self.manage_jobs_without_queue_name,
        )
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        argv = [str(binary), f"--config={self.config_path}", "--zap-log-level=info"]
        overlay = f"lowerdir=/etc,upperdir={upper},workdir={work}"
        mounts = [["mount", "-t", "overlay", "overlay", "-o", overlay, "/etc"]]
        self._launch(argv, self._env(), mounts)
        self._wait_ready(timeout)
        if self.webhooks:  # once it answers: they cover every batch/v1 Job of the cluster
            resources = framework_resources(self.frameworks)
            manifests = load_manifests(source / "config/components/webhook/manifests.yaml")
            self._register(
                _spare_system_namespaces(
                    local_webhook_configuration(
                        manifest,
                        "kueue-" + manifest["metadata"]["name"],
                        self.webhook_url,
                        pki.ca_cert.read_bytes(),
                        lambda hook: serves(hook, resources),
                    ),
                    self.namespace,
                )
                for manifest in manifests
            )


# --- Kueue's queues --------------------------------------------------------------------------


def _conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}


def _wait_active(
    api: KubeApi, plural: str, name: str, namespace: str | None, timeout: float
) -> Obj:
    deadline = time.monotonic() + timeout
    while True:
        obj = api.get(KUEUE_API, plural, name, namespace=namespace)
        active = _conditions(obj).get("Active")
        if active is not None and active["status"] == "True":
            return obj
        if time.monotonic() > deadline:
            where = f"{namespace}/{name}" if namespace else name
            raise EngineError(
                f"Kueue {plural} {where} is not Active after {timeout:.0f}s: "
                f"{active.get('reason') if active else 'no Active condition'} "
                f"{active.get('message', '') if active else ''} (is Kueue running?)"
            )
        time.sleep(0.2)


def create_resource_flavor(
    api: KubeApi, name: str = "default-flavor", node_labels: dict[str, str] | None = None
) -> Obj:
    """A ResourceFlavor; with `node_labels`, admitted pods are steered to those nodes."""
    flavor = {
        "apiVersion": KUEUE_API,
        "kind": "ResourceFlavor",
        "metadata": {"name": name},
        "spec": {"nodeLabels": node_labels} if node_labels else {},
    }
    return api.apply(flavor, "resourceflavors", manager="docmodel-devenv-engines")


def cluster_queue_manifest(
    name: str,
    flavor: str,
    cpu: str | int,
    memory: str,
    gpus: str | int | None = None,
    namespace_selector: Obj | None = None,
) -> Obj:
    quotas = [("cpu", cpu), ("memory", memory)]
    if gpus is not None:
        quotas.append(("nvidia.com/gpu", gpus))
    return {
        "apiVersion": KUEUE_API,
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            # {} selects every namespace; None in the API would select none.
            "namespaceSelector": namespace_selector or {},
            "resourceGroups": [
                {
                    "coveredResources": [resource for resource, _ in quotas],
                    "flavors": [
                        {
                            "name": flavor,
                            "resources": [
                                {"name": resource, "nominalQuota": str(quota)}
                                for resource, quota in quotas
                            ],
                        }
                    ],
                }
            ],
        },
    }


def create_cluster_queue(
    api: KubeApi,
    name: str,
    flavor: str,
    cpu: str | int,
    memory: str,
    gpus: str | int | None = None,
    namespace_selector: Obj | None = None,
    timeout: float = 30.0,
) -> Obj:
    """A ClusterQueue with the given nominal quota in one flavor; waits until Kueue marks it
    Active (its flavor exists), so a stopped Kueue shows here."""
    manifest = cluster_queue_manifest(name, flavor, cpu, memory, gpus, namespace_selector)
    api.apply(manifest, "clusterqueues", manager="docmodel-devenv-engines")
    return _wait_active(api, "clusterqueues", name, None, timeout)


def create_local_queue(
    api: KubeApi, namespace: str, name: str, cluster_queue: str, timeout: float = 30.0
) -> Obj:
    """A LocalQueue in `namespace` pointing at `cluster_queue`; waits until it is Active.
    Jobs join it with the label ``kueue.x-k8s.io/queue-name: <name>`` (`QUEUE_LABEL`)."""
    queue = {
        "apiVersion": KUEUE_API,
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterQueue": cluster_queue},
    }
    api.apply(queue, "localqueues", manager="docmodel-devenv-engines")
    return _wait_active(api, "localqueues", name, namespace, timeout)


def delete_cluster_queue(api: KubeApi, name: str) -> None:
    """Delete a ClusterQueue (Kueue lets it go once no admitted workload uses it)."""
    api.delete(KUEUE_API, "clusterqueues", name)
