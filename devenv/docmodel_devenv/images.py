"""Build, or reuse, the project's container images with Podman.

    python -m docmodel_devenv images                      # base, operator, trainer, server
    python -m docmodel_devenv images trainer --record bench/results/images.json
    scripts/build-images.sh                               # the same, environment first

The images are built from the Dockerfile users build (./Dockerfile, one target per image), on a
base made here from Debian's packages (mmdebstrap, then `podman import`) and passed as its
BASE. The trainer and server are built as their CPU variant
(`VARIANT=cpu`, tag suffix `-cpu`), the one this machine can run; the GPU variant is what users
build by default. Each image is tagged as the Helm chart names it (`ghcr.io/docmodel/<name>`,
the chart's appVersion as tag) and labelled with a hash of everything that goes into it (the
Dockerfile and its ignore file, every file the image's target copies, the base image, the build
arguments): an image whose label matches is reused, so a second run takes seconds.

Podman runs with the runc runtime, host networking and lowered ulimits (`PODMAN_RUN` below):
what this machine allows. A CA bundle (``--ca-bundle``, else ``$SSL_CERT_FILE``, else the host's
trust store) is mounted over
the build's trust store for the RUN steps only, for registries behind a TLS-inspecting proxy; it
is never copied into an image.
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .build import REPO_ROOT, cache_dir

log = logging.getLogger(__name__)

PODMAN_GLOBAL = ("--runtime", "runc")
# Raising a ulimit needs a capability this kind of machine does not give; lowering works.
ULIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
PODMAN_RUN = (*ULIMITS, "--network", "host")
CHART = REPO_ROOT / "charts" / "docmodel-operator" / "Chart.yaml"
REGISTRY = "ghcr.io/docmodel"
INPUTS_LABEL = "dev.docmodel.image.inputs"
TOOLS = {"podman": "podman", "runc": "runc", "mmdebstrap": "mmdebstrap"}  # binary: package

# The base: Debian bookworm with Python 3.11 (its venv module gives pip) and the CA store.
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
BASE_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)
# Documentation, manual pages and translations are left out of the base.
BASE_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")


class ImageError(RuntimeError):
    """An image could not be built, or a tool it needs is missing."""


DOCKERFILE = REPO_ROOT / "Dockerfile"
DOCKERIGNORE = REPO_ROOT / ".dockerignore"
UV_SCRIPT = REPO_ROOT / "scripts" / "image-uv.sh"  # bound as `uv` by the installing steps
# What every target uses besides its own package: the lock, the project file, the core and the
# uv its RUN steps bind.
SHARED_SOURCES = ("requirements.lock", "pyproject.toml", "README.md", "scripts/image-uv.sh", "core")


@dataclass(frozen=True)
class Image:
    """One image of the project: its Dockerfile target and how the tests build it."""

    name: str  # also the Dockerfile's target
    package: str  # the directory of the image's own package, which its target copies
    variant: str | None = None  # the VARIANT build argument; None: the target has none

    @property
    def sources(self) -> tuple[str, ...]:
        return (*SHARED_SOURCES, self.package)

    @property
    def repository(self) -> str:
        return f"{REGISTRY}/{self.name}"

    def tag(self, version: str) -> str:
        return f"{self.repository}:{version}" + (f"-{self.variant}" if self.variant else "")


IMAGES = {
    "operator": Image("operator", "operator"),
    "trainer": Image("trainer", "trainer-image", variant="cpu"),
    "server": Image("server", "server-image", variant="cpu"),
}


def chart_version() -> str:
    """The chart's appVersion: the tag of every image it names."""
    return str(yaml.safe_load(CHART.read_text())["appVersion"])


def image_tag(name: str) -> str:
    """The tag the tests build `name` under (the chart's name, CPU variants suffixed)."""
    return IMAGES[name].tag(chart_version())


# --- tools --------------------------------------------------------------------------------


