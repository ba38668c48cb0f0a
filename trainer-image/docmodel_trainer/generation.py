"""Batched greedy answering for evaluation: vLLM's offline engine, or HF `generate`.

    answerer = open_answerer(base_path, {"candidate": dir, "serving": dir}, max_new_tokens=64)
    answers = answerer.answer("candidate", conversations)   # base + the candidate adapter
    answers = answerer.answer(None, conversations)          # the base model alone (RAG baseline)

The base model is loaded once; adapters are switched per system. Every system gets the same
prompt token ids (the base model's chat template with the generation prompt) and the same
greedy decoding, capped at `max_new_tokens`.

- vLLM (when importable and CUDA is present): one engine with LoRA enabled; each adapter is a
  `LoRARequest`, the base model is a request without one. Continuous batching.
- transformers: peft `PeftModel` with every adapter loaded by name; an adapter's answers run
  with it merged into the weights (as the local server and vLLM serve it: no per-token LoRA
  cost, so latencies compare as served), base-only answers with the adapters off
  (`docmodel.modelfacts.use_adapter`). Prompts are sorted by length and generated in
  left-padded batches.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from docmodel.modelfacts import stop_token_ids, use_adapter
from docmodel_trainer import modeling

log = logging.getLogger("docmodel.trainer.generation")

Conversation = list[dict[str, str]]


@dataclass(frozen=True)
class AnswerStats:
    """One answer's cost: prompt and answer tokens, and its latency (the time of the batch it
    was generated in, which is what a caller of that batch waits)."""

    prompt_tokens: int
    answer_tokens: int
    latency_s: float


class Answerer(Protocol):
    tokenizer: Any
    stats: list[AnswerStats]  # of the last `answer` call, in its order

    @property
    def engine(self) -> str: ...
    @property
    def batch_size(self) -> int | None: ...

    def answer(
        self, adapter: str | None, conversations: Sequence[Conversation], label: str = ""
    ) -> list[str]: ...


def vllm_available() -> bool:
    import importlib.util

    return modeling.has_cuda() and importlib.util.find_spec("vllm") is not None


def open_answerer(
    base_path: str,
    adapters: dict[str, Path],
    *,
    max_new_tokens: int,
    quantize_4bit: bool,
    engine: str = "auto",
    batch_size: int | None = None,
    max_lora_rank: int = 16,
) -> Answerer:
    """The fastest engine available (`engine="auto"`), or the one asked for."""
    if engine == "auto":
        engine = "vllm" if vllm_available() else "transformers"
    if engine == "vllm":
        return VLLMAnswerer(
            base_path,
            adapters,
            max_new_tokens=max_new_tokens,
            quantize_4bit=quantize_4bit,
            max_lora_rank=max_lora_rank,
        )
    return HFAnswerer(
        base_path,
        adapters,
        max_new_tokens=max_new_tokens,
        quantize_4bit=quantize_4bit,
        batch_size=batch_size or (128 if modeling.has_cuda() else 16),
    )


def prompt_ids(tokenizer: Any, conversations: Sequence[Conversation]) -> list[list[int]]:
    """Chat-template token ids ending in the assistant header (BOS included once)."""
    return [
        list(
            tokenizer.apply_chat_template(
                conv, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
        )
        for conv in conversations
    ]


class _Progress:
    def __init__(self, system: str, total: int):
        self.system, self.total, self.start = system, total, time.monotonic()

    def update(self, done: int) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        log.info(
            "Answered questions=%d/%d system=%s answers_per_s=%.2f",
            done,
            self.total,
            self.system,
            done / elapsed,
        )


class HFAnswerer:
    """Left-padded batched `generate` over a peft model holding every adapter."""

    engine = "transformers"

    def __init__(
        self,
        base_path: str,
        adapters: dict[str, Path],
        *,
        max_new_tokens: int,
        quantize_4bit: bool,
        batch_size: int,
    ):
        from transformers import GenerationConfig

        self.tokenizer = modeling.load_tokenizer(base_path, padding_side="left")
        model = modeling.load_model(base_path, quantize_4bit=quantize_4bit)
        if adapters:
            from peft import PeftModel

            (first, first_dir), *others = adapters.items()
            with modeling.peft_compat():
                model = PeftModel.from_pretrained(model, str(first_dir), adapter_name=first)
            for name, path in others:
                model.load_adapter(str(path), adapter_name=name)
        self.model = model.eval()
        self.adapters = set(adapters)
        self.batch_size = batch_size
        self.stats: list[AnswerStats] = []
        self.generation_config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=stop_token_ids(self.tokenizer, model.generation_config),
        )

    def _adapter_context(self, adapter: str | None) -> Any:
        if adapter is None and not self.adapters:
            return contextlib.nullcontext()
        if adapter is not None and adapter not in self.adapters:
            raise KeyError(f"no adapter named {adapter!r} is loaded")
        return use_adapter(self.model, adapter)  # merged, as the servers run it

    def answer(
        self, adapter: str | None, conversations: Sequence[Conversation], label: str = ""
    ) -> list[str]:
        """Greedy answers of base + `adapter` (None: the base alone); `label` names the system
        in the progress lines."""
        import torch

        ids = prompt_ids(self.tokenizer, conversations)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)
        answers: list[str] = [""] * len(ids)
        stats: list[AnswerStats] = [AnswerStats(0, 0, 0.0)] * len(ids)
        progress = _Progress(label or adapter or "base", len(ids))
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        stops = set(self.generation_config.eos_token_id or []) | {pad}
        with self._adapter_context(adapter), torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                width = max(len(ids[i]) for i in batch)
                input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
                attention = torch.zeros((len(batch), width), dtype=torch.long)
                for row, i in enumerate(batch):
                    input_ids[row, width - len(ids[i]) :] = torch.tensor(ids[i])
                    attention[row, width - len(ids[i]) :] = 1
                t0 = time.monotonic()
                out = self.model.generate(
                    input_ids=input_ids.to(device),
                    attention_mask=attention.to(device),
                    generation_config=self.generation_config,
                )
                elapsed = time.monotonic() - t0
                generated = out[:, width:].cpu()
                texts = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
                for row, (i, text) in enumerate(zip(batch, texts, strict=True)):
                    answers[i] = text.strip()
                    tokens = generated[row].tolist()
                    n = next((k + 1 for k, t in enumerate(tokens) if t in stops), len(tokens))
                    stats[i] = AnswerStats(len(ids[i]), n, elapsed)
                progress.update(start + len(batch))
        self.stats = stats
        return answers


class VLLMAnswerer:
    """vLLM's offline engine with LoRA; one engine serves the base and every adapter."""

    engine = "vllm"
    batch_size = None

    def __init__(
        self,
        base_path: str,
        adapters: dict[str, Path],
        *,
        max_new_tokens: int,
        quantize_4bit: bool,
        max_lora_rank: int,
    ):
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        self.tokenizer = modeling.load_tokenizer(base_path)
        kwargs: dict[str, Any] = {
            "model": base_path,
            "dtype": "bfloat16",
            "seed": 0,
            "enable_lora": bool(adapters),
        }
        if adapters:
            kwargs.update(max_lora_rank=max_lora_rank, max_loras=len(adapters))
        if quantize_4bit:
            kwargs["quantization"] = "bitsandbytes"
        self.llm = LLM(**kwargs)
        self.requests = {
            name: LoRARequest(name, i, str(path))
            for i, (name, path) in enumerate(adapters.items(), start=1)
        }
        self.stats: list[AnswerStats] = []
        stops = stop_token_ids(self.tokenizer, None)
        self.params = SamplingParams(
            temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stops
        )
        log.info("Started vLLM engine model=%s adapters=%s", base_path, ",".join(adapters))

    def answer(
        self, adapter: str | None, conversations: Sequence[Conversation], label: str = ""
    ) -> list[str]:
        progress = _Progress(label or adapter or "base", len(conversations))
        ids = prompt_ids(self.tokenizer, conversations)
        t0 = time.monotonic()
        outputs = self.llm.generate(
            [{"prompt_token_ids": i} for i in ids],
            self.params,
            lora_request=self.requests[adapter] if adapter else None,
            use_tqdm=False,
        )
        elapsed = time.monotonic() - t0
        progress.update(len(outputs))
        self.stats = [
            AnswerStats(len(i), len(o.outputs[0].token_ids), _request_latency(o, elapsed))
            for i, o in zip(ids, outputs, strict=True)
        ]
        return [o.outputs[0].text.strip() for o in outputs]


def _request_latency(output: Any, batch_s: float) -> float:
    """vLLM's own arrival-to-finish time of a request, or the whole batch's time."""
    metrics = getattr(output, "metrics", None)
    arrival = getattr(metrics, "arrival_time", None)
    finished = getattr(metrics, "finished_time", None) or getattr(metrics, "last_token_time", None)
    if isinstance(arrival, float) and isinstance(finished, float) and finished >= arrival:
        return finished - arrival
    return batch_s
