"""Fine-tune a LoRA (CPU) or QLoRA (CUDA) adapter on the revision's QA dataset.

    docmodel-trainer train --docmodel dm.yaml --store ./artifacts --revision <rev>
    docmodel-trainer train --docmodel dm.yaml --store ./artifacts --revision <rev> \\
        --method lora --max-steps 30 --learning-rate 5e-3        # a quick CPU run

Reads   <store>/<ns>/<name>/rev-<rev>/dataset/   train.jsonl (the questions, in the chat
        template, loss on the answers), chunks.jsonl and rewrites.jsonl (every passage as plain
        text, loss on every token), eval.jsonl (only to check none of it is trained on); the
        order and mix are `trainset`'s
Writes  <store>/<ns>/<name>/rev-<rev>/adapter/   adapter_model.safetensors, adapter_config.json,
        tokenizer files, train_config.json (every resolved setting), metrics.json,
        training_data.json (the mix, and what the trainer's batches held), manifest.json;
        a retrieval candidate also writes its passage index (retrieval.json, passages.jsonl:
        `docmodel.retrieval`), which evaluation and the server retrieve from
        <store>/<ns>/<name>/rev-<rev>/checkpoints/   every --save-steps, for resuming

Settings come from the DocModel's spec.training; flags (or --config YAML) override them. A pod
that restarts resumes from the newest checkpoint in the workdir or, failing that, the store. An
adapter that already has a manifest is not trained again (unless --force).

Under torchrun (spec.training.distributed: a PyTorchJob or TrainJob, or local mode) every
process runs this command; the launcher's environment says which process it is
(`docmodel_trainer.distributed`). Each trains on its share of every batch (the global batch is
batch_size x gradient_accumulation_steps x world_size) with DDP, or FSDP on GPUs; rank 0 alone
logs and writes to the store, and the others wait for it and fail when it fails.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from docmodel.artifacts import (
    Manifest,
    RevisionLayout,
    publish_dir,
    read_manifest,
    software_versions,
)
from docmodel.dataset import CHUNKS, EVAL, REWRITES, TRAIN, Chunk, QAPair, Rewrite, read_jsonl
from docmodel.retrieval import RetrievalIndex, write_index
from docmodel_trainer import (
    checkpoints,
    distributed,
    fetch,
    modeling,
    passage_index,
    raft,
    sft,
    trainset,
)
from docmodel_trainer.common import (
    EXIT_BAD_INPUT,
    EXIT_NO_DATA,
    EXIT_OK,
    JobContext,
    JobError,
    add_job_arguments,
    job_context,
)
from docmodel_trainer.distributed import SINGLE, World

log = logging.getLogger("docmodel.trainer.train")

PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "bitsandbytes", "datasets")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    group = parser.add_argument_group("training (override spec.training)")
    group.add_argument("--method", choices=["qlora", "lora"])
    group.add_argument("--epochs", type=int, help="passes over the mixed training set")
    group.add_argument("--qa-first-epochs", type=int, help="passes over the questions alone first")
    group.add_argument(
        "--no-documents", action="store_true", help="train on the questions only, not the passages"
    )
    group.add_argument("--max-steps", type=int, default=-1, help="stop after N optimizer steps")
    group.add_argument("--learning-rate", type=float)
    group.add_argument("--batch-size", type=int)
    group.add_argument("--gradient-accumulation-steps", type=int)
    group.add_argument("--max-seq-length", type=int)
    group.add_argument("--no-packing", action="store_true", help="pad instead of packing")
    group.add_argument(
        "--gradient-checkpointing",
        choices=["auto", "on", "off"],
        default="auto",
        help="recompute activations in the backward pass (auto: on with CUDA, where memory is "
        "scarce; off on CPU, where it costs a third more time for memory a small model has)",
    )
    group.add_argument("--logging-steps", type=int, default=10, help="log progress every N steps")
    group.add_argument("--save-steps", type=int, default=200)
    group.add_argument("--seed", type=int)
    group.add_argument("--force", action="store_true", help="train even if the adapter exists")


def resolve_config(
    args: argparse.Namespace, ctx: JobContext, world: World | None = None
) -> sft.TrainConfig:
    """spec.training, overridden by flags; invalid combinations rejected here, before any work.
    `world`: the training processes (the launcher's environment by default)."""
    world = World.from_env() if world is None else world
    spec = ctx.docmodel.spec
    t = spec.training

    overrides = {
        "method": args.method,
        "epochs": args.epochs,
        "qa_first_epochs": args.qa_first_epochs,
        "learning_rate": args.learning_rate,
        "max_seq_length": args.max_seq_length,
        "batch_size": args.batch_size,
        "gradient_accumulation_steps": args.gradient_accumulation_steps,
        "train_on_documents": False if args.no_documents else None,
        "packing": False if args.no_packing else None,
    }
    cfg = sft.TrainConfig(
        base_model=spec.base_model.name,
        training=t.model_copy(update={k: v for k, v in overrides.items() if v is not None}),
        max_steps=args.max_steps,
        gradient_checkpointing=(
            args.gradient_checkpointing == "on"
            or (args.gradient_checkpointing == "auto" and modeling.has_cuda())
        ),
        seed=spec.dataset.seed if args.seed is None else args.seed,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
    )
    problems = []
    tc = cfg.training
    if tc.method == "qlora" and not modeling.has_cuda():
        problems.append(
            "method qlora needs a CUDA GPU (4-bit NF4 via bitsandbytes) and none is visible; "
            "use --method lora (or spec.training.method: lora) to train on CPU"
        )
    if world.distributed and tc.distributed.strategy == "FSDP" and not modeling.has_cuda():
        problems.append(distributed.FSDP_NEEDS_CUDA)
    if tc.epochs < 1:
        problems.append("epochs must be at least 1")
    if tc.qa_first_epochs < 0:
        problems.append("qa-first-epochs must not be negative")
    counts = {
        "batch_size": tc.batch_size,
        "gradient_accumulation_steps": tc.gradient_accumulation_steps,
        "logging_steps": cfg.logging_steps,
        "save_steps": cfg.save_steps,
    }
    problems += [f"{name} must be at least 1" for name, value in counts.items() if value < 1]
    if tc.max_seq_length < 16:
        problems.append("max_seq_length must be at least 16")
    if problems:
        raise JobError("; ".join(problems), "InvalidTrainingConfig", EXIT_BAD_INPUT)
    return cfg


# Settings a resumed run may change: how long it runs and how often it logs and saves.
RESUMABLE_SETTINGS = ("max_steps", "logging_steps", "save_steps")


def training_run_id(
    rows: list[dict[str, Any]], cfg: sft.TrainConfig, base_model: str, world_size: int = 1
) -> str:
    """What a checkpoint may be resumed by: the same rows (data, order, packing), the same
    settings (but for `RESUMABLE_SETTINGS`), the same base model and the same number of
    processes (which decides the global batch and each process's share of the rows)."""
    settings = {k: v for k, v in cfg.record().items() if k not in RESUMABLE_SETTINGS}
    digest = hashlib.sha256(json.dumps(rows, separators=(",", ":")).encode())
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(base_model.encode())
    if world_size != 1:
        digest.update(f"world_size={world_size}".encode())
    return digest.hexdigest()[:24]


def _claim_output_dir(output_dir: Path, run_id: str) -> None:
    """The workdir's checkpoints, like the store's: another run's are removed before
    training."""
    marker = output_dir / checkpoints.RUN_FILE
    owned = marker.is_file() and marker.read_text() == run_id
    if output_dir.exists() and not owned:
        shutil.rmtree(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text(run_id)


@dataclass(frozen=True)
class TrainingInputs:
    """The revision's dataset, as training reads it."""

    data_dir: Path
    digest: str  # of the dataset's manifest
    pairs: list[QAPair]
    chunks: list[Chunk]
    rewrites: list[Rewrite]
    eval_questions: list[str]  # only to check that none is trained on


@dataclass(frozen=True)
class RetrievalTraining:
    """A retrieval candidate's passage index and retrieval examples; none for a closed-book
    candidate."""

    index: RetrievalIndex | None
    vectors: np.ndarray | None
    contexts: list[raft.RaftContext]


@dataclass(frozen=True)
class PreparedTraining:
    """The trainer, ready to run, and what it runs on."""

    trainer: Any
    tokenizer: Any
    data: trainset.TrainingData
    resume: str | Path | None  # the checkpoint to resume from
    cuda: bool
    world: World = SINGLE


@dataclass(frozen=True)
class SavedAdapter:
    """The adapter's directory, with the figures its manifest records."""

    directory: Path
    metrics: dict[str, Any]
    mix: dict[str, Any]  # what the training data is made of (`TrainingData.mix`)
    seen: dict[str, Any]  # what the trainer's batches held (`TrainingData.seen_report`)


def run(args: argparse.Namespace) -> int:
    world = World.from_env()
    ctx = job_context(args)
    cfg = resolve_config(args, ctx, world)
    modeling.quiet_progress_bars()
    layout = ctx.layout()
    distributed.quiet_other_ranks(world)
    # Coordination may wait as long as the Job may run (a base model downloaded on one node).
    deadline = timedelta(seconds=ctx.docmodel.spec.training.active_deadline_seconds)
    distributed.start(world, cuda=modeling.has_cuda(), control_timeout=deadline)
    _check_world(ctx, world)
    if not args.force and distributed.on_main(world, lambda: _adapter_published(ctx, layout)):
        distributed.finish(world)
        return EXIT_OK
    inputs, retrieval, base_path = distributed.node_first(
        world, lambda: _read_inputs(ctx, layout, cfg, world)
    )
    prepared = prepare_training(ctx, layout, cfg, inputs, retrieval, base_path, world)
    result = train_adapter(prepared)
    sft.gather_records(prepared.trainer, world)  # every rank's share of the batches
    state = sft.adapter_state_dict(prepared.trainer)  # FSDP: gathered from every rank

    def write() -> None:  # rank 0 only; the others wait, and fail if it fails
        adapter_dir = ctx.workdir / "adapter"
        saved = save_adapter(adapter_dir, prepared, result, cfg, inputs, retrieval, state)
        publish_adapter(ctx, layout, cfg, inputs, saved)

    distributed.on_main(world, write)
    distributed.finish(world)
    return EXIT_OK


def _check_world(ctx: JobContext, world: World) -> None:
    """The launcher decides the processes; say so when the spec asked for another number."""
    asked = ctx.docmodel.spec.training.distributed
    if asked.world_size != world.size:
        log.warning(
            "Training with world_size=%d as launched; spec.training.distributed asks for "
            "%d node(s) x %d process(es)",
            world.size,
            asked.nodes,
            asked.processes_per_node,
        )


def _read_inputs(
    ctx: JobContext, layout: RevisionLayout, cfg: sft.TrainConfig, world: World
) -> tuple[TrainingInputs, RetrievalTraining, str]:
    """The dataset, a retrieval candidate's examples and the base model's location. Each of a
    node's processes downloads the dataset into a directory of its own."""
    name = "dataset" if world.is_local_main else f"dataset-{world.local_rank}"
    inputs = read_dataset(ctx, layout, ctx.workdir / name)
    retrieval = retrieval_training(ctx, layout, inputs, cfg)
    spec = ctx.docmodel.spec
    base_path = modeling.resolve_base_model(spec.base_model, ctx.workdir, spec.source.endpoint)
    return inputs, retrieval, base_path


def _adapter_published(ctx: JobContext, layout: RevisionLayout) -> bool:
    """Whether the revision's adapter is in the store already (then training is skipped)."""
    if read_manifest(ctx.store, layout, "adapter") is None:
        return False
    adapter_uri = layout.uri(ctx.store_uri, "adapter")
    log.info("Found adapter uri=%s; skipped training (use --force to retrain)", adapter_uri)
    return True


def read_dataset(
    ctx: JobContext, layout: RevisionLayout, dest: Path | None = None
) -> TrainingInputs:
    """Fetch the revision's dataset (into `dest`, the workdir's dataset/ by default) and read
    it; a dataset without training pairs is an error."""
    dest = ctx.workdir / "dataset" if dest is None else dest
    data_dir, _, dataset_digest = fetch.fetch_dataset(ctx.store, layout, dest)
    pairs = list(read_jsonl(data_dir / TRAIN, QAPair))
    if not pairs:
        raise JobError(
            f"dataset at {layout.uri(ctx.store_uri, 'dataset')} has no training pairs",
            "NoTrainingData",
            EXIT_NO_DATA,
        )
    chunks = list(read_jsonl(data_dir / CHUNKS, Chunk))
    rewrites_path = data_dir / REWRITES
    rewrites = list(read_jsonl(rewrites_path, Rewrite)) if rewrites_path.exists() else []
    eval_questions = [p.question for p in read_jsonl(data_dir / EVAL, QAPair)]
    return TrainingInputs(data_dir, dataset_digest, pairs, chunks, rewrites, eval_questions)


def retrieval_training(
    ctx: JobContext, layout: RevisionLayout, inputs: TrainingInputs, cfg: sft.TrainConfig
) -> RetrievalTraining:
    """For a retrieval candidate, the passage index it serves from and every training question
    with the passages the production retriever gives it (`raft`)."""
    spec = ctx.docmodel.spec
    candidate = spec.training.candidate
    if candidate.kind != "Retrieval":
        return RetrievalTraining(None, None, [])
    chunks = inputs.chunks
    where = layout.uri(ctx.store_uri, "dataset")
    passages, vectors = passage_index.read(inputs.data_dir, chunks, where)
    index = RetrievalIndex(
        retriever=spec.evaluation.baseline.retriever,
        top_k=spec.evaluation.baseline.top_k,
        passages=len(chunks),
        documents_not_trained=sorted({c.source for c in chunks if c.split == "untrained"}),
        embedding=passages.embedding,
    )
    # The distractors: the production retriever's own ranking over the passages training
    # may show (a retrieval candidate's untrained documents are left out).
    trainable = [i for i, c in enumerate(chunks) if c.split != "untrained"]
    contexts: list[raft.RaftContext] = []
    if trainable:
        retriever = passage_index.retriever(
            index.retriever, spec, ctx.workdir, chunks, passages, vectors, where, trainable
        )
        contexts = raft.build_contexts(
            inputs.pairs,
            retriever,
            top_k=index.top_k,
            gold_probability=candidate.gold_passage_probability,
            seed=cfg.seed,
        )
    log.info(
        "Built retrieval examples count=%d with_gold=%d gold_ranked_by_retriever=%d top_k=%d "
        "retriever=%s",
        len(contexts),
        sum(1 for c in contexts if c.gold_included),
        sum(1 for c in contexts if c.gold_retrieved),
        index.top_k,
        index.retriever,
    )
    return RetrievalTraining(index, vectors, contexts)


def prepare_training(
    ctx: JobContext,
    layout: RevisionLayout,
    cfg: sft.TrainConfig,
    inputs: TrainingInputs,
    retrieval: RetrievalTraining,
    base_path: str,
    world: World = SINGLE,
) -> PreparedTraining:
    """Load the base model and its tokenizer, lay out the training data (`trainset`), claim
    the checkpoints for this run and find the one to resume from.

    Every process lays out the same rows in the same order (same data, same seed); the
    trainer gives each its share of every batch."""
    spec = ctx.docmodel.spec
    tokenizer = modeling.load_tokenizer(base_path)
    data = training_data(tokenizer, cfg, inputs, retrieval)
    from datasets import Dataset

    train_dataset = Dataset.from_list(data.rows)
    fsdp = world.distributed and cfg.training.distributed.strategy == "FSDP"
    model = modeling.load_model(
        base_path, quantize_4bit=cfg.training.method == "qlora", world=world, fsdp=fsdp
    )
    cuda = modeling.has_cuda()

    output_dir = ctx.workdir / "output"
    run_id = training_run_id(data.rows, cfg, spec.base_model.name, world.size)
    # The workdir is the node's (its first process claims it), the store is everyone's (rank
    # 0 claims it); either way the others wait.
    distributed.together(
        world, lambda: _claim_output_dir(output_dir, run_id) if world.is_local_main else None
    )
    distributed.on_main(world, lambda: checkpoints.claim_checkpoints(ctx.store, layout, run_id))
    trainer = sft.build_trainer(
        model,
        tokenizer,
        train_dataset,
        cfg,
        output_dir,
        cuda=cuda,
        prepared=True,
        callbacks=[
            sft.CheckpointSync(
                lambda local, step: checkpoints.upload_checkpoint(ctx.store, layout, local, step),
                world,
            )
        ],
        world=world,
    )
    resume = _resume_from(ctx, layout, output_dir, world)
    batch, accumulation = cfg.training.batch_size, cfg.training.gradient_accumulation_steps
    log.info(
        "Started training revision=%s method=%s pairs=%d epochs=%s max_steps=%d resume=%s "
        "world_size=%d global_batch=%d",
        layout.revision,
        cfg.training.method,
        len(inputs.pairs),
        cfg.training.epochs,
        cfg.max_steps,
        resume or "none",
        world.size,
        world.global_batch(batch, accumulation),
    )
    if world.distributed:
        log.info(
            "Sharded batches strategy=%s global_batch=%d batch_size=%d "
            "gradient_accumulation_steps=%d world_size=%d",
            cfg.training.distributed.strategy,
            world.global_batch(batch, accumulation),
            batch,
            accumulation,
            world.size,
        )
    return PreparedTraining(trainer, tokenizer, data, resume, cuda, world)


def _resume_from(
    ctx: JobContext, layout: RevisionLayout, output_dir: Path, world: World
) -> str | Path | None:
    """The checkpoint to resume from: the newest in the workdir or, failing that, the store's
    newest (downloaded into the workdir).

    With several processes, the newest that every process can have: a complete one in its
    node's workdir (rank 0's node saves them) or in the store, which the node's first process
    then downloads."""
    from transformers.trainer_utils import get_last_checkpoint

    if not world.distributed:
        return (
            get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        ) or checkpoints.restore_checkpoint(ctx.store, layout, output_dir)
    local = {
        int(p.name.removeprefix("checkpoint-"))
        for p in output_dir.glob("checkpoint-*")
        if p.name.removeprefix("checkpoint-").isdigit() and (p / "trainer_state.json").is_file()
    }
    stored = distributed.together(world, lambda: set(checkpoints.stored_steps(ctx.store, layout)))
    reachable = distributed.all_gather(world, sorted(local | stored))
    common = set.intersection(*(set(steps) for steps in reachable))
    if not common:
        return None
    step = max(common)
    if step not in local:
        distributed.together(
            world,
            lambda: (
                checkpoints.restore_checkpoint(ctx.store, layout, output_dir, step)
                if world.is_local_main
                else None
            ),
        )
    return output_dir / f"checkpoint-{step}"


def training_data(
    tokenizer: Any, cfg: sft.TrainConfig, inputs: TrainingInputs, retrieval: RetrievalTraining
) -> trainset.TrainingData:
    """The rows the trainer reads, in order (`trainset.build`)."""
    data = trainset.build(
        tokenizer,
        inputs.pairs,
        inputs.chunks,
        inputs.rewrites,
        max_seq_length=cfg.training.max_seq_length,
        epochs=int(cfg.training.epochs),
        qa_first_epochs=cfg.training.qa_first_epochs,
        train_on_documents=cfg.training.train_on_documents,
        packing=cfg.training.packing,
        seed=cfg.seed,
        contexts=retrieval.contexts,
    )
    log.info(
        "Built training data rows=%d order=%s phases=%s passages_split=%d",
        len(data.rows),
        data.mix["order"],
        ",".join(f"{p['name']}x{p['passes']}:{p['examples_per_pass']}" for p in data.mix["phases"]),
        data.mix["passages_split_into_windows"],
    )
    return data


def train_adapter(prepared: PreparedTraining) -> Any:
    """Run the trainer, from the checkpoint to resume from if there is one; its result."""
    resume = prepared.resume
    return prepared.trainer.train(resume_from_checkpoint=str(resume) if resume else None)


def save_adapter(
    adapter_dir: Path,
    prepared: PreparedTraining,
    result: Any,
    cfg: sft.TrainConfig,
    inputs: TrainingInputs,
    retrieval: RetrievalTraining,
    state_dict: dict[str, Any] | None = None,
) -> SavedAdapter:
    """Write the trained adapter, its tokenizer, settings, metrics and the record of what it
    was trained on (and a retrieval candidate's passage index) to `adapter_dir`.
    `state_dict`: the model's, gathered from FSDP's shards (`sft.adapter_state_dict`)."""
    trainer, tokenizer = prepared.trainer, prepared.tokenizer
    if state_dict is None:
        trainer.model.save_pretrained(adapter_dir)
    else:
        model = trainer.accelerator.unwrap_model(trainer.model)
        model.save_pretrained(adapter_dir, state_dict=state_dict)
    tokenizer.save_pretrained(adapter_dir)
    metrics = training_metrics(trainer, result, cuda=prepared.cuda)
    world = prepared.world
    if world.distributed:
        metrics["world_size"] = world.size
        metrics["global_batch"] = world.global_batch(
            cfg.training.batch_size, cfg.training.gradient_accumulation_steps
        )
    seen = prepared.data.seen_report(trainer.seen, tokenizer, inputs.eval_questions)
    seen["resumed"] = prepared.resume is not None  # a resumed run saw only the later batches
    metrics.update(
        documents_trained_fraction=seen["documents_trained_fraction"],
        eval_questions_seen_in_training=seen["eval_questions_seen_in_training"],
    )
    (adapter_dir / "training_data.json").write_text(
        json.dumps({"mix": prepared.data.mix, "seen": seen}, indent=2) + "\n"
    )
    (adapter_dir / "train_config.json").write_text(json.dumps(cfg.record(), indent=2) + "\n")
    (adapter_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    if retrieval.index is not None:
        write_index(adapter_dir, retrieval.index, inputs.chunks, retrieval.vectors)
    return SavedAdapter(adapter_dir, metrics, prepared.data.mix, seen)


@distributed.main_only
def publish_adapter(
    ctx: JobContext,
    layout: RevisionLayout,
    cfg: sft.TrainConfig,
    inputs: TrainingInputs,
    saved: SavedAdapter,
) -> None:
    """Publish the saved adapter with its manifest (rank 0 only), the manifest last."""
    manifest = Manifest(
        kind="adapter",
        revision=layout.revision,
        inputs={"dataset": inputs.digest, "base_model": cfg.base_model},
        spec={"training": cfg.record()},
        versions=software_versions(PACKAGES),
        metrics=saved.metrics,
        details={
            "mix": saved.mix,
            "seen": saved.seen,
            "candidate": ctx.docmodel.spec.training.candidate.kind,
        },
    )
    uri = publish_dir(saved.directory, ctx.store, layout, manifest)
    log.info(
        "Published adapter uri=%s final_loss=%.4f tokens_per_s=%.0f documents_trained_fraction=%.3f "
        "eval_questions_seen_in_training=%d",
        uri,
        saved.metrics["final_loss"],
        saved.metrics["tokens_per_s"],
        saved.seen["documents_trained_fraction"],
        saved.seen["eval_questions_seen_in_training"],
    )


def training_metrics(trainer: Any, result: Any, *, cuda: bool) -> dict[str, Any]:
    counts: sft.TokenCounts = trainer.counts
    curve = trainer.progress.curve
    runtime = float(result.metrics.get("train_runtime", 0.0)) or 1e-9
    metrics: dict[str, Any] = {
        "steps": int(trainer.state.global_step),
        "initial_loss": curve[0][1] if curve else None,
        "final_loss": curve[-1][1] if curve else float(result.training_loss),
        "mean_loss": float(result.training_loss),
        "loss_curve": [{"step": s, "loss": v} for s, v in curve],
        "train_runtime_s": round(runtime, 3),
        "tokens": counts.tokens,
        "tokens_per_s": counts.tokens / runtime,
        "non_padding_fraction": counts.non_padding_fraction,
        "loss_token_fraction": counts.loss_token_fraction,
    }
    if cuda:
        import torch

        metrics["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return metrics
