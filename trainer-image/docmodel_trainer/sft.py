"""The supervised fine-tuning loop: TRL's SFTTrainer with LoRA, and the callbacks around it.

Shared by `docmodel-trainer train` and `bench/train_throughput.py`, so the benchmark measures
the code that trains real adapters.

How the batch is built (why it is fast and trains on no padding):
- Examples are packed best-fit-decreasing into rows of `max_seq_length` (TRL's `bfd`), which
  turns on padding-free batches: the rows of a batch are flattened into one sequence with
  per-example `position_ids` and `cu_seq_lens`. FlashAttention 2 runs it as varlen attention;
  SDPA gets a block-diagonal mask from the position ids. Either way no token attends across
  examples and no padding token is computed.
- `train` hands over `prepared` rows (`trainset.build`: tokenized, labelled, packed per pass
  and in order; loss on answers for questions, on every token for passages) and the trainer
  reads them in order. Given conversations instead (the throughput benchmark), TRL tokenizes
  and packs them, and the chat template's `{% generation %}` markers give the answer-only
  loss (`assistant_only_loss`).
- TRL's fused LM head computes log-probs in chunks, so the 128k-vocabulary logits are never
  materialised; gradient checkpointing keeps activations small.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pydantic.alias_generators import to_camel
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from docmodel.api import TrainingSpec
from docmodel.digests import TRAINING_FIELDS
from docmodel_trainer import (
    distributed,
    modeling,  # before peft loads: quiets bitsandbytes on CPU
    trainset,
)
from docmodel_trainer.distributed import SINGLE, World

log = logging.getLogger("docmodel.trainer.sft")


@dataclass(frozen=True)
class TrainConfig:
    """One training run: `training` is the spec's training section with the command line's
    overrides applied (a typed copy of `TrainingSpec`, never re-declared); the other fields are
    the run's own settings, which the spec does not hold."""

    base_model: str
    training: TrainingSpec = field(default_factory=TrainingSpec)
    max_steps: int = -1
    warmup_ratio: float = 0.03
    gradient_checkpointing: bool = True
    seed: int = 1234
    logging_steps: int = 10
    save_steps: int = 200

    def record(self) -> dict[str, Any]:
        """Every setting that shapes the adapter, as `train_config.json` and the adapter's
        manifest record it: the run's own and the training fields that change what is trained
        (`TRAINING_FIELDS`; not the pod's resources or scheduling)."""
        run = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "training"}
        trained = self.training.model_dump(mode="json")
        return {**run, **{k: v for k, v in trained.items() if to_camel(k) in TRAINED}}


TRAINED = frozenset(TRAINING_FIELDS["training"])


@dataclass
class TokenCounts:
    """Positions the model computed, real (non-padding) tokens among them, and loss tokens."""

    positions: int = 0
    tokens: int = 0
    loss_tokens: int = 0

    @property
    def non_padding_fraction(self) -> float:
        return self.tokens / self.positions if self.positions else 0.0

    @property
    def loss_token_fraction(self) -> float:
        return self.loss_tokens / self.tokens if self.tokens else 0.0


def sft_config(
    cfg: TrainConfig,
    output_dir: Path,
    *,
    cuda: bool,
    assistant_only_loss: bool,
    prepared: bool = False,
    world: World = SINGLE,
    layer_classes: list[str] | None = None,
) -> Any:
    """`prepared`: the dataset holds tokenized rows with labels, packed and ordered already
    (`trainset.build`); TRL neither prepares nor shuffles it, and the rows are read in order.

    `world`: the training processes (`distributed.trainer_arguments`: the backend, DDP or FSDP
    by `cfg.training.distributed.strategy`; `layer_classes`, the decoder layers FSDP wraps).
    Each process reads its share of every batch, in the same order as one process would."""
    from trl import SFTConfig

    extra: dict[str, Any] = {}
    if prepared:
        extra = {
            "dataset_kwargs": {"skip_prepare_dataset": True},
            "train_sampling_strategy": "sequential",
            "padding_free": cfg.training.packing,
        }
    if cfg.gradient_checkpointing:
        # Non-reentrant (transformers' default, stated): with the reentrant kind each layer is
        # recomputed in a nested backward pass, where DDP sees its parameters ready twice.
        extra["activation_checkpointing"] = True
        extra["activation_checkpointing_kwargs"] = {"use_reentrant": False}
    else:
        extra["activation_checkpointing"] = False
    extra.update(
        distributed.trainer_arguments(
            world,
            cuda=cuda,
            strategy=cfg.training.distributed.strategy,
            gradient_checkpointing=cfg.gradient_checkpointing,
            layer_classes=layer_classes or [],
        )
    )
    return SFTConfig(
        output_dir=str(output_dir),
        num_train_epochs=1 if prepared else cfg.training.epochs,  # prepared rows hold every pass
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.training.batch_size,
        gradient_accumulation_steps=cfg.training.gradient_accumulation_steps,
        learning_rate=cfg.training.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=cfg.warmup_ratio,
        max_length=cfg.training.max_seq_length,
        packing=cfg.training.packing,
        packing_strategy="bfd",
        assistant_only_loss=assistant_only_loss and not prepared,
        bf16=cuda,
        use_cpu=not cuda,
        optim="adamw_torch_fused" if cuda else "adamw_torch",
        logging_steps=cfg.logging_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=1,
        seed=cfg.seed,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=cuda,
        **extra,
    )


