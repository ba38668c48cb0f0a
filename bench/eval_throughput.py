"""Evaluation throughput: our batched answering path vs one question at a time, same model.

    .venv/bin/python bench/eval_throughput.py [--questions 256] [--out bench/results/eval_throughput.json]

Both sides use `docmodel_trainer.generation.HFAnswerer`, the object `docmodel-trainer evaluate`
answers with (base model + a LoRA adapter loaded through peft, greedy decoding, chat-template
prompts): ours with its default batching (length-sorted, left-padded batches), the baseline
with batch size 1, i.e. HF `generate` one question at a time. Every answer is exactly
`--new-tokens` long (min = max new tokens), prompts are ~`--prompt-tokens` long, so both sides
do the same work. Answers/s = questions / wall time, after a warm-up call.

On CUDA: a Llama-3.1-8B-shaped model with random weights (shared/reference/eval_anchor.py's
setting), 4-bit NF4, 128-token prompts, 64 new tokens; target ratio >= 50.
On CPU: a small Llama (4 layers, hidden 256), fp32, same prompt and answer lengths; the figures
are labelled `"mode": "cpu"` and say nothing about the GPU target.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import random
import sys
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchlib import write_result

ROOT = Path(__file__).resolve().parents[1]
WORK = Path("/tmp/docmodel-bench")
# As in docmodel_trainer.modeling: peft imports bitsandbytes, whose CPU backend warns about an
# optional Hub kernel this benchmark never uses.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)


def build_model(cuda: bool) -> Path:
    """A chat-capable model directory: random weights plus the tiny Llama 3-style tokenizer."""
    import torch
    from transformers import LlamaForCausalLM

    from docmodel_trainer.tinymodel import build_tiny_llama, build_tokenizer

    if not cuda:
        return build_tiny_llama(
            WORK / "small-llama", hidden_size=256, num_layers=4, num_heads=8, num_kv_heads=4
        )
    sys.path.insert(0, str(ROOT / "bench"))
    from train_throughput import MODEL_8B, llama_config

    if not (MODEL_8B / "config.json").exists():
        torch.set_default_dtype(torch.bfloat16)
        with torch.device("cuda"):
            model = LlamaForCausalLM(llama_config(tiny=False))
        torch.set_default_dtype(torch.float32)
        model.save_pretrained(MODEL_8B)
        del model
        torch.cuda.empty_cache()
    # Link the weights and add a tokenizer with a chat template (ids < 1100 < vocab).
    path = WORK / "llama-8b-chat"
    path.mkdir(parents=True, exist_ok=True)
    for item in MODEL_8B.iterdir():
        if item.suffix in {".json", ".safetensors"} and "tokenizer" not in item.name:
            link = path / item.name
            if not link.exists():
                link.symlink_to(item)
    build_tokenizer().save_pretrained(path)
    return path


def build_adapter(base: Path, cuda: bool) -> Path:
    """A LoRA adapter (r=16, all projections) with non-zero B so it changes every answer."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, LlamaForCausalLM

    from docmodel.api import DEFAULT_TARGET_MODULES
    from docmodel_trainer import modeling

    out = WORK / ("adapter-8b" if cuda else "adapter-small")
    if (out / "adapter_config.json").exists():
        return out
    config = AutoConfig.from_pretrained(base)
    with torch.device("meta" if cuda else "cpu"):
        model = LlamaForCausalLM(config)
    cfg = LoraConfig(
        r=16,
        lora_alpha=32,
        target_modules=list(DEFAULT_TARGET_MODULES),
        task_type="CAUSAL_LM",
    )
    with modeling.peft_compat():
        peft_model = get_peft_model(model, cfg)
    state = {}
    for name, param in peft_model.named_parameters():
        if "lora_" in name:
            state[name] = torch.randn(param.shape, dtype=torch.float32) * 0.01
    peft_model.load_state_dict(state, strict=False, assign=True)
    peft_model.save_pretrained(out)
    return out


