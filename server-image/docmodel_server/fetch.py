"""Fetch what a revision serves: its LoRA adapter and, when mirrored, the base model."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from docmodel.artifacts import (
    MANIFEST,
    IntegrityError,
    Manifest,
    open_artifact_store,
    verify_files,
)
from docmodel.storage import StorageError, download_tree, open_store

log = logging.getLogger("docmodel.server")

ADAPTER_CONFIG = "adapter_config.json"


class FetchError(RuntimeError):
    """An artifact could not be fetched; the message names its URI."""


def _fresh(dest: Path) -> Path:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    return dest


def fetch_adapter(uri: str, dest: Path) -> Path:
    """Download the adapter at `uri` (artifact store URI or directory) into `dest`."""
    try:
        store = open_artifact_store(uri)
        files = download_tree(store, "", _fresh(dest))
    except (StorageError, ValueError, OSError) as exc:
        raise FetchError(f"cannot fetch the adapter from {uri}: {exc}") from None
    if not (dest / ADAPTER_CONFIG).is_file():
        raise FetchError(f"the adapter at {uri} has no {ADAPTER_CONFIG}; is it a PEFT adapter?")
    if (dest / MANIFEST).is_file():
        # Published adapters carry their manifest (written last, as the commit marker), with
        # every file's size and sha256: serve nothing that does not match it.
        try:
            manifest = Manifest.model_validate_json((dest / MANIFEST).read_bytes())
            verify_files(dest, manifest, uri)
        except (IntegrityError, ValueError) as exc:
            raise FetchError(f"the adapter at {uri} does not match its manifest: {exc}") from None
    else:
        log.warning(
            "Fetched adapter without a manifest uri=%s (not published by the trainer?)", uri
        )
    log.info("Fetched adapter uri=%s files=%d path=%s", uri, len(files), dest)
    return dest


def fetch_base_model(mirror: str, dest: Path) -> Path:
    """Download a mirror of the base model's files (config, tokenizer, safetensors)."""
    try:
        files = download_tree(open_store(mirror), "", _fresh(dest))
    except (StorageError, ValueError, OSError) as exc:
        raise FetchError(f"cannot fetch the base model mirror from {mirror}: {exc}") from None
    log.info("Fetched base model mirror=%s files=%d path=%s", mirror, len(files), dest)
    return dest


def adapter_rank(adapter_dir: Path) -> int:
    """The LoRA rank `r` the adapter was trained with (the largest, if ranks vary by layer)."""
    config = json.loads((adapter_dir / ADAPTER_CONFIG).read_text())
    ranks = [
        int(config.get("r", 8)),
        *(int(v) for v in (config.get("rank_pattern") or {}).values()),
    ]
    return max(ranks)