def lora_config(cfg: TrainConfig) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.training.lora.r,
        lora_alpha=cfg.training.lora.alpha,
        lora_dropout=cfg.training.lora.dropout,
        target_modules=list(cfg.training.lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def build_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    cfg: TrainConfig,
    output_dir: Path,
    *,
    cuda: bool,
    assistant_only_loss: bool = True,
    prepared: bool = False,
    callbacks: list[TrainerCallback] | None = None,
    world: World = SINGLE,
) -> Any:
    """An SFTTrainer that wraps `model` in a LoRA adapter and counts the tokens it trains on;
    `trainer.seen` records every example it computed (see `trainset.Seen`). With several
    processes (`world`) each counts and records its own share (`gather_records` sums them)."""
    from trl import SFTTrainer

    class CountingSFTTrainer(SFTTrainer):
        """Counts computed positions, real tokens and loss tokens of every training micro-batch."""

        counts: TokenCounts
        seen: trainset.Seen
        progress: ProgressLogger

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # type: ignore[no-untyped-def]
            if model.training:
                ids = inputs["input_ids"]
                self.counts.positions += ids.numel()
                mask = inputs.get("attention_mask")
                self.seen.add_batch(ids, inputs.get("position_ids"), mask)
                # Padding-free batches carry no attention mask: every position is a real token.
                self.counts.tokens += int(mask.sum()) if mask is not None else ids.numel()
                self.counts.loss_tokens += int((inputs["labels"] != -100).sum())
                if not return_outputs:
                    loss = answer_only_loss(model, inputs, num_items_in_batch)
                    if (
                        num_items_in_batch is not None
                        and self.args.average_tokens_across_devices
                        and self.accelerator.num_processes > 1
                    ):
                        # As Trainer.compute_loss does: `num_items_in_batch` counts the labels
                        # of every process's batches, and DDP/FSDP average the gradients over
                        # the processes, so each process's sum is scaled back up.
                        loss = loss * self.accelerator.num_processes
                    return loss
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    counts = TokenCounts()
    progress = ProgressLogger(counts, processes=world.size)
    args = sft_config(
        cfg,
        output_dir,
        cuda=cuda,
        assistant_only_loss=assistant_only_loss,
        prepared=prepared,
        world=world,
        layer_classes=distributed.decoder_layer_classes(model),
    )
    with modeling.peft_compat():
        trainer = CountingSFTTrainer(
            model=model,
            args=args,
            train_dataset=train_dataset,
            processing_class=tokenizer,
            peft_config=lora_config(cfg),
            callbacks=[progress, *(callbacks or [])],
        )
    # The log lines come from ProgressLogger; Trainer's own printer would repeat them as dicts.
    trainer.remove_callback(PrinterCallback)
    trainer.counts = counts
    trainer.seen = trainset.Seen()
    trainer.progress = progress
    return trainer


def gather_records(trainer: Any, world: World) -> None:
    """Sum every process's token counts and union the examples each computed into
    `trainer.counts` and `trainer.seen` (a collective: every rank calls it after training);
    each process counted only its own share of the batches. Nothing for one process."""
    if not world.distributed:
        return
    counts: TokenCounts = trainer.counts
    mine = (counts.positions, counts.tokens, counts.loss_tokens, sorted(trainer.seen.digests))
    parts = distributed.all_gather(world, mine)
    counts.positions = sum(p[0] for p in parts)
    counts.tokens = sum(p[1] for p in parts)
    counts.loss_tokens = sum(p[2] for p in parts)
    trainer.seen.digests = set().union(*(p[3] for p in parts))


