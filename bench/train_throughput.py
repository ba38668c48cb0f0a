"""Training throughput: our QLoRA path vs the seed baseline, same GPU, one command.

    .venv/bin/python bench/train_throughput.py [--steps 10] [--out bench/results/train_throughput.json]

On CUDA (one H100/H200), one after another in subprocesses, on a Llama-3.1-8B-shaped model with
random weights (compute does not depend on weight values; built once in /tmp/llama-random-8b,
the path the reference scripts use):

  ours      docmodel_trainer.sft.build_trainer, the code `docmodel-trainer train` runs: NF4 base
            with bf16 compute and no fp32 up-casting, LoRA r=16 on all 7 projections, batch 2,
            padding-free (FlashAttention varlen when flash-attn is installed, else SDPA with a
            block-diagonal mask), TRL's chunked LM head (no 128k-vocab logits), gradient
            checkpointing. For the ratio it trains on identical full rows to the baseline's
            (2048 random token ids each), so the ratio compares the step alone. Loss on every
            token here, as in the baseline, so both do the same LM-head work.
            non_padding_fraction is what our packer (TRL best-fit-decreasing, as training sets
            it) makes of the demo's real QA length mix: examples/local ingested as local mode
            does, each pair in the chat template, 4,000 pairs drawn from its lengths, packed
            into 2048-token rows (a random-id dataset would fill every row by construction).
  baseline  shared/reference/seed_qlora_baseline.py variant A (batch 2 x 2048, fixed length).
  unsloth   shared/reference/unsloth_anchor.py, only when `unsloth` is importable (b2 figure).

Tokens/s counts real tokens only (ours: total tokens of the measured steps / their wall time,
after warm-up; baseline: its median step). Peak memory is torch.cuda.max_memory_allocated.

Without CUDA it runs a CPU smoke comparison instead: the baseline's `--tiny` model (2 layers,
hidden 128), fp32 LoRA, 64-token rows. Those figures are labelled `"mode": "cpu-smoke"` and
`"gpu": null`; they say nothing about GPU performance.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchlib import cpu_model, write_result

ROOT = Path(__file__).resolve().parents[1]
# As in docmodel_trainer.modeling: peft imports bitsandbytes, whose CPU backend warns about an
# optional Hub kernel this benchmark never uses.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
MODEL_8B = Path("/tmp/llama-random-8b")
MODEL_TINY = Path("/tmp/llama-random-tiny")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def reference(name: str) -> Path:
    """The shared reference scripts: in the checkout (shared/), beside it (/work/shared), or
    where bench/gpu/prepare.sh copied them for the GPU machine (.whl/reference)."""
    for base in (ROOT / "shared", ROOT.parent / "shared", Path("/work/shared"), ROOT / ".whl"):
        path = base / "reference" / name
        if path.is_file():
            return path
    raise SystemExit(
        f"cannot find reference/{name} under shared/ or .whl/ (looked beside {ROOT}; "
        "bench/gpu/prepare.sh copies them to .whl/reference)"
    )


def llama_config(tiny: bool):  # type: ignore[no-untyped-def]
    """Exactly the reference baseline's config, so either script may build the shared model."""
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(
            vocab_size=1024,
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
        )
    return LlamaConfig(
        vocab_size=128256,
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=131072,
        rope_theta=500000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        rope_scaling={
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
            "rope_type": "llama3",
        },
    )


def ensure_model(path: Path, tiny: bool) -> None:
    import torch
    from transformers import LlamaForCausalLM

    if (path / "config.json").exists():
        return
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_default_dtype(torch.bfloat16)
    with torch.device(device):
        model = LlamaForCausalLM(llama_config(tiny))
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(path)


