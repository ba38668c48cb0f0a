"""Training throughput: our QLoRA path vs the seed baseline, same GPU, one command.

    .venv/bin/python bench/train_throughput.py [--steps 10] [--out bench/results/train_throughput.json]

On CUDA (one H100/H200), one after another in subprocesses, on a Llama-3.1-8B-shaped model with
random weights (compute does not depend on weight values; built once in /tmp/llama-random-8b,
the path the reference scripts use):

  ours      docmodel_trainer.sft.build_trainer, the code `docmodel-trainer train` runs: NF4 base
            with bf16 compute and no fp32 up-casting, LoRA r=16 on all 7 projections, rows of
            2048 tokens, batch 2, packed best-fit-decreasing from a realistic QA length mix,
            padding-free (FlashAttention varlen when flash-attn is installed, else SDPA with a
            block-diagonal mask), TRL's chunked LM head (no 128k-vocab logits), gradient
            checkpointing. Loss on every token here, as in the baseline, so both do the same
            LM-head work.
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
    """The shared reference scripts: in the checkout (shared/) or beside it (/work/shared)."""
    for base in (ROOT / "shared", ROOT.parent / "shared", Path("/work/shared")):
        path = base / "reference" / name
        if path.is_file():
            return path
    raise SystemExit(f"cannot find reference/{name} under shared/ (looked beside {ROOT})")


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


def qa_lengths(n: int, seed: int, scale: float) -> list[tuple[int, int]]:
    """(prompt, answer) token counts of QA pairs drawn from documentation: chat header plus a
    question of ~10-60 tokens, answers from a short phrase to a few paragraphs (log-normal)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        prompt = 12 + int(min(rng.lognormvariate(3.2, 0.45), 80))
        answer = 4 + int(min(rng.lognormvariate(4.2, 0.8), 900))
        out.append((max(4, int(prompt * scale)), max(2, int(answer * scale))))
    return out


# ----------------------------------------------------------------------------------------------
# Worker: our training path, in its own process
# ----------------------------------------------------------------------------------------------


def run_ours(args: argparse.Namespace) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback

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
    for p, a in qa_lengths(4000 if cuda else 400, seed=0, scale=1.0 if cuda else 0.1):
        ids = [rng.randrange(8, vocab) for _ in range(p + a)]
        rows.append({"input_ids": ids, "labels": list(ids)})
    dataset = Dataset.from_list(rows)
    t0 = time.time()
    model = modeling.load_model(args.model, quantize_4bit=cuda)
    load_s = time.time() - t0
    cfg = sft.TrainConfig(
        base_model=args.model,
        method="qlora" if cuda else "lora",
        lora_r=16,
        lora_alpha=32,
        lora_dropout=0.05,
        target_modules=TARGETS,
        max_steps=args.steps + args.warmup,
        learning_rate=2e-4,
        max_seq_length=seq,
        packing=True,
        batch_size=2,
        gradient_accumulation_steps=1,
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
    with tempfile.TemporaryDirectory() as out:
        trainer = sft.build_trainer(
            model,
            tokenizer,
            dataset,
            cfg,
            Path(out),
            cuda=cuda,
            assistant_only_loss=False,
            callbacks=[timer],
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
        "pack_fill_fraction": round(tokens / len(measured) / (2 * seq), 4),
        "non_padding_fraction": round(counts.non_padding_fraction, 4),
        "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "attention": modeling.attention_implementation(),
        "load_s": round(load_s, 1),
    }


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------


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
        print("No CUDA device: running the CPU smoke comparison (tiny model; not GPU figures).")
        os.environ["OMP_NUM_THREADS"] = str(args.cpu_threads)  # inherited by both runs
    model = MODEL_8B if cuda else MODEL_TINY
    ensure_model(model, tiny=not cuda)
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
