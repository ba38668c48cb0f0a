"""`docmodel-trainer train` under torchrun, as a PyTorchJob runs it: two CPU processes (gloo,
one torch thread each) on a tiny Llama.

- They train the adapter one process trains with the same global batch (1 process x batch 2
  against 2 processes x batch 1, the same accumulation, LoRA dropout 0), within a stated
  tolerance.
- Only rank 0 logs and writes: one adapter, one manifest, the checkpoints.
- A restarted run (a new pod, an empty workdir) resumes from the stored checkpoint.
- A rank killed mid-training fails the run, and no adapter is published.
- When rank 0 fails to publish the adapter, every rank fails with it.
- The coordination the trainer relies on (`docmodel_trainer.distributed`): a failure on any
  rank fails every rank with the same reason and exit code.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from safetensors.torch import load_file

from docmodel.artifacts import RevisionLayout
from docmodel.storage import LocalStore
from docmodel_trainer.cli import main
from docmodel_trainer.tinymodel import build_tiny_llama

from testkit.dataset_factory import docmodel_manifest, publish_dataset, write_corpus
from testkit.logs import events, messages

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

NS, NAME, REV = "docs", "handbook", "r1"
REVISION = Path(NS) / NAME / f"rev-{REV}"
ADAPTER = REVISION / "adapter"
# One run for both: 6 optimizer steps of a global batch of 4 packed rows (of the 39 the data
# makes: no step reads the short last batch), a checkpoint every 3 steps.
TRAINING = (
    "--epochs",
    "4",
    "--max-steps",
    "6",
    "--gradient-accumulation-steps",
    "2",
    "--learning-rate",
    "2e-2",
    "--logging-steps",
    "1",
    "--save-steps",
    "3",
)
# Two processes sum the gradients in another order than one process does (fp32, and each
# process runs its own matmuls on its rows): the LoRA weights may differ by rounding only.
# The bound: the largest absolute difference in any LoRA tensor, relative to that tensor's
# largest absolute value. Measured on this run: about 1.4e-5.
RELATIVE_TOLERANCE = 1e-3

TRAINER = Path(sys.executable).with_name("docmodel-trainer")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("distributed")
    corpus = write_corpus(root / "corpus")
    model = build_tiny_llama(root / "model", corpus=corpus, vocab_size=400, hidden_size=64)
    publish_dataset(LocalStore(root / "dataset-store"), RevisionLayout(NS, NAME, REV), root / "ds")
    single, double = root / "dm-1.yaml", root / "dm-2.yaml"
    single.write_text(yaml.safe_dump(docmodel_manifest(model)))
    two = docmodel_manifest(model, distributed={"nodes": 1, "processesPerNode": 2})
    double.write_text(yaml.safe_dump(two))
    return {"root": root, "single": single, "double": double}


def fresh_store(setup: dict[str, Path], name: str) -> Path:
    """A store holding only the published dataset."""
    store = setup["root"] / name
    shutil.copytree(setup["root"] / "dataset-store", store)
    return store


def torchrun(root: Path, name: str, *program: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`torchrun --standalone --nproc-per-node 2 <program>`, one torch thread per process,
    each rank's output in files under <root>/<name>-logs; (process, log directory)."""
    logs = root / f"{name}-logs"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "--log-dir", str(logs), "--redirects", "3", *program]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["OMP_NUM_THREADS"] = "1"
    with (root / f"{name}-torchrun.log").open("wb") as out:  # the child keeps its own handle
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    return process, logs


def launch_training(
    setup: dict[str, Path], store: Path, name: str, *extra: str
) -> tuple[subprocess.Popen[bytes], Path]:
    """The train step as the PyTorchJob's pod runs it:
    `torchrun ... --no-python docmodel-trainer train ...`."""
    program = ["--no-python", str(TRAINER)] if TRAINER.is_file() else ["-m", "docmodel_trainer.cli"]
    program += ["train", "--docmodel", str(setup["double"]), "--store", str(store)]
    program += ["--revision", REV, "--workdir", str(setup["root"] / f"{name}-work"), *extra]
    return torchrun(setup["root"], name, *program)


def rank_output(logs: Path, rank: int, stream: str = "stderr") -> str:
    """What rank `rank` wrote (one node: the local rank is the rank); empty before it starts."""
    paths = list(logs.glob(f"*/attempt_0/{rank}/{stream}.log"))
    return paths[0].read_text() if paths else ""


def finished(process: subprocess.Popen[bytes], timeout: float = 240) -> int:
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def lora_weights(store: Path) -> dict[str, torch.Tensor]:
    return load_file(store / ADAPTER / "adapter_model.safetensors")


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    return max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in a)