def demo_lengths(tokenizer, n: int, seed: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Token counts of `n` QA pairs drawn (seeded, with replacement) from the demo's own training
    pairs, in the chat template: examples/local ingested as `docmodel local run` ingests it,
    counted with `tokenizer` (the stand-in; Llama's own is not available offline)."""
    from docmodel_trainer.cli import main as trainer_main

    with tempfile.TemporaryDirectory() as tmp:
        rc = trainer_main(
            [
                "ingest",
                "--docmodel",
                str(ROOT / "examples/local/docmodel.yaml"),
                "--source-dir",
                str(ROOT / "examples/local/docs"),
                "--store",
                tmp,
                "--no-cache",
            ]
        )
        if rc != 0:
            raise SystemExit(f"ingest of the demo corpus failed (exit {rc})")
        (train,) = Path(tmp).glob("*/*/rev-*/dataset/train.jsonl")
        pairs = [json.loads(line) for line in train.read_text().splitlines() if line.strip()]

    def tokens(pair: dict) -> int:
        ids = tokenizer.apply_chat_template(
            [
                {"role": "user", "content": pair["question"]},
                {"role": "assistant", "content": pair["answer"]},
            ],
            tokenize=True,
        )
        if not isinstance(ids, list):  # transformers 5 returns an encoding, not the ids
            ids = ids["input_ids"]
        return len(ids)

    lengths = [tokens(p) for p in pairs]
    if min(lengths) < 8:
        raise SystemExit(
            f"implausible QA pair lengths from the chat template: {sorted(lengths)[:5]}"
        )
    rng = random.Random(seed)
    return [rng.choice(lengths) for _ in range(n)]


def packing_fill(lengths: list[int], seq: int) -> dict[str, float | int]:
    """What our packer (TRL's best-fit-decreasing, as sft_config sets it) makes of these
    lengths: real tokens over the positions of the rows it builds."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    rows = Dataset.from_list([{"input_ids": [1] * n} for n in lengths])
    packed = pack_dataset(rows, seq, strategy="bfd")
    tokens = sum(min(n, seq) for n in lengths)
    return {
        "non_padding_fraction": round(tokens / (len(packed) * seq), 4),
        "packed_pairs": len(lengths),
        "packed_rows": len(packed),
        "mean_pair_tokens": round(sum(lengths) / len(lengths), 1),
    }


# ----------------------------------------------------------------------------------------------
# Worker: our training path, in its own process
# ----------------------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

    from docmodel.api import LoraSpec, TrainingSpec
    from docmodel_trainer import modeling, sft
    from docmodel_trainer.tinymodel import build_tokenizer

    cuda = torch.cuda.is_available()
    modeling.quiet_progress_bars()
    seq = 2048 if cuda else 64
    vocab = 128000 if cuda else 1000
    # A stand-in tokenizer: only its pad token is used, the dataset is already token ids.
    tokenizer = build_tokenizer()
    rng = random.Random(0)
    rows = []
    for _ in range((args.steps + args.warmup) * 2 + 2):  # identical full rows, as the baseline's
        ids = [rng.randrange(8, vocab) for _ in range(seq)]
        rows.append({"input_ids": ids, "labels": list(ids)})
    dataset = Dataset.from_list(rows)
    packing = packing_fill(demo_lengths(tokenizer, 4000 if cuda else 400, seed=0), seq)
    t0 = time.time()
    model = modeling.load_model(args.model, quantize_4bit=cuda)
    load_s = time.time() - t0
    training = TrainingSpec(
        method="qlora" if cuda else "lora",
        lora=LoraSpec(r=16, alpha=32, dropout=0.05, target_modules=list(TARGETS)),
        learning_rate=2e-4,
        packing=True,
        batch_size=2,
        gradient_accumulation_steps=1,
    )
    cfg = sft.TrainConfig(
        base_model=args.model,
        # The CPU rows (64 tokens) are shorter than a spec allows, as `train --max-seq-length`.
        training=training.model_copy(update={"max_seq_length": seq}),
        max_steps=args.steps + args.warmup,
        logging_steps=args.steps + args.warmup,  # one log line: no per-step logging cost
        save_steps=10**9,
    )

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.steps: list[tuple[float, int]] = []

        def _sync(self) -> None:
            if cuda:
                torch.cuda.synchronize()

        def on_train_begin(self, *a, **k):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, *a, **k):  # type: ignore[no-untyped-def]
            self._sync()
            self._t, self._tokens = time.perf_counter(), trainer.counts.tokens

        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            self._sync()
            self.steps.append((time.perf_counter() - self._t, trainer.counts.tokens - self._tokens))

    timer = StepTimer()
    callbacks: list[TrainerCallback] = [timer]
    if getattr(args, "profile", None):
        callbacks.append(step_profiler(Path(args.profile), args.warmup, cuda))
    with tempfile.TemporaryDirectory() as out:
        trainer = sft.build_trainer(
            model,
            tokenizer,
            dataset,
            cfg,
            Path(out),
            cuda=cuda,
            assistant_only_loss=False,
            callbacks=callbacks,
        )
        trainer.train()
    measured = timer.steps[args.warmup :]
    seconds = sum(s for s, _ in measured)
    tokens = sum(t for _, t in measured)
    counts = trainer.counts
    return {
        "tokens_per_s": round(tokens / seconds),
        "step_s": round(seconds / len(measured), 3),
        "tokens_per_step": round(tokens / len(measured)),
        "rows_per_step": 2,
        "row_length": seq,
        "row_fill_fraction": round(tokens / len(measured) / (2 * seq), 4),
        "trained_non_padding_fraction": round(counts.non_padding_fraction, 4),
        **packing,
        "packing_source": "examples/local QA pairs (ingest), chat template, stand-in tokenizer",
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "attention": modeling.attention_implementation(),
        "load_s": round(load_s, 1),
    }


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


def step_profiler(path: Path, start: int, cuda: bool, steps: int = 2):  # type: ignore[no-untyped-def]
    """A callback that profiles `steps` training steps after `start` with torch.profiler and
    writes the operators by self time (CUDA's on a GPU) to `path`."""
    import torch
    from transformers import TrainerCallback

    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)

    class StepProfiler(TrainerCallback):
        def __init__(self) -> None:
            self.prof: torch.profiler.profile | None = None
            self.seen = 0

        def on_step_begin(self, *a, **k):  # type: ignore[no-untyped-def]
            if self.seen == start and self.prof is None:
                self.prof = torch.profiler.profile(activities=activities, record_shapes=False)
                self.prof.__enter__()

        def on_step_end(self, *a, **k):  # type: ignore[no-untyped-def]
            self.seen += 1
            if self.prof is not None and self.seen == start + steps:
                if cuda:
                    torch.cuda.synchronize()
                self.prof.__exit__(None, None, None)
                key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
                table = self.prof.key_averages().table(sort_by=key, row_limit=30)
                path.write_text(f"{steps} training steps after {start} warm-up steps\n{table}\n")
                self.prof = None

    return StepProfiler()


def machine() -> dict:
    import torch

    from docmodel.artifacts import software_versions

    info = {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        **software_versions(
            ("torch", "transformers", "trl", "peft", "bitsandbytes", "flash-attn", "unsloth")
        ),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def subprocess_json(
    cmd: list[str], result_file: Path, timeout: int, env: dict[str, str] | None = None
) -> object:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, timeout=timeout, cwd=ROOT, env={**os.environ, **(env or {})})
    return json.loads(result_file.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="measured steps")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of both runs without CUDA (1: on a small shared machine, 2+ "
        "OpenMP threads contending with other work made steps erratic)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train_throughput.json")
    parser.add_argument(
        "--profile",
        type=Path,
        help="only our path, a few steps: write a torch.profiler table of 2 steps here",
    )
    parser.add_argument("--worker", choices=["ours"], help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.worker == "ours":
        args.result.write_text(json.dumps(run_ours(args)))
        return
    import torch

    cuda = torch.cuda.is_available()
    if not cuda:
        print("No CUDA device: a tiny model on CPU (smoke figures, not GPU figures).")
        os.environ["OMP_NUM_THREADS"] = str(args.cpu_threads)  # inherited by both runs
    model = MODEL_8B if cuda else MODEL_TINY
    ensure_model(model, tiny=not cuda)
    if args.profile is not None:  # our step only, profiled: what bounds it
        args.model = str(model)
        print(json.dumps({"profile": str(args.profile), **run_ours(args)}))
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ours = subprocess_json(
            [
                sys.executable,
                __file__,
                "--worker",
                "ours",
                "--model",
                str(model),
                "--steps",
                str(args.steps),
                "--warmup",
                str(args.warmup),
                "--result",
                str(tmp_path / "ours.json"),
            ],
            tmp_path / "ours.json",
            timeout=1800,
        )
        baseline_cmd = [
            sys.executable,
            str(reference("seed_qlora_baseline.py")),
            "--variants",
            "A",
            "--steps",
            str(args.steps),
            "--out",
            tmp,
        ]
        if not cuda:
            baseline_cmd.append("--tiny")
        (baseline,) = subprocess_json(baseline_cmd, tmp_path / "qlora_baseline.json", timeout=1800)
        unsloth = None
        if cuda and importlib.util.find_spec("unsloth") is not None:
            runs = subprocess_json(
                [sys.executable, str(reference("unsloth_anchor.py")), str(model)],
                tmp_path / "unsloth_anchor.json",
                timeout=1800,
                env={"OUT": tmp},
            )
            unsloth = next(r for r in runs if r["variant"].startswith("unsloth_qlora_b2"))

    result = {
        "benchmark": "train_throughput",
        "mode": "gpu" if cuda else "cpu-smoke",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "model": "Llama-3.1-8B shape, random weights"
        if cuda
        else "tiny Llama (2 layers, hidden 128), random weights",
        "setting": "4-bit NF4 QLoRA r=16, batch 2 x 2048"
        if cuda
        else "fp32 LoRA r=16 on CPU, batch 2 x 64",
        "ours_tokens_per_s": ours["tokens_per_s"],
        "baseline_tokens_per_s": baseline["tokens_per_s"],
        "ratio": round(ours["tokens_per_s"] / baseline["tokens_per_s"], 2),
        "ours_peak_gib": ours["peak_gib"],
        "baseline_peak_gib": baseline["peak_mem_gib"],
        "non_padding_fraction": ours["non_padding_fraction"],
        "ours": ours,
        "baseline": baseline,
    }
    if unsloth:
        result["unsloth_tokens_per_s"] = unsloth["tokens_per_s"]
        result["unsloth_peak_gib"] = unsloth["peak_mem_gib"]
    if not cuda:
        result["note"] = (
            "CPU smoke run: checks that both paths run end to end on the same machine. A tiny "
            "fp32 model on 2 cores is dominated by per-op overhead, so the ratio says nothing "
            "about the GPU target (ratio >= 3.5 at <= 10 GiB on an H100)."
        )
    write_result(
        args.out,
        result,
        (
            "mode",
            "ours_tokens_per_s",
            "baseline_tokens_per_s",
            "ratio",
            "ours_peak_gib",
            "baseline_peak_gib",
            "non_padding_fraction",
        ),
    )


if __name__ == "__main__":
    main()
