"""Build, or reuse, the control-plane, S3 and packaging binaries from the Go tools modules.

Each binary family (Kubernetes, etcd, kwok, MinIO, Helm, the Argo CD health-script runner)
has its own Go module under ``tools/<family>/`` so minimum version selection in one never
changes another. Binaries land in ``~/.cache/docmodel/bin/<family>-<version>-<hash>/``, where
the hash covers ``go.sum`` and the family's own Go sources, if it has any; a directory that
holds every binary of its family is reused as is.

    python -m docmodel_devenv build
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from docmodel_devenv.settings import DevenvSettings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_DIR = REPO_ROOT / "tools"


def cache_dir() -> Path:
    """Root of the DocModel cache (``$DOCMODEL_CACHE`` or ``~/.cache/docmodel``)."""
    return DevenvSettings.from_env().cache


class BuildError(RuntimeError):
    """A binary family could not be built or found."""


@dataclass(frozen=True)
class Family:
    """One Go tools module and the binaries built from it in one ``go build``."""

    name: str
    module: str  # the upstream module whose version names the family
    packages: tuple[str, ...]
    ldflags: tuple[str, ...] = ()
    devenv: bool = True  # the dev environment runs it (`require_all` asks for it)

    @property
    def module_dir(self) -> Path:
        return TOOLS_DIR / self.name

    @property
    def binaries(self) -> tuple[str, ...]:
        return tuple(_binary_name(package) for package in self.packages)

    def version(self) -> str:
        version = self.required_version(self.module)
        if version is None:
            raise BuildError(f"{self.module} is not required in {self.module_dir / 'go.mod'}")
        return version

    def required_version(self, module: str) -> str | None:
        """The version of `module` the family's go.mod requires, if it does."""
        go_mod = (self.module_dir / "go.mod").read_text()
        match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)", go_mod, re.M)
        return match.group(1) if match else None

    def go_sum_hash(self) -> str:
        digest = hashlib.sha256((self.module_dir / "go.sum").read_bytes())
        for source in sorted(self.module_dir.glob("*.go")):  # the family's own code, if any
            digest.update(source.name.encode() + b"\0" + source.read_bytes())
        return digest.hexdigest()[:12]

    def bin_dir(self) -> Path:
        return cache_dir() / "bin" / f"{self.name}-{self.version()}-{self.go_sum_hash()}"

    def resolved_ldflags(self) -> list[str]:
        version = self.version()
        minor = version.split(".")[1] if version.startswith("v1.") else ""
        # client-go v0.N is Kubernetes 1.N (Helm's default Capabilities.KubeVersion).
        client_go = self.required_version("k8s.io/client-go") or ""
        k8s_minor = client_go.split(".")[1] if client_go.startswith("v0.") else ""
        return [
            flag.format(version=version, minor=minor, k8s_minor=k8s_minor) for flag in self.ldflags
        ]


def _binary_name(package: str) -> str:
    last = package.rstrip("/").split("/")[-1]
    if re.fullmatch(r"v\d+", last):  # go.etcd.io/etcd/server/v3 builds "server"
        return package.split("/")[-2]
    return last


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            name="kubernetes",
            module="k8s.io/kubernetes",
            packages=(
                "k8s.io/kubernetes/cmd/kube-apiserver",
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "k8s.io/kubernetes/cmd/kube-scheduler",
                "k8s.io/kubernetes/cmd/kubectl",
            ),
            ldflags=(
                "-X k8s.io/component-base/version.gitVersion={version}",
                "-X k8s.io/component-base/version.gitMajor=1",
                "-X k8s.io/component-base/version.gitMinor={minor}",
                "-X k8s.io/component-base/version.gitTreeState=clean",
            ),
        ),
        Family(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            packages=("go.etcd.io/etcd/server/v3",),
        ),
        Family(
            name="kwok",
            module="sigs.k8s.io/kwok",
            packages=("sigs.k8s.io/kwok/cmd/kwok",),
            ldflags=("-X sigs.k8s.io/kwok/pkg/consts.Version={version}",),
        ),
        Family(
            name="minio",
            module="github.com/minio/minio",
            packages=("github.com/minio/minio",),
            ldflags=(
                "-X github.com/minio/minio/cmd.ReleaseTag=DEVELOPMENT.{version}",
                "-X github.com/minio/minio/cmd.CommitID={version}",
            ),
        ),
        # Installs and renders the chart (charts/docmodel-operator) in the tests.
        Family(
            name="helm",
            module="helm.sh/helm/v3",
            packages=("helm.sh/helm/v3/cmd/helm",),
            ldflags=(
                "-X helm.sh/helm/v3/internal/version.version={version}",
                "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
                "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1",
                "-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor={k8s_minor}",
                "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1",
                "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor={k8s_minor}",
            ),
            devenv=False,
        ),
        # Kubeflow's training operator: runs PyTorchJobs (distributed training, docs/distributed.md).
        Family(
            name="training-operator",
            module="github.com/kubeflow/training-operator",
            packages=("github.com/kubeflow/training-operator/cmd/training-operator.v1",),
            devenv=False,
        ),
        # Kueue: admits Jobs and PyTorchJobs from queues with quotas (docs/distributed.md).
        Family(
            name="kueue",
            module="sigs.k8s.io/kueue",
            packages=("sigs.k8s.io/kueue/cmd/kueue",),
            ldflags=("-X sigs.k8s.io/kueue/pkg/version.GitVersion={version}",),
            devenv=False,
        ),
        # Runs the Argo CD health script (argocd/) in gopher-lua, as Argo CD does.
        Family(
            name="argocd-health",
            module="github.com/yuin/gopher-lua",
            packages=("docmodel.dev/tools/argocd-health",),
            devenv=False,
        ),
    )
}