def artifact_json(store: Path, name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((store / ADAPTER / name).read_text())


@pytest.fixture(scope="module")
def two(setup: dict[str, Path]) -> dict[str, Path]:
    """The 2-process run: batch 1 per process, the global batch 4."""
    store = fresh_store(setup, "store-2")
    process, logs = launch_training(setup, store, "two", "--batch-size", "1", *TRAINING)
    assert finished(process) == 0, (setup["root"] / "two-torchrun.log").read_text()
    return {"store": store, "logs": logs}


def test_two_processes_train_the_adapter_one_process_trains(
    setup: dict[str, Path], two: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    one = fresh_store(setup, "store-1")
    args = ["train", "--docmodel", str(setup["single"]), "--store", str(one), "--revision", REV]
    args += ["--workdir", str(setup["root"] / "work-1"), "--batch-size", "2", *TRAINING]
    assert main(args) == 0
    (started,) = events(capsys.readouterr().err, "Started training")
    assert (started["world_size"], started["global_batch"]) == ("1", "4")

    worst = relative_difference(lora_weights(one), lora_weights(two["store"]))
    print(f"largest relative LoRA weight difference, 1 vs 2 processes: {worst:.2e}")
    assert worst < RELATIVE_TOLERANCE
    # The same losses on the way: the logged loss is the mean over both processes' tokens.
    single, double = artifact_json(one, "metrics.json"), artifact_json(two["store"], "metrics.json")
    curve = [p["loss"] for p in double["loss_curve"]]
    assert len(curve) == 6
    assert curve == pytest.approx([p["loss"] for p in single["loss_curve"]], rel=1e-4)
    assert (double["world_size"], double["global_batch"]) == (2, 4)
    assert "world_size" not in single  # one process records what it always did
    # The tokens and examples of both processes together: what one process trained on.
    assert double["tokens"] == single["tokens"] > 0
    assert double["loss_token_fraction"] == single["loss_token_fraction"]
    seen = artifact_json(two["store"], "training_data.json")["seen"]
    assert seen == artifact_json(one, "training_data.json")["seen"]


def test_only_rank_0_logs_and_writes(two: dict[str, Path]) -> None:
    store, logs = two["store"], two["logs"]
    manifests = sorted(p.relative_to(store).as_posix() for p in store.rglob("manifest.json"))
    assert manifests == [
        (REVISION / kind / "manifest.json").as_posix() for kind in ("adapter", "dataset")
    ]
    assert (store / REVISION / "checkpoints" / "checkpoint-3" / "COMPLETE").is_file()
    rank0, rank1 = rank_output(logs, 0), rank_output(logs, 1)
    assert len(events(rank0, "Published adapter")) == 1
    assert len(events(rank0, "Saved checkpoint")) == 2  # steps 3 and 6
    (started,) = events(rank0, "Started training")
    assert (started["world_size"], started["global_batch"]) == ("2", "4")
    (joined,) = events(rank0, "Joined process group")
    assert (joined["backend"], joined["world_size"], joined["device"]) == ("gloo", "2", "cpu")
    (loaded,) = events(rank0, "Loaded base model")
    assert loaded["threads"] == "1"  # each process has its share of the cores
    assert [p["step"] for p in events(rank0, "Trained")] == [f"{i}/6" for i in range(1, 7)]
    # Rank 1 is quiet: no log line, no warning, nothing at all.
    assert messages(rank1) == [] and rank1 == "" and rank_output(logs, 1, "stdout") == ""


def test_a_restarted_run_resumes_from_the_stored_checkpoint(
    setup: dict[str, Path], two: dict[str, Path]
) -> None:
    """A new pod (an empty workdir) of a run that saved step 3 and died: every rank resumes
    from the checkpoint rank 0 uploaded, and trains the same adapter."""
    store = setup["root"] / "store-resumed"
    shutil.copytree(two["store"], store)
    shutil.rmtree(store / ADAPTER)
    shutil.rmtree(store / REVISION / "checkpoints" / "checkpoint-6")
    process, logs = launch_training(setup, store, "resumed", "--batch-size", "1", *TRAINING)
    assert finished(process) == 0, (setup["root"] / "resumed-torchrun.log").read_text()
    rank0 = rank_output(logs, 0)
    (restored,) = events(rank0, "Restored checkpoint")
    assert restored["step"] == "3"
    assert [p["step"] for p in events(rank0, "Trained")] == ["4/6", "5/6", "6/6"]
    worst = relative_difference(lora_weights(two["store"]), lora_weights(store))
    assert worst < RELATIVE_TOLERANCE


def test_a_rank_killed_mid_training_fails_the_run(setup: dict[str, Path]) -> None:
    store = fresh_store(setup, "store-killed")
    long_run = ("--batch-size", "1", "--max-steps", "400", "--logging-steps", "1")
    process, logs = launch_training(setup, store, "killed", *long_run, "--save-steps", "1000")
    try:
        deadline = time.monotonic() + 180
        while not events(rank_output(logs, 0), "Trained"):
            assert process.poll() is None, (setup["root"] / "killed-torchrun.log").read_text()
            assert time.monotonic() < deadline, "rank 0 logged no training step"
            time.sleep(0.2)
        (rank1,) = [
            p
            for p in psutil.Process(process.pid).children(recursive=True)
            if p.environ().get("RANK") == "1"
        ]
        rank1.send_signal(signal.SIGKILL)
        assert finished(process, timeout=120) != 0
    finally:
        if process.poll() is None:
            process.kill()
    assert not (store / ADAPTER).exists()  # nothing published, not even in part
    assert not events(rank_output(logs, 0), "Published adapter")


def test_every_rank_fails_when_rank_0_cannot_publish(setup: dict[str, Path]) -> None:
    store = fresh_store(setup, "store-blocked")
    # A file where the adapter's directory goes: rank 0's upload fails (--force: the check for
    # a published adapter, which would trip over it first, is skipped).
    (store / ADAPTER).write_text("not a directory")
    extra = ("--batch-size", "1", "--max-steps", "2", "--force")
    process, logs = launch_training(setup, store, "blocked", *extra)
    assert finished(process) != 0
    assert (store / ADAPTER).read_text() == "not a directory"
    assert "NotADirectoryError" in rank_output(logs, 0)
    (failed,) = events(rank_output(logs, 1), "Failed")
    assert failed["command"] == "train"
    assert "rank 0 failed: NotADirectoryError" in rank_output(logs, 1)


COORDINATION = """
import sys
from datetime import timedelta
from pathlib import Path

from docmodel.storage import StorageError
from docmodel_trainer import distributed
from docmodel_trainer.common import JobError

world = distributed.World.from_env()
distributed.start(world, cuda=False, control_timeout=timedelta(seconds=60))
order = Path(sys.argv[1])


def case(name, fn):
    try:
        print(name, "ok", fn(), flush=True)
    except (JobError, StorageError) as exc:
        code = getattr(exc, "exit_code", "storage")
        print(name, "failed", type(exc).__name__, getattr(exc, "reason", ""), code, exc, flush=True)


def fail(rank, exc):
    def fn():
        if world.rank == rank:
            raise exc
        return world.rank
    return fn


def first(tag):
    def fn():
        with order.open("a") as f:
            f.write(f"{tag}{world.rank} ")
        return world.rank
    return fn


case("gather", lambda: distributed.all_gather(world, world.rank * 10))
case("main", lambda: distributed.on_main(world, lambda: f"from-{world.rank}"))
case("main-fails", lambda: distributed.on_main(world, fail(0, JobError("no", "Nope", 4))))
case("together-fails", lambda: distributed.together(world, fail(1, StorageError("gone"))))
case("node-first", lambda: distributed.node_first(world, first("a")))
case("node-first-fails", lambda: distributed.node_first(world, fail(0, JobError("x", "Bad", 2))))
case("after", lambda: distributed.all_gather(world, "still-in-step"))
distributed.finish(world)
"""


def test_a_failure_on_any_rank_fails_every_rank_alike(tmp_path: Path) -> None:
    script, order = tmp_path / "coordination.py", tmp_path / "order.txt"
    script.write_text(COORDINATION)
    process, logs = torchrun(tmp_path, "coordination", str(script), str(order))
    assert finished(process, timeout=120) == 0, (tmp_path / "coordination-torchrun.log").read_text()
    results = [
        {
            line.split()[0]: line.split(maxsplit=1)[1]
            for line in rank_output(logs, r, "stdout").splitlines()
        }
        for r in (0, 1)
    ]
    for rank in (0, 1):
        assert results[rank]["gather"] == "ok [0, 10]"
        assert results[rank]["main"] == "ok from-0"  # computed on rank 0 only
        assert results[rank]["after"] == "ok ['still-in-step', 'still-in-step']"
    # Rank 0's failure, its reason and exit code, on both.
    assert results[0]["main-fails"] == "failed JobError Nope 4 no"
    assert results[1]["main-fails"] == "failed JobError Nope 4 rank 0 failed: no"
    # A storage failure on rank 1: the other rank fails with the storage exit code.
    assert results[1]["together-fails"] == "failed StorageError StorageError storage gone"
    assert results[0]["together-fails"] == "failed JobError StorageError 4 rank 1 failed: gone"
    # A node's first process goes first; when it fails, the others never start.
    assert order.read_text() == "a0 a1 "
    assert results[0]["node-first-fails"] == "failed JobError Bad 2 x"
    assert results[1]["node-first-fails"] == "failed JobError Bad 2 rank 0 failed: x"
