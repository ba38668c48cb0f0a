"""Training checkpoints in the artifact store, so a restarted training pod resumes instead of
starting over: each is uploaded when saved (its completion marker last), the newest complete
one is restored at start, and checkpoints another training run left are discarded.

    <store>/<ns>/<name>/rev-<revision>/checkpoints/run-id                the run they belong to
    <store>/<ns>/<name>/rev-<revision>/checkpoints/checkpoint-<step>/    files, then COMPLETE
"""

from __future__ import annotations

import logging
from pathlib import Path

from docmodel.artifacts import RevisionLayout
from docmodel.storage import NotFound, ObjectStore, download_tree

log = logging.getLogger("docmodel.trainer.checkpoints")

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
RUN_FILE = "run-id"  # the training run the checkpoints belong to


def checkpoint_prefix(layout: RevisionLayout) -> str:
    return f"{layout.root}/{CHECKPOINTS}"


def upload_checkpoint(store: ObjectStore, layout: RevisionLayout, local: Path, step: int) -> None:
    """Copy a checkpoint directory to the store; the completion marker goes last."""
    prefix = f"{checkpoint_prefix(layout)}/checkpoint-{step}"
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.upload_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")
    store.put_bytes(f"{prefix}/{COMPLETE}", b"")
    log.info("Saved checkpoint step=%d uri=%s/%s", step, store.uri, prefix)


def claim_checkpoints(store: ObjectStore, layout: RevisionLayout, run_id: str) -> None:
    """Make the revision's stored checkpoints this training run's (`run_id`: a digest of its
    rows, settings and base model). Checkpoints another run left (other data, settings or base
    model, such as a `--force` retrain with other flags) are deleted, never resumed from; then
    `run_id` is recorded."""
    prefix = checkpoint_prefix(layout)
    marker = f"{prefix}/{RUN_FILE}"
    try:
        recorded: str | None = store.get_bytes(marker).decode()
    except NotFound:
        recorded = None
    if recorded == run_id:
        return
    stale = [o.key for o in store.list(prefix) if o.key != marker]
    for key in stale:
        store.delete(key)
    if stale:
        log.info(
            "Discarded checkpoints objects=%d reason=another training run (data or settings "
            "differ) uri=%s/%s",
            len(stale),
            store.uri,
            prefix,
        )
    store.put_bytes(marker, run_id.encode())


def restore_checkpoint(store: ObjectStore, layout: RevisionLayout, output_dir: Path) -> Path | None:
    """Download the newest complete checkpoint of the revision into `output_dir`, if any."""
    prefix = checkpoint_prefix(layout)
    steps = sorted(
        {
            int(obj.key.split("/")[-2].removeprefix("checkpoint-"))
            for obj in store.list(prefix)
            if obj.key.endswith(f"/{COMPLETE}")
        }
    )
    if not steps:
        return None
    name = f"checkpoint-{steps[-1]}"
    local = output_dir / name
    download_tree(store, f"{prefix}/{name}", local)
    (local / COMPLETE).unlink(missing_ok=True)
    log.info("Restored checkpoint step=%d uri=%s/%s/%s", steps[-1], store.uri, prefix, name)
    return local
