"""The local generation engine: a base model plus a LoRA adapter, with transformers and peft.

For CPU laptops, local mode and tests (vLLM serves on GPUs). One worker thread owns the model
and runs one request at a time from a queue, so concurrent requests never share a KV cache or
interleave on the model; callers receive events (text deltas, then a finish) through a callback
that is called from the worker thread.

Decoding is a plain loop over the model with its KV cache: greedy when temperature is 0,
otherwise temperature and top-p sampling (seeded per request when `seed` is given). Text is
emitted only once it can no longer change: an incomplete UTF-8 sequence or the beginning of a
stop string is held back, so streamed deltas always add up to the final text.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("docmodel.server")


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class TextDelta:
    text: str


@dataclass(frozen=True)
class Finished:
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class Failed:
    message: str


Event = TextDelta | Finished | Failed


@dataclass
class Job:
    prompt_ids: list[int]
    params: SamplingParams
    use_adapter: bool
    emit: Callable[[Event], None]
    cancelled: threading.Event = field(default_factory=threading.Event)


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many trailing characters of `text` may still change or start a stop string."""
    hold = 0
    if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence decodes as U+FFFD
        hold = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return hold


class LocalEngine:
    """Owns the model; `submit` queues a job, the worker thread runs jobs one by one."""

    def __init__(self, model: Any, tokenizer: Any, max_model_len: int):
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.eos_ids = self._eos_ids(model, tokenizer)
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._loop, name="docmodel-generate", daemon=True)
        self.ready = False
        # Fast tokenizers are not safe to share between threads: the event loop encodes prompts
        # while the worker decodes outputs.
        self._tokenizer_lock = threading.Lock()

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(cls, base: str | Path, adapter_dir: Path, max_model_len: int) -> LocalEngine:
        """Load base + adapter on the CPU (float32), ready to `start`."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base))
        model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        with warnings.catch_warnings():
            # peft reads the deprecated `is_gradient_checkpointing` property of transformers 5
            # models while wrapping them; nothing on our side uses it.
            warnings.filterwarnings(
                "ignore",
                message=r".*is_gradient_checkpointing.* is deprecated",
                category=FutureWarning,
            )
            model = PeftModel.from_pretrained(model, str(adapter_dir))
        model.eval()
        limit = getattr(model.config, "max_position_embeddings", None) or max_model_len
        engine = cls(model, tokenizer, min(max_model_len, int(limit)))
        log.info(
            "Loaded model base=%s adapter=%s maxModelLen=%d",
            base,
            adapter_dir,
            engine.max_model_len,
        )
        return engine

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        for value in (
            tokenizer.eos_token_id,
            getattr(getattr(model, "generation_config", None), "eos_token_id", None),
        ):
            if isinstance(value, int):
                ids.add(value)
            elif isinstance(value, list | tuple):
                ids.update(int(v) for v in value)
        return ids

    # ---------------------------------------------------------------- prompts

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        with self._tokenizer_lock:
            text = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        # Chat templates write the BOS token themselves; plain prompts get it here.
        with self._tokenizer_lock:
            ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        bos = self.tokenizer.bos_token_id
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        return list(ids)

    # ---------------------------------------------------------------- worker

    def start(self) -> None:
        """Start the worker and generate once, so that `ready` means the model answers."""
        self._worker.start()
        done = threading.Event()
        outcome: list[Event] = []

        def emit(event: Event) -> None:
            if isinstance(event, Finished | Failed):
                outcome.append(event)
                done.set()

        self.submit(
            Job(self.encode("Hello"), SamplingParams(max_tokens=1, temperature=0), True, emit)
        )
        done.wait()
        if isinstance(outcome[0], Failed):
            raise RuntimeError(f"warm-up generation failed: {outcome[0].message}")
        self.ready = True

    def alive(self) -> bool:
        return self.ready and self._worker.is_alive()

    def waiting(self) -> int:
        return self._queue.qsize()

    def submit(self, job: Job) -> None:
        self._queue.put(job)

    def stop(self) -> None:
        self._queue.put(None)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if job.cancelled.is_set():
                continue
            try:
                self._generate(job)
            except Exception as exc:
                log.exception("Failed generation error=%s", type(exc).__name__)
                with contextlib.suppress(Exception):
                    job.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))

    def _generate(self, job: Job) -> None:
        import torch

        params = job.params
        generator = None
        if params.temperature > 0 and params.seed is not None:
            generator = torch.Generator().manual_seed(params.seed)
        adapter_off = contextlib.nullcontext() if job.use_adapter else self.model.disable_adapter()
        generated: list[int] = []
        emitted = 0
        finish = "length"
        with torch.inference_mode(), adapter_off:
            out = self.model(input_ids=torch.tensor([job.prompt_ids]), use_cache=True)
            while len(generated) < params.max_tokens and not job.cancelled.is_set():
                token = self._pick(out.logits[0, -1], params, generator)
                if token in self.eos_ids:
                    finish = "stop"
                    break
                generated.append(token)
                text = self._decode(generated)
                cut = min((i for s in params.stop if (i := text.find(s)) >= 0), default=-1)
                if cut >= 0:
                    if cut > emitted:
                        job.emit(TextDelta(text[emitted:cut]))
                    job.emit(Finished("stop", len(job.prompt_ids), len(generated)))
                    return
                safe = len(text) - _held_back(text, params.stop)
                if safe > emitted:
                    job.emit(TextDelta(text[emitted:safe]))
                    emitted = safe
                if len(generated) < params.max_tokens:
                    out = self.model(
                        input_ids=torch.tensor([[token]]),
                        past_key_values=out.past_key_values,
                        use_cache=True,
                    )
        # What was held back can no longer change: the generation is over.
        text = self._decode(generated)
        if len(text) > emitted:
            job.emit(TextDelta(text[emitted:]))
        job.emit(Finished(finish, len(job.prompt_ids), len(generated)))

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        with self._tokenizer_lock:
            text: str = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        return text

    @staticmethod
    def _pick(logits: Any, params: SamplingParams, generator: Any) -> int:
        import torch

        if params.temperature == 0:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits.float() / params.temperature, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < params.top_p
            sorted_probs = sorted_probs * keep
            probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator))