def run_podman(
    *args: str, timeout: float | None = None, **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    """``podman --runtime runc ARGS`` with no input; its output captured unless `kwargs` say
    where it goes. Never raises for the exit code: the caller decides."""
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    return subprocess.run(
        ["podman", *PODMAN_GLOBAL, *args],
        text=True,
        check=False,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )


def podman(*args: str, check: bool = True, timeout: float | None = None) -> str:
    """Run ``podman --runtime runc ARGS``; its output, or fail with it."""
    result = run_podman(*args, timeout=timeout)
    if check and result.returncode != 0:
        output = ((result.stdout or "") + (result.stderr or "")).strip()
        raise ImageError(
            f"podman {' '.join(args[:2])} failed ({result.returncode}): {output[-3000:]}"
        )
    return result.stdout or ""


def missing_tools() -> list[str]:
    return [binary for binary in TOOLS if shutil.which(binary) is None]


def ensure_tools() -> None:
    """Install Podman, runc and mmdebstrap with apt when they are missing (as root); otherwise
    fail naming what to install."""
    missing = missing_tools()
    if not missing:
        return
    packages = sorted({TOOLS[m] for m in missing})
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ImageError(
            f"building the images needs {', '.join(missing)}; install the packages "
            f"{' '.join(packages)} (as root: apt-get install {' '.join(packages)})"
        )
    log.info("Installing %s with apt-get", " ".join(packages))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
        if result.returncode != 0:
            raise ImageError(f"{' '.join(argv)} failed: {(result.stdout + result.stderr)[-2000:]}")
    still = missing_tools()
    if still:
        raise ImageError(
            f"apt-get installed {' '.join(packages)} but {', '.join(still)} is missing"
        )


def image_exists(reference: str) -> bool:
    return run_podman("image", "exists", reference).returncode == 0


def inspect(reference: str) -> dict[str, Any]:
    data = json.loads(podman("image", "inspect", reference))
    return dict(data[0])


# --- inputs -------------------------------------------------------------------------------


def context_entries() -> list[str]:
    """The ``!path`` lines of .dockerignore (which starts by ignoring everything)."""
    return [
        line[1:].strip().rstrip("/")
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.startswith("!")
    ]


def context_files(image: Image) -> list[Path]:
    """The files of the build context that `image`'s target copies, without bytecode."""
    missing = sorted(set(image.sources) - set(context_entries()))
    if missing:
        raise ImageError(
            f".dockerignore leaves out {', '.join(missing)}, which {image.name} copies"
        )
    files: list[Path] = []
    for entry in image.sources:
        path = REPO_ROOT / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files.extend(
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
            )
    return sorted(files)


def inputs_hash(image: Image, base_id: str, build_args: dict[str, str]) -> str:
    digest = hashlib.sha256()
    for path in [DOCKERFILE, DOCKERIGNORE, *context_files(image)]:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    digest.update(base_id.encode())
    digest.update(json.dumps(build_args, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def _revision() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


# --- records ------------------------------------------------------------------------------


def records_file() -> Path:
    return cache_dir() / "images" / "records.json"


def load_records() -> dict[str, Any]:
    path = records_file()
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _save_record(name: str, record: dict[str, Any]) -> None:
    records = load_records()
    records[name] = record
    path = records_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=2, sort_keys=True) + "\n")


def _step(created_by: str) -> str:
    """What a layer is, from the instruction that made it."""
    known = (
        ("ADD file:", "the base"),
        ("#(nop) COPY", "copied in: requirements.lock, pyproject.toml or the wheel"),
        (
            "requirements.lock torch",
            "torch from the lock (shared by the trainer and server images)",
        ),
        ("-r pyproject.toml", "the image's extras from the lock"),
        ("/tmp/dist", "the project's wheel installed, the user and directories"),
    )
    for needle, what in known:
        if needle in created_by:
            return what
    return " ".join(created_by.split())[:80]


def _describe(reference: str) -> dict[str, Any]:
    data = inspect(reference)
    history = json.loads(podman("history", "--format", "json", reference))
    layers = [
        {
            "mb": round(int(entry.get("size") or 0) / 1e6, 1),
            "what": _step(entry.get("CreatedBy") or ""),
        }
        for entry in reversed(history)
        if int(entry.get("size") or 0) > 0
    ]
    return {
        "id": data["Id"][:12],
        "size_bytes": int(data["Size"]),
        "size_mb": round(int(data["Size"]) / 1e6, 1),
        "layers": len(data.get("RootFS", {}).get("Layers", [])),
        "layer_sizes": layers,
    }


# --- the base -----------------------------------------------------------------------------


def base_tag() -> str:
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, BASE_SOURCES, BASE_EXCLUDES]).encode()
    return f"localhost/docmodel-base:{BASE_SUITE}-{hashlib.sha256(recipe).hexdigest()[:12]}"


