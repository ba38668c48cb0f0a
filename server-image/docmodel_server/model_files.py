"""The files a server loads: a revision's LoRA adapter (`docmodel.artifacts.fetch_adapter`,
the same fetch and manifest rule training and evaluation use: an adapter without its manifest,
or with a file that does not match it, is refused) and, when mirrored, the base model."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from docmodel.artifacts import fetch_adapter as fetch_adapter  # the one rule: manifest required
from docmodel.storage import StorageError, download_tree, open_store

log = logging.getLogger("docmodel.server")


class FetchError(RuntimeError):
    """An artifact could not be fetched; the message names its URI."""


def _fresh(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    return dest


def fetch_base_model(mirror: str, dest: Path, endpoint: str | None = None) -> Path:
    """Download a mirror of the base model's files (config, tokenizer, safetensors), from the
    source's S3 `endpoint` with the source's credentials (the `AWS_*` variables)."""
    try:
        files = download_tree(open_store(mirror, endpoint=endpoint), "", _fresh(dest))
    except (StorageError, ValueError, OSError) as exc:
        raise FetchError(f"cannot fetch the base model mirror from {mirror}: {exc}") from None
    log.info("Fetched base model mirror=%s files=%d path=%s", mirror, len(files), dest)
    return dest