def adapter_state_dict(trainer: Any) -> dict[str, Any] | None:
    """Under FSDP, the trained model's full state dict gathered from its shards (a collective:
    every rank calls it; rank 0 gets the tensors), for `save_pretrained`; None otherwise, where
    each process holds the whole adapter."""
    if not getattr(trainer, "is_fsdp_enabled", False):
        return None
    return dict(trainer.accelerator.get_state_dict(trainer.model))


def answer_only_loss(model: Any, inputs: dict[str, Any], num_items_in_batch: Any = None) -> Any:
    """Next-token cross-entropy computed from the logits of the positions that have a label
    only (`logits_to_keep`). A question's prompt and its passages carry no loss, so the LM head
    (a 49k-word vocabulary is a fifth of a small model's forward pass) and the softmax run on
    the answer tokens alone instead of every position; the loss is the same number. Summed over
    the labels and divided by the labels in the whole accumulated batch, as Trainer expects
    when it passes `num_items_in_batch`; the mean otherwise."""
    import torch

    labels = inputs["labels"]
    targets = labels[:, 1:]
    keep = (targets != -100).any(dim=0).nonzero().squeeze(-1)  # positions that predict a label
    forward = {k: v for k, v in inputs.items() if k != "labels"}
    outputs = model(**forward, logits_to_keep=keep, use_cache=False)
    logits = outputs.logits.float()
    picked = targets[:, keep]
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), picked.reshape(-1), ignore_index=-100, reduction="sum"
    )
    if num_items_in_batch is None:
        return loss / (picked != -100).sum().clamp(min=1)
    return loss / num_items_in_batch


class ProgressLogger(TrainerCallback):
    """Logs `Trained step=10/120 loss=2.3141 tokens_per_s=1234 eta_s=40` every logging step
    and keeps the curve; between them, a `Training step=...` line at least every
    `heartbeat_s` seconds, so a slow run (a CPU) never looks stuck.

    With several processes only rank 0 prints (the others log errors only): the loss is the
    Trainer's, averaged over the processes; tokens_per_s is rank 0's rate times `processes`
    (each process computes the same number of packed rows per step); metrics.json has the
    exact sum (`gather_records`)."""

    def __init__(self, counts: TokenCounts, heartbeat_s: float = 30.0, processes: int = 1):
        self.counts = counts
        self.processes = processes
        self.curve: list[tuple[int, float]] = []
        self.heartbeat_s = heartbeat_s
        self._start = time.monotonic()
        self._last_line = self._start
        self._start_step = 0
        self._start_tokens = 0

    def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        self._start, self._start_step = time.monotonic(), state.global_step
        self._last_line = self._start
        self._start_tokens = self.counts.tokens

    def _rates(self, state: Any) -> tuple[float, float]:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        done = max(state.global_step - self._start_step, 1)
        eta = elapsed / done * max(state.max_steps - state.global_step, 0)
        return (self.counts.tokens - self._start_tokens) * self.processes / elapsed, eta

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if time.monotonic() - self._last_line < self.heartbeat_s:
            return
        rate, eta = self._rates(state)
        log.info(
            "Training step=%d/%d tokens_per_s=%.0f eta_s=%.0f",
            state.global_step,
            state.max_steps,
            rate,
            eta,
        )
        self._last_line = time.monotonic()

    def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
        if not logs or "loss" not in logs:
            return
        loss = float(logs["loss"])
        self.curve.append((state.global_step, loss))
        rate, eta = self._rates(state)
        log.info(
            "Trained step=%d/%d loss=%.4f tokens_per_s=%.0f eta_s=%.0f",
            state.global_step,
            state.max_steps,
            loss,
            rate,
            eta,
        )
        self._last_line = time.monotonic()


class CheckpointSync(TrainerCallback):
    """Copies each saved checkpoint to the artifact store, so a restarted pod can resume.

    `upload(local_dir, step)` does the copy; it writes a completion marker last, and only rank
    0 writes (`checkpoints.upload_checkpoint`). With several processes (`world`) every rank
    first waits until all have written their share of the checkpoint (their RNG states)."""

    def __init__(self, upload: Callable[[Path, int], None], world: World = SINGLE):
        self.upload = upload
        self.world = world

    def on_save(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        distributed.barrier(self.world)
        checkpoint = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if checkpoint.is_dir():
            self.upload(checkpoint, state.global_step)