def build_base() -> str:
    """The base image (made once from Debian's packages, then reused); its tag."""
    tag = base_tag()
    if image_exists(tag):
        return tag
    log.info("Building the base image %s with mmdebstrap (about a minute)", tag)
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="docmodel-base-") as tmp:
        tarball = Path(tmp) / "base.tar"
        argv = [
            "mmdebstrap",
            "--variant=apt",
            f"--include={','.join(BASE_PACKAGES)}",
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in BASE_EXCLUDES),
            BASE_SUITE,
            str(tarball),
            *BASE_SOURCES,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise ImageError(f"mmdebstrap failed: {(result.stdout + result.stderr)[-3000:]}")
        podman(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["/bin/bash"]',
            "--message",
            f"Debian {BASE_SUITE}: {', '.join(BASE_PACKAGES)}",
            str(tarball),
            tag,
        )
    seconds = round(time.monotonic() - start, 1)
    _save_record(
        "base",
        {"tag": tag, "build_seconds": seconds, "built_at": _now(), **_describe(tag)},
    )
    log.info("Built the base image %s in %.0f s", tag, seconds)
    return tag


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- the images ---------------------------------------------------------------------------


SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def ca_bundle(explicit: str | None) -> Path | None:
    """The CA bundle to mount into the builds: `explicit`, else ``$SSL_CERT_FILE``, else the
    host's own trust store (which holds a company proxy's CA where the host trusts it)."""
    candidate = explicit or os.environ.get("SSL_CERT_FILE")
    if not candidate:
        return SYSTEM_CA_BUNDLE if SYSTEM_CA_BUNDLE.is_file() else None
    path = Path(candidate)
    if not path.is_file():
        raise ImageError(f"the CA bundle {path} does not exist")
    return path


def build_image(
    image: Image, base: str, *, ca: Path | None = None, force: bool = False
) -> dict[str, Any]:
    """Build `image` on `base` unless an image with the same inputs exists; its record."""
    version = chart_version()
    tag = image.tag(version)
    build_args = {"BASE": base, "VERSION": version}
    if image.variant:
        build_args["VARIANT"] = image.variant
    inputs = inputs_hash(image, inspect(base)["Id"], build_args)
    if not force and image_exists(tag):
        labels = inspect(tag).get("Labels") or {}
        if labels.get(INPUTS_LABEL) == inputs:
            log.info("Reusing %s (inputs %s)", tag, inputs)
            record = load_records().get(image.name) or {}
            return {**record, "tag": tag, "inputs": inputs, "reused": True, **_describe(tag)}
    replaced = inspect(tag)["Id"] if image_exists(tag) else None
    argv = [
        "build",
        "--network",
        "host",
        *ULIMITS,
        "--layers",
        "-f",
        str(DOCKERFILE),
        "--target",
        image.name,
        "-t",
        tag,
        "--label",
        f"{INPUTS_LABEL}={inputs}",
        "--build-arg",
        f"REVISION={_revision()}",
        *(item for key, value in build_args.items() for item in ("--build-arg", f"{key}={value}")),
    ]
    if ca is not None:
        argv += ["-v", f"{ca}:/etc/ssl/certs/ca-certificates.crt:ro"]
    argv.append(str(REPO_ROOT))
    log.info("Building %s from the Dockerfile's %s target (inputs %s)", tag, image.name, inputs)
    start = time.monotonic()
    log_path = cache_dir() / "images" / f"{image.name}.build.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as out:
        result = run_podman(*argv, stdout=out, stderr=subprocess.STDOUT)
    seconds = round(time.monotonic() - start, 1)
    if result.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise ImageError(
            f"building the {image.name} image ({tag}) failed after {seconds:.0f} s; "
            f"the full log is {log_path}:\n{tail}"
        )
    record = {
        "tag": tag,
        "dockerfile": f"{DOCKERFILE.relative_to(REPO_ROOT)} --target {image.name}",
        "variant": image.variant or "",
        "base": base,
        "inputs": inputs,
        "uv_script": uv_script_hash(),
        "build_seconds": seconds,
        "built_at": _now(),
        **_describe(tag),
    }
    _save_record(image.name, record)
    if replaced is not None and not inspect(tag)["Id"].startswith(replaced):
        # The image this build replaced: gone unless something still uses it (a container).
        run_podman("rmi", replaced)
    log.info("Built %s in %.0f s (%.0f MB)", tag, seconds, record["size_mb"])
    return {**record, "reused": False}


