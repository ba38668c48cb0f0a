"""Training checkpoints in the artifact store, so a restarted training pod resumes instead of
starting over: each is uploaded when saved (its completion marker last), the newest complete
one is restored at start, and checkpoints another training run left are discarded.

Only rank 0 of a distributed run writes here (`upload_checkpoint` and `claim_checkpoints` do
nothing on the other ranks); any rank may read.

    <store>/<ns>/<name>/rev-<revision>/checkpoints/run-id                the run they belong to
    <store>/<ns>/<name>/rev-<revision>/checkpoints/checkpoint-<step>/    files, then COMPLETE
"""

from __future__ import annotations

import logging
from pathlib import Path

from docmodel.artifacts import RevisionLayout
from docmodel.storage import NotFound, ObjectStore, download_tree
from docmodel_trainer.distributed import main_only

log = logging.getLogger("docmodel.trainer.checkpoints")

CHECKPOINTS = "checkpoints"
COMPLETE = "COMPLETE"
RUN_FILE = "run-id"  # the training run the checkpoints belong to


def checkpoint_prefix(layout: RevisionLayout) -> str:
    return f"{layout.root}/{CHECKPOINTS}"


@main_only
def upload_checkpoint(store: ObjectStore, layout: RevisionLayout, local: Path, step: int) -> None:
    """Copy a checkpoint directory to the store; the completion marker goes last."""
    prefix = f"{checkpoint_prefix(layout)}/checkpoint-{step}"
    for path in sorted(p for p in local.rglob("*") if p.is_file()):
        store.upload_file(path, f"{prefix}/{path.relative_to(local).as_posix()}")
    store.put_bytes(f"{prefix}/{COMPLETE}", b"")
    log.info("Saved checkpoint step=%d uri=%s/%s", step, store.uri, prefix)


@main_only
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


def stored_steps(store: ObjectStore, layout: RevisionLayout) -> list[int]:
    """The steps of the revision's complete checkpoints in the store, in order."""
    return sorted(
        {
            int(obj.key.split("/")[-2].removeprefix("checkpoint-"))
            for obj in store.list(checkpoint_prefix(layout))
            if obj.key.endswith(f"/{COMPLETE}")
        }
    )


def restore_checkpoint(
    store: ObjectStore, layout: RevisionLayout, output_dir: Path, step: int | None = None
) -> Path | None:
    """Download the newest complete checkpoint of the revision (or the one of `step`) into
    `output_dir`, if any."""
    prefix = checkpoint_prefix(layout)
    steps = stored_steps(store, layout) if step is None else [step]
    if not steps:
        return None
    name = f"checkpoint-{steps[-1]}"
    local = output_dir / name
    download_tree(store, f"{prefix}/{name}", local)
    (local / COMPLETE).unlink(missing_ok=True)
    log.info("Restored checkpoint step=%d uri=%s/%s/%s", steps[-1], store.uri, prefix, name)
    return local