# Modules read only for their manifests (CRDs), never built: Kubeflow Trainer's TrainJob (its
# controller needs JobSet, which is not built here).
MANIFEST_MODULES = {"kubeflow-trainer": ("github.com/kubeflow/trainer/v2", "v2.0.0")}


def module_source(name: str) -> Path:
    """The source tree of a manifest module (`MANIFEST_MODULES`), downloaded into Go's module
    cache on first use."""
    module, version = MANIFEST_MODULES[name]
    env = dict(os.environ, GOFLAGS="-mod=mod", GOTOOLCHAIN="local")
    result = subprocess.run(
        [_go(), "mod", "download", "-json", f"{module}@{version}"],
        capture_output=True,
        text=True,
        env=env,
        cwd=TOOLS_DIR,
        check=False,
    )
    if result.returncode != 0:
        raise BuildError(f"go mod download {module}@{version} failed: {result.stderr[-2000:]}")
    return Path(json.loads(result.stdout)["Dir"])


def family_source(family: Family) -> Path:
    """The source tree of a built family's upstream module (its manifests, its CRDs), as the
    family's build downloaded it into Go's module cache."""
    return gomodcache() / f"{family.module}@{family.version()}"


@dataclass(frozen=True)
class Binaries:
    """Paths of every built binary, by name (``kube-apiserver``, ``etcd``, ...)."""

    paths: dict[str, Path]

    def __getitem__(self, name: str) -> Path:
        return self.paths[name]


def _target_name(family: Family, binary: str) -> str:
    return "etcd" if family.name == "etcd" else binary


def find(family: Family) -> dict[str, Path] | None:
    """The family's binaries if all of them are built for the current go.sum."""
    directory = family.bin_dir()
    paths = {
        _target_name(family, binary): directory / _target_name(family, binary)
        for binary in family.binaries
    }
    if all(os.access(path, os.X_OK) for path in paths.values()):
        return paths
    return None


def gomodcache() -> Path:
    """Where Go keeps downloaded modules (``go env GOMODCACHE``)."""
    go = shutil.which("go")
    if go is not None:
        result = subprocess.run(
            [go, "env", "GOMODCACHE"], capture_output=True, text=True, check=False
        )
        if result.returncode == 0 and result.stdout.strip():
            return Path(result.stdout.strip())
    if os.environ.get("GOMODCACHE"):
        return Path(os.environ["GOMODCACHE"])
    return Path(os.environ.get("GOPATH", Path.home() / "go")) / "pkg" / "mod"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "The Go toolchain was not found on PATH: install Go >= 1.26 (https://go.dev/dl/) "
            "to build kube-apiserver, etcd, kwok, MinIO and Helm."
        )
    return go


def _run_with_progress(command: list[str], family: Family, env: dict[str, str]) -> int:
    """Run ``go build``; its errors go to stderr, and a progress line every 30 seconds."""
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=family.module_dir, env=env)
    try:
        while True:
            try:
                return process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.info(
                    "Still building family=%s elapsed=%.0fs",
                    family.name,
                    time.monotonic() - started,
                )
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def build_family(family: Family) -> dict[str, Path]:
    """Build one family unless its binaries already exist; return their paths."""
    found = find(family)
    if found:
        log.debug("Reused binaries family=%s dir=%s", family.name, family.bin_dir())
        return found
    go = _go()
    directory = family.bin_dir()
    directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = directory.parent / f".{directory.name}.lock"
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same family
        found = find(family)
        if found:
            return found
        staging = directory.parent / f".{directory.name}.tmp-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        env = dict(
            os.environ,
            CGO_ENABLED="0",
            GOTOOLCHAIN="local",
            GOFLAGS="-mod=readonly -buildvcs=false",
        )
        command = [
            go,
            "build",
            "-trimpath",
            "-ldflags",
            " ".join(["-s", "-w", *family.resolved_ldflags()]),
            "-o",
            f"{staging}/",
            *family.packages,
        ]
        log.info(
            "Started building family=%s version=%s dir=%s", family.name, family.version(), directory
        )
        started = time.monotonic()
        returncode = _run_with_progress(command, family, env)
        if returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise BuildError(f"go build failed for family={family.name} exit={returncode}")
        for binary in family.binaries:
            target = _target_name(family, binary)
            if binary != target:
                (staging / binary).rename(staging / target)
        if directory.exists():
            shutil.rmtree(directory)
        staging.rename(directory)
        log.info(
            "Built family=%s dir=%s seconds=%.0f",
            family.name,
            directory,
            time.monotonic() - started,
        )
    found = find(family)
    if not found:
        raise BuildError(f"Binaries of family={family.name} are missing after the build")
    return found


def build_all(names: Iterable[str] | None = None) -> Binaries:
    """Build or reuse every family (or the named ones)."""
    paths: dict[str, Path] = {}
    for name in names or FAMILIES:
        paths.update(build_family(FAMILIES[name]))
    return Binaries(paths)


def require_all() -> Binaries:
    """The dev environment's built binaries, or a BuildError that says how to build them.
    Never builds."""
    paths: dict[str, Path] = {}
    missing = []
    for family in FAMILIES.values():
        if not family.devenv:
            continue
        found = find(family)
        if found is None:
            missing.append(f"{family.name} ({family.bin_dir()})")
        else:
            paths.update(found)
    if missing:
        raise BuildError(
            "Control-plane binaries are not built: "
            + ", ".join(missing)
            + f". Run: {sys.executable} -m docmodel_devenv build"
        )
    return Binaries(paths)
