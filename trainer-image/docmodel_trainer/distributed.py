"""Training over several processes: `docmodel-trainer train` as torchrun starts it (Kubeflow's
PyTorchJob or TrainJob, local mode's torchrun).

    torchrun --nnodes=N --nproc-per-node=P --no-python docmodel-trainer train --store ... \\
        --revision ... --workdir ...

The launcher's environment is all the trainer needs: RANK, LOCAL_RANK, WORLD_SIZE and
LOCAL_WORLD_SIZE (with MASTER_ADDR and MASTER_PORT for the rendezvous). Without them, or with
WORLD_SIZE=1, training is one process, exactly as it always was.

- Each process trains on its own device: `cuda:LOCAL_RANK` (NCCL), or the CPU (gloo), the
  node's cores shared out among its processes.
- Every rank builds the same rows in the same order (the same data and seed); the trainer's
  sampler gives each rank its share of every batch, so the global batch is
  batch_size x gradient_accumulation_steps x world_size.
- Rank 0 alone writes to the artifact store (checkpoints, the adapter and its manifest); the
  others wait until it is done and fail when it fails (`on_main`), so every process's exit
  code says whether the adapter was published.
- A node's processes share its workdir: downloads and conversions into it (the base model,
  the embedding model) are done by the node's first process while the others wait
  (`node_first`).
- Coordination (what rank 0 decided, which rank failed) travels over a gloo group of its own
  whose timeout is the training Job's deadline, so a long download on one node does not time
  the others out; the training's own collectives use the default group (NCCL on GPUs) with
  the Trainer's usual timeout.
- `strategy: FSDP` shards the base model's weights over the GPUs (`fsdp_config`); it needs
  CUDA.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar, cast

from docmodel.modelfacts import usable_cpus
from docmodel.storage import StorageError
from docmodel_trainer.common import (
    EXIT_BAD_INPUT,
    EXIT_STORAGE,
    EXIT_UNEXPECTED,
    JobError,
)

log = logging.getLogger("docmodel.trainer.distributed")

P = ParamSpec("P")
T = TypeVar("T")

# The training's own collectives (gradients, the logged loss): the Trainer's default timeout.
TRAINING_TIMEOUT = timedelta(seconds=1800)

FSDP_NEEDS_CUDA = (
    "FSDP training needs CUDA GPUs: it shards the base model's weights over the GPUs (QLoRA's "
    "4-bit layers through bitsandbytes), and none is visible; use strategy DDP to train on CPU"
)


@dataclass(frozen=True)
class World:
    """This process's place among the training processes, as the launcher's environment
    gives it; the default is the one process of a plain Job."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    local_size: int = 1

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in `env` (this process's environment by default):
        RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE. No WORLD_SIZE: one process."""
        env = os.environ if env is None else env
        if not env.get("WORLD_SIZE"):
            return cls()

        def number(name: str, default: int | None = None) -> int:
            raw = env.get(name)
            if raw is None or raw == "":
                if default is None:
                    raise JobError(
                        f"WORLD_SIZE={env['WORLD_SIZE']} is set but {name} is not: start "
                        "distributed training with torchrun (or a launcher that sets RANK, "
                        "LOCAL_RANK, WORLD_SIZE and LOCAL_WORLD_SIZE)",
                        "BadEnv",
                        EXIT_BAD_INPUT,
                    )
                return default
            try:
                return int(raw)
            except ValueError:
                raise JobError(
                    f"{name}={raw!r} is not a whole number", "BadEnv", EXIT_BAD_INPUT
                ) from None

        size = number("WORLD_SIZE")
        single = 0 if size == 1 else None
        rank = number("RANK", single)
        local_rank = number("LOCAL_RANK", single)
        local_size = number("LOCAL_WORLD_SIZE", size)
        world = cls(rank=rank, local_rank=local_rank, size=size, local_size=local_size)
        if not (
            size >= 1
            and 0 <= rank < size
            and 1 <= local_size <= size
            and 0 <= local_rank < local_size
        ):
            raise JobError(
                f"inconsistent launcher environment: RANK={rank} LOCAL_RANK={local_rank} "
                f"WORLD_SIZE={size} LOCAL_WORLD_SIZE={local_size}",
                "BadEnv",
                EXIT_BAD_INPUT,
            )
        return world

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs and writes to the artifact store."""
        return self.rank == 0

    @property
    def is_local_main(self) -> bool:
        """The first process of its node: the one that writes to the node's workdir first."""
        return self.local_rank == 0

    @property
    def nodes(self) -> int:
        return -(-self.size // self.local_size)

    def backend(self, cuda: bool) -> str:
        """The training's collectives: NCCL between GPUs, gloo between CPUs."""
        return "nccl" if cuda else "gloo"

    def device(self, cuda: bool) -> str:
        return f"cuda:{self.local_rank}" if cuda else "cpu"

    def cpu_threads(self, cpus: int) -> int:
        """Torch threads of each process when the node's `cpus` are shared by its processes."""
        return max(1, cpus // self.local_size)

    def global_batch(self, batch_size: int, accumulation_steps: int) -> int:
        """Rows per optimizer step, all processes together."""
        return batch_size * accumulation_steps * self.size


SINGLE = World()


def main_only(fn: Callable[P, None]) -> Callable[P, None]:
    """`fn` runs on rank 0 of the launcher's environment only; on any other rank the call does
    nothing. For the writes to the artifact store: one process writes, whoever calls."""

    @functools.wraps(fn)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        if World.from_env().is_main:
            fn(*args, **kwargs)

    return guarded


# ----------------------------------------------------------------------------------------------
# The process group
# ----------------------------------------------------------------------------------------------

_control: Any = None  # the gloo group coordination travels over


def start(world: World, *, cuda: bool, control_timeout: timedelta) -> None:
    """Join the training's process group (from the launcher's environment) on this process's
    device, and the coordination group; nothing for one process."""
    if not world.distributed:
        return
    import torch
    import torch.distributed as dist

    global _control
    if cuda:
        visible = torch.cuda.device_count()
        if world.local_rank >= visible:
            raise JobError(
                f"process {world.local_rank} of this node has no GPU of its own: "
                f"{world.local_size} processes per node, {visible} GPU(s) visible; set "
                "processesPerNode to the GPUs each pod asks for",
                "NotEnoughGpus",
                EXIT_BAD_INPUT,
            )
        torch.cuda.set_device(world.local_rank)
    else:
        # Each process's share of the cores this pod may use (`modeling.load_model` sizes
        # torch's pool so). torchrun sets 1 only for several processes per node; unset,
        # accelerate would size the pool to the machine's cores, whatever the pod's limit.
        os.environ.setdefault("OMP_NUM_THREADS", str(world.cpu_threads(usable_cpus())))
    if not dist.is_initialized():
        dist.init_process_group(backend=world.backend(cuda), timeout=TRAINING_TIMEOUT)
    _control = dist.new_group(backend="gloo", timeout=control_timeout)
    log.info(
        "Joined process group backend=%s world_size=%d nodes=%d processes_per_node=%d device=%s",
        world.backend(cuda),
        world.size,
        world.nodes,
        world.local_size,
        world.device(cuda),
    )


def finish(world: World) -> None:
    """Leave the process group (after the last collective of a run that succeeded)."""
    global _control
    if not world.distributed:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
    _control = None


def quiet_other_ranks(world: World) -> None:
    """Logs and progress come from rank 0 once; the other ranks print only errors."""
    if world.is_main:
        return
    logging.getLogger().setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    datasets.utils.logging.set_verbosity_error()


def barrier(world: World) -> None:
    if not world.distributed:
        return
    import torch.distributed as dist

    dist.barrier(group=_control)


def all_gather(world: World, value: T) -> list[T]:
    """Every rank's `value` (picklable), in rank order, on every rank."""
    if not world.distributed:
        return [value]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, value, group=_control)
    return cast(list[T], out)


def broadcast(world: World, value: T) -> T:
    """Rank 0's `value` on every rank."""
    if not world.distributed:
        return value
    import torch.distributed as dist

    box: list[Any] = [value]
    dist.broadcast_object_list(box, src=0, group=_control)
    return cast(T, box[0])


# ----------------------------------------------------------------------------------------------
# Failing together
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """Why a rank failed, as the others report it: its message, reason and exit code."""

    rank: int
    message: str
    reason: str
    exit_code: int

    @classmethod
    def of(cls, rank: int, exc: BaseException) -> Failure:
        if isinstance(exc, JobError):
            return cls(rank, str(exc), exc.reason, exc.exit_code)
        if isinstance(exc, StorageError):
            return cls(rank, str(exc), exc.reason, EXIT_STORAGE)
        return cls(rank, f"{type(exc).__name__}: {exc}", "Failed", EXIT_UNEXPECTED)

    def error(self) -> JobError:
        return JobError(f"rank {self.rank} failed: {self.message}", self.reason, self.exit_code)


def _settle(world: World, error: BaseException | None) -> None:
    """Every rank learns whether any rank failed. A rank that failed raises its own error;
    the others raise the first failure's (same reason and exit code)."""
    if world.distributed:
        mine = Failure.of(world.rank, error) if error is not None else None
        failures = [f for f in all_gather(world, mine) if f is not None]
        if error is None and failures:
            raise failures[0].error()
    if error is not None:
        raise error


def together(world: World, fn: Callable[[], T]) -> T:
    """`fn` on every rank; if it fails on any rank, it fails on all of them."""
    try:
        result = fn()
    except Exception as exc:
        _settle(world, exc)
        raise  # _settle raised already
    _settle(world, None)
    return result


def node_first(world: World, fn: Callable[[], T]) -> T:
    """`fn` on the first process of every node, then, once all of those succeeded, on the
    other processes: what the first one downloads or converts into the node's workdir, the
    others find there. A failure anywhere fails every rank."""
    if not world.distributed:
        return fn()
    if world.is_local_main:
        result = together(world, fn)
        _settle(world, None)  # the others' turn
        return result
    _settle(world, None)  # wait for the first processes
    return together(world, fn)


def on_main(world: World, fn: Callable[[], T]) -> T:
    """`fn` on rank 0 only; its result on every rank, which wait until it is done. When it
    fails on rank 0, every rank fails with its reason and exit code."""
    if not world.distributed:
        return fn()
    if world.is_main:
        try:
            value = fn()
        except Exception as exc:
            broadcast(world, (False, Failure.of(world.rank, exc)))
            raise
        broadcast(world, (True, value))
        return value
    done, outcome = broadcast(world, cast(tuple[bool, Any], (False, None)))
    if not done:
        raise cast(Failure, outcome).error()
    return cast(T, outcome)


# ----------------------------------------------------------------------------------------------
# The Trainer's settings
# ----------------------------------------------------------------------------------------------


def fsdp_config(layer_classes: Sequence[str], *, activation_checkpointing: bool) -> dict[str, Any]:
    """Transformers' `fsdp_config` for QLoRA (or LoRA) over FSDP, as the peft and bitsandbytes
    FSDP-QLoRA guides set it up, in FSDP2 (the Trainer's FSDP; FSDP1 is deprecated):

    - every decoder layer (`layer_classes`, e.g. LlamaDecoderLayer) is its own shard unit;
    - the 4-bit weights are stored in bf16 (`bnb_4bit_quant_storage`, `modeling.load_model`),
      the dtype of everything around them, so FSDP shards them with the rest;
    - `cpu_ram_efficient_loading`: only the first process reads the weights into memory, the
      others start empty and receive them as the model is sharded (FSDP1's
      `sync_module_states`); accelerate loads a 4-bit base on every GPU before sharding it,
      as quantized layers cannot start empty. FSDP2 always trains the original parameters
      (FSDP1's `use_orig_params`), which LoRA's frozen and trained parameters in one unit need;
    - the full state dict on save, so the adapter rank 0 writes loads as any other;
    - FSDP's own activation checkpointing instead of the Trainer's, which would gather every
      layer's weights a second time in the backward pass.
    """
    config: dict[str, Any] = {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "reshard_after_forward": True,
        "cpu_ram_efficient_loading": True,
        "state_dict_type": "FULL_STATE_DICT",
        "activation_checkpointing": activation_checkpointing,
    }
    if layer_classes:
        config["transformer_layer_cls_to_wrap"] = list(layer_classes)
    return config


def trainer_arguments(
    world: World,
    *,
    cuda: bool,
    strategy: str,
    gradient_checkpointing: bool,
    layer_classes: Sequence[str] = (),
) -> dict[str, Any]:
    """The Trainer's settings for `world` (none for one process): the backend, replicas that
    log only errors, and DDP (LoRA: every trained parameter has a gradient every step, so no
    search for unused ones) or FSDP (`fsdp_config`; CUDA only)."""
    if not world.distributed:
        return {}
    if strategy == "FSDP" and not cuda:
        raise JobError(FSDP_NEEDS_CUDA, "FsdpNeedsGpu", EXIT_BAD_INPUT)
    args: dict[str, Any] = {
        "ddp_backend": world.backend(cuda),
        "ddp_timeout": int(TRAINING_TIMEOUT.total_seconds()),
        "log_level_replica": "error",
        "log_on_each_node": False,
    }
    if strategy == "FSDP":
        args["fsdp"] = True
        args["fsdp_config"] = fsdp_config(
            layer_classes, activation_checkpointing=gradient_checkpointing
        )
        args["activation_checkpointing"] = False  # FSDP's own, above
        args["activation_checkpointing_kwargs"] = None
    else:
        args["ddp_find_unused_parameters"] = False
    return args


def decoder_layer_classes(model: Any) -> list[str]:
    """The class names of a transformers model's decoder layers (what FSDP wraps)."""
    return [str(name) for name in getattr(model, "_no_split_modules", None) or []]