def prompts(tokenizer, n: int, length: int, seed: int = 0) -> list[list[dict[str, str]]]:  # type: ignore[no-untyped-def]
    """Questions of random words whose chat-template prompt is about `length` tokens."""
    rng = random.Random(seed)
    words = [w for w in tokenizer.get_vocab() if w.isalpha() and len(w) > 2] or ["word"]
    out = []
    for _ in range(n):
        text = ""
        while True:
            conv = [{"role": "user", "content": text}]
            ids = tokenizer.apply_chat_template(
                conv, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            if len(ids) >= length:
                break
            text += " " + rng.choice(words)
        out.append(conv)
    return out


def timed(answerer, conversations) -> tuple[float, list[str]]:  # type: ignore[no-untyped-def]
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    answers = answerer.answer("candidate", conversations)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, help="batched questions (256 GPU, 64 CPU)")
    parser.add_argument("--one-at-a-time", type=int, help="questions answered singly (8)")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, help="ours (default: the evaluate default)")
    parser.add_argument(
        "--cpu-threads",
        type=int,
        default=1,
        help="torch threads without CUDA (1: on a small shared machine, 2+ OpenMP threads "
        "contending with other work made each step several times slower)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/eval_throughput.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch

    from docmodel_trainer import generation, modeling

    modeling.quiet_progress_bars()
    cuda = torch.cuda.is_available()
    if not cuda:
        print("No CUDA device: measuring on CPU with a small model (not the GPU target).")
        torch.set_num_threads(args.cpu_threads)
    n = args.questions or (256 if cuda else 64)
    singles = args.one_at_a_time or 8
    base = build_model(cuda)
    adapter = build_adapter(base, cuda)
    answerer = generation.open_answerer(
        str(base),
        {"candidate": adapter},
        max_new_tokens=args.new_tokens,
        quantize_4bit=cuda,
        engine="transformers",
        batch_size=args.batch_size,
    )
    answerer.generation_config.min_new_tokens = args.new_tokens  # every answer the same length
    conversations = prompts(answerer.tokenizer, n, args.prompt_tokens)
    prompt_lengths = [len(p) for p in generation.prompt_ids(answerer.tokenizer, conversations)]
    ours_batch = answerer.batch_size

    timed(answerer, conversations[:2])  # warm-up
    ours_s, ours_answers = timed(answerer, conversations)
    answerer.batch_size = 1
    one_s, one_answers = timed(answerer, conversations[:singles])
    same = sum(a == b for a, b in zip(ours_answers[:singles], one_answers, strict=True))

    ours_rate, one_rate = n / ours_s, singles / one_s
    result = {
        "benchmark": "eval_throughput",
        "mode": "gpu" if cuda else "cpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python bench/eval_throughput.py " + " ".join(sys.argv[1:]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "torch_threads": torch.get_num_threads(),
            **{
                name: metadata.version(name)
                for name in ("torch", "transformers", "peft", "bitsandbytes")
                if _installed(name)
            },
        },
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "model": "Llama-3.1-8B shape, random weights, 4-bit NF4"
        if cuda
        else "small Llama (4 layers, hidden 256), random weights, fp32",
        "adapter": "LoRA r=16 on all projections (random, non-zero)",
        "engine": answerer.engine,
        "prompt_tokens_mean": round(sum(prompt_lengths) / len(prompt_lengths), 1),
        "new_tokens": args.new_tokens,
        "ours_questions": n,
        "ours_batch_size": ours_batch,
        "ours_answers_per_s": round(ours_rate, 2),
        "one_at_a_time_questions": singles,
        "one_at_a_time_answers_per_s": round(one_rate, 3),
        "ratio": round(ours_rate / one_rate, 1),
        "identical_answers": f"{same}/{singles}",
    }
    if not cuda:
        result["note"] = (
            "CPU run with a small model on this machine's cores; the GPU target (ratio >= 50 "
            "with a 4-bit 8B model) needs a GPU run of this same command."
        )
    write_result(
        args.out,
        result,
        (
            "mode",
            "ours_answers_per_s",
            "one_at_a_time_answers_per_s",
            "ratio",
            "identical_answers",
        ),
    )


def _installed(name: str) -> bool:
    with contextlib.suppress(metadata.PackageNotFoundError):
        return bool(metadata.version(name))
    return False


if __name__ == "__main__":
    main()
