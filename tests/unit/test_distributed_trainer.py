"""The pure pieces of distributed training (`docmodel_trainer.distributed`): which process this
is, from the launcher's environment; the Trainer's DDP and FSDP settings (FSDP's built and
checked against transformers' and accelerate's own processing, without a GPU); the model's
loading options; the guards that keep every rank but 0 from writing to the store."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch

from docmodel.api import parse_docmodel
from docmodel.artifacts import RevisionLayout
from docmodel.storage import LocalStore, StorageError
from docmodel_trainer import checkpoints, distributed, modeling, train
from docmodel_trainer.common import (
    EXIT_BAD_INPUT,
    EXIT_STORAGE,
    EXIT_UNEXPECTED,
    JobContext,
    JobError,
)
from docmodel_trainer.distributed import SINGLE, Failure, World
from docmodel_trainer.sft import TrainConfig

LAYOUT = RevisionLayout("ns", "dm", "abc123")


def torchrun_env(rank: int, local_rank: int, size: int, local_size: int) -> dict[str, str]:
    return {
        "RANK": str(rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(size),
        "LOCAL_WORLD_SIZE": str(local_size),
        "MASTER_ADDR": "10.0.0.1",
        "MASTER_PORT": "29500",
    }


def test_no_launcher_is_one_process() -> None:
    assert World.from_env({}) == SINGLE
    assert World.from_env({"WORLD_SIZE": "1"}) == SINGLE
    assert not SINGLE.distributed and SINGLE.is_main and SINGLE.is_local_main
    assert SINGLE.global_batch(4, 2) == 8


def test_the_world_is_what_torchrun_says() -> None:
    # Two nodes of four processes: the sixth process is the second of the second node.
    world = World.from_env(torchrun_env(5, 1, 8, 4))
    assert world == World(rank=5, local_rank=1, size=8, local_size=4)
    assert world.distributed and not world.is_main and not world.is_local_main
    assert world.nodes == 2
    assert (world.backend(cuda=True), world.device(cuda=True)) == ("nccl", "cuda:1")
    assert (world.backend(cuda=False), world.device(cuda=False)) == ("gloo", "cpu")
    assert world.cpu_threads(16) == 4 and world.cpu_threads(2) == 1
    assert world.global_batch(2, 4) == 2 * 4 * 8
    node_leader = World.from_env(torchrun_env(4, 0, 8, 4))
    assert node_leader.is_local_main and not node_leader.is_main


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK is not"),
        ({"WORLD_SIZE": "2", "RANK": "0"}, "LOCAL_RANK is not"),
        ({"WORLD_SIZE": "two"}, "not a whole number"),
        (torchrun_env(2, 0, 2, 2), "inconsistent"),
        (torchrun_env(0, 2, 4, 2), "inconsistent"),
        (torchrun_env(0, 0, 2, 4), "inconsistent"),
    ],
)
def test_a_broken_launcher_environment_is_bad_input(env: dict[str, str], message: str) -> None:
    with pytest.raises(JobError, match=message) as caught:
        World.from_env(env)
    assert (caught.value.reason, caught.value.exit_code) == ("BadEnv", EXIT_BAD_INPUT)


def test_one_process_needs_no_trainer_settings() -> None:
    assert (
        distributed.trainer_arguments(
            SINGLE, cuda=False, strategy="FSDP", gradient_checkpointing=True
        )
        == {}
    )


@pytest.mark.parametrize("cuda", [False, True])
def test_ddp_settings(cuda: bool) -> None:
    args = distributed.trainer_arguments(
        World(1, 1, 2, 2), cuda=cuda, strategy="DDP", gradient_checkpointing=True
    )
    assert args == {
        "ddp_backend": "nccl" if cuda else "gloo",
        "ddp_timeout": 1800,
        "ddp_find_unused_parameters": False,  # LoRA: every trained parameter has a gradient
        "log_level_replica": "error",
        "log_on_each_node": False,
    }


def test_fsdp_needs_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(modeling, "has_cuda", lambda: False)
    with pytest.raises(JobError, match="FSDP training needs CUDA GPUs") as caught:
        distributed.trainer_arguments(
            World(0, 0, 2, 2), cuda=False, strategy="FSDP", gradient_checkpointing=False
        )
    assert caught.value.exit_code == EXIT_BAD_INPUT
    with pytest.raises(JobError, match="FSDP training needs CUDA GPUs"):
        modeling.load_model("unused", quantize_4bit=True, world=World(0, 0, 2, 2), fsdp=True)


def test_fsdp_settings_wrap_decoder_layers_and_load_once(monkeypatch: pytest.MonkeyPatch) -> None:
    args = distributed.trainer_arguments(
        World(0, 0, 4, 4),
        cuda=True,
        strategy="FSDP",
        gradient_checkpointing=True,
        layer_classes=["LlamaDecoderLayer"],
    )
    assert args["fsdp"] is True and args["ddp_backend"] == "nccl"
    assert "ddp_find_unused_parameters" not in args
    # FSDP's own activation checkpointing, not the Trainer's (a second all-gather per layer).
    assert args["activation_checkpointing"] is False
    assert args["fsdp_config"] == {
        "version": 2,
        "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",
        "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"],
        "reshard_after_forward": True,
        "cpu_ram_efficient_loading": True,
        "state_dict_type": "FULL_STATE_DICT",
        "activation_checkpointing": True,
    }

    # What transformers and accelerate make of it (both set these variables as they go).
    monkeypatch.setenv("FSDP_CPU_RAM_EFFICIENT_LOADING", "false")
    from accelerate.utils import FullyShardedDataParallelPlugin
    from transformers import TrainingArguments

    parsed = TrainingArguments(
        "unused", use_cpu=True, fsdp=True, fsdp_config=args["fsdp_config"], report_to="none"
    )
    plugin = FullyShardedDataParallelPlugin(**parsed.fsdp_plugin_args)
    assert plugin.fsdp_version == 2
    assert plugin.transformer_cls_names_to_wrap == ["LlamaDecoderLayer"]
    assert plugin.cpu_ram_efficient_loading is True
    assert plugin.activation_checkpointing is True
    assert "FULL_STATE_DICT" in str(plugin.state_dict_type)


def test_decoder_layer_classes_come_from_the_model() -> None:
    class Model:
        _no_split_modules = ["LlamaDecoderLayer"]

    assert distributed.decoder_layer_classes(Model()) == ["LlamaDecoderLayer"]
    assert distributed.decoder_layer_classes(object()) == []


def test_qlora_stores_its_4bit_weights_in_the_compute_type() -> None:
    """FSDP shards only layers of one dtype: the packed 4-bit weights are bf16, as the rest."""
    options = modeling.load_options(
        cuda=True, quantize_4bit=True, world=World(0, 0, 2, 2), fsdp=True
    )
    quantization = options["quantization_config"]
    assert quantization.bnb_4bit_quant_storage == torch.bfloat16
    assert quantization.bnb_4bit_compute_dtype == torch.bfloat16 == options["dtype"]
    # FSDP places the weights: no device map; the checkpoint is read once.
    assert "device_map" not in options and options["low_cpu_mem_usage"] is True


def test_ddp_loads_each_process_onto_its_own_gpu() -> None:
    options = modeling.load_options(cuda=True, quantize_4bit=True, world=World(3, 1, 4, 2))
    assert options["device_map"] == {"": 1}
    assert options["quantization_config"].load_in_4bit
    cpu = modeling.load_options(cuda=False, quantize_4bit=False, world=World(1, 1, 2, 2))
    assert "device_map" not in cpu and cpu["dtype"] == torch.float32


def test_fsdp_on_cpu_is_rejected_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(modeling, "has_cuda", lambda: False)
    dm = parse_docmodel(
        {
            "apiVersion": "docmodel.dev/v1alpha1",
            "kind": "DocModel",
            "metadata": {"name": "hb"},
            "spec": {
                "source": {"bucket": "docs"},
                "training": {
                    "method": "lora",
                    "distributed": {"processesPerNode": 2, "strategy": "FSDP"},
                },
            },
        }
    )
    ctx = JobContext(dm, LocalStore(tmp_path), str(tmp_path), "r1", tmp_path)
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args([])
    with pytest.raises(JobError, match="FSDP training needs CUDA GPUs"):
        train.resolve_config(args, ctx, World(0, 0, 2, 2))
    # Launched as one process, the strategy does not apply.
    assert train.resolve_config(args, ctx, SINGLE).training.distributed.strategy == "FSDP"


def test_a_run_of_another_world_size_is_another_run() -> None:
    rows = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}]
    cfg = TrainConfig(base_model="m")
    one = train.training_run_id(rows, cfg, "m")
    assert train.training_run_id(rows, cfg, "m", world_size=1) == one
    assert train.training_run_id(rows, cfg, "m", world_size=2) != one


@pytest.mark.parametrize(
    ("rank", "writes"),
    [(None, True), (0, True), (1, False)],
    ids=["one-process", "rank-0", "rank-1"],
)
def test_only_rank_0_writes_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rank: int | None, writes: bool
) -> None:
    if rank is not None:
        for key, value in torchrun_env(rank, rank, 2, 2).items():
            monkeypatch.setenv(key, value)
    store = LocalStore(tmp_path / "store")
    local = tmp_path / "checkpoint-2"
    local.mkdir()
    (local / "adapter_model.safetensors").write_bytes(b"weights")
    checkpoints.claim_checkpoints(store, LAYOUT, "run-a")
    checkpoints.upload_checkpoint(store, LAYOUT, local, 2)
    written = sorted(o.key.split("/", 3)[-1] for o in store.list(""))
    if writes:
        assert written == [
            "checkpoints/checkpoint-2/COMPLETE",
            "checkpoints/checkpoint-2/adapter_model.safetensors",
            "checkpoints/run-id",
        ]
        assert checkpoints.stored_steps(store, LAYOUT) == [2]
    else:
        assert written == []


def test_only_rank_0_publishes_the_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in torchrun_env(1, 1, 2, 2).items():
        monkeypatch.setenv(key, value)
    # Rank 1 returns before touching any argument: nothing to publish with, nothing published.
    train.publish_adapter(None, None, None, None, None)  # type: ignore[arg-type]


def test_a_failure_is_reported_with_its_reason_and_exit_code() -> None:
    job = Failure.of(0, JobError("no data", "NoTrainingData", 3))
    assert (job.reason, job.exit_code) == ("NoTrainingData", 3)
    error = job.error()
    assert (str(error), error.reason, error.exit_code) == (
        "rank 0 failed: no data",
        "NoTrainingData",
        3,
    )
    storage = Failure.of(2, StorageError("bucket gone"))
    assert (storage.rank, storage.reason, storage.exit_code) == (2, "StorageError", EXIT_STORAGE)
    other = Failure.of(1, ValueError("bad"))
    assert (other.message, other.exit_code) == ("ValueError: bad", EXIT_UNEXPECTED)


def test_one_process_runs_everything_itself() -> None:
    assert distributed.on_main(SINGLE, lambda: 7) == 7
    assert distributed.node_first(SINGLE, lambda: 8) == 8
    assert distributed.together(SINGLE, lambda: 9) == 9
    assert distributed.all_gather(SINGLE, "x") == ["x"]
    assert distributed.broadcast(SINGLE, "y") == "y"
    with pytest.raises(JobError, match="boom"):
        distributed.together(SINGLE, lambda: (_ for _ in ()).throw(JobError("boom")))