def build_all(
    names: Iterable[str] | None = None, *, ca: str | None = None, force: bool = False
) -> dict[str, dict[str, Any]]:
    """Build (or reuse) the base and the named images (all by default), one build at a time
    (a lock in the cache serialises concurrent callers)."""
    wanted = list(names or IMAGES)
    unknown = sorted(set(wanted) - set(IMAGES))
    if unknown:
        raise ImageError(f"unknown images: {', '.join(unknown)} (known: {', '.join(IMAGES)})")
    ensure_tools()
    bundle = ca_bundle(ca)
    lock_path = cache_dir() / "images" / "build.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        base = build_base()
        if any(
            record.get("uv_script") != uv_script_hash()
            for name, record in load_records().items()
            if name in IMAGES
        ):
            drop_uv_layers()
        return {name: build_image(IMAGES[name], base, ca=bundle, force=force) for name in wanted}


def uv_script_hash() -> str:
    return hashlib.sha256(UV_SCRIPT.read_bytes()).hexdigest()[:16]


def drop_uv_layers() -> None:
    """Remove the project's images and every cached build layer made with another uv script.

    Podman (Buildah) does not count the content of a file a RUN step binds in its layer cache:
    after the script changed, layers made with the old one would be reused as they are. Without
    them every installing step runs again (once: the trainer and the server share the new
    torch layer again)."""
    tags = [image_tag(name) for name in IMAGES if image_exists(image_tag(name))]
    if tags:
        run_podman("rmi", *tags)
    dropped = 0
    while True:  # a layer goes once the layers made on top of it are gone
        listed = podman("images", "--all", "--format", "{{.ID}} {{.Repository}}").splitlines()
        untagged = [line.split()[0] for line in listed if line.endswith("<none>")]
        stale = [
            image
            for image in untagged
            if UV_SCRIPT.name
            in podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        ]
        removed = sum(run_podman("rmi", image).returncode == 0 for image in stale)
        dropped += removed
        if not removed:
            break
    log.info("The uv script changed: dropped the images and %d cached build layers", dropped)


def write_results(path: Path, built: dict[str, dict[str, Any]]) -> None:
    """The figures of bench/results/images.json: every image's size, layers and last build."""
    records = load_records()
    images = {name: {**records.get(name, {}), **built.get(name, {})} for name in IMAGES}
    for record in images.values():
        record.pop("reused", None)
        if record.get("tag") and image_exists(record["tag"]):
            record.update(_describe(record["tag"]))  # sizes and layers as they are now
    result = {
        "benchmark": "images",
        "date": _now()[:10],
        "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}, "
        + podman("--version").strip(),
        "note": (
            "build_seconds: the last build from scratch of each image on this machine (layers "
            "reused only from the images built before it in the same run; the trainer and "
            "server share their torch layer); the base is Debian bookworm from mmdebstrap."
        ),
        "base": records.get("base", {}),
        "images": images,
    }
    path.write_text(json.dumps(result, indent=2) + "\n")
