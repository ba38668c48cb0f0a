"""The local generation engine: a base model plus a LoRA adapter, with transformers and peft.

For CPU laptops, local mode and tests (vLLM serves on GPUs). One worker thread owns the model
and takes jobs from a queue; callers receive events (text deltas, then a finish) through a
callback that is called from the worker thread.

Jobs waiting in the queue are decoded together, up to `max_batch_size` at a time (all with the
adapter on, or all off): prompts are left-padded, and one forward pass per step serves every
row, each with its own KV cache row, sampling settings and stop conditions. A row finishes (and
its caller is answered) as soon as it is done; jobs that arrive meanwhile wait for the next
batch. A job whose `cancelled` event is set (its client left) is dropped from the queue, or
its row stops at the next step. Each row is greedy when its temperature is 0, otherwise temperature and top-p sampling
(seeded per request when `seed` is given). Text is emitted only once it can no longer change:
an incomplete UTF-8 sequence or the beginning of a stop string is held back, so streamed
deltas always add up to the final text.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from docmodel.modelfacts import peft_compat, stop_token_ids, use_adapter

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


@dataclass(eq=False)
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
    """Owns the model; `submit` queues a job, the worker thread decodes queued jobs in batches."""

    def __init__(self, model: Any, tokenizer: Any, max_model_len: int, max_batch_size: int = 8):
        self.model = model
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.max_batch_size = max_batch_size
        self.eos_ids = self._eos_ids(model, tokenizer)
        # Like vLLM's `--generation-config auto`: the model's own sampling defaults apply to
        # requests that do not set them.
        generation = getattr(model, "generation_config", None)
        self.default_temperature = float(getattr(generation, "temperature", None) or 1.0)
        self.default_top_p = float(getattr(generation, "top_p", None) or 1.0)
        self.pad_id = next(
            i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id, 0) if i is not None
        )
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._worker = threading.Thread(target=self._loop, name="docmodel-generate", daemon=True)
        self.ready = False
        self.batches = 0  # forward-pass groups run, and the requests they held
        self.batched_requests = 0
        self.cancelled_requests = 0  # jobs dropped or stopped early because their client left
        # Fast tokenizers are not safe to share between threads: the event loop encodes prompts
        # while the worker decodes outputs.
        self._tokenizer_lock = threading.Lock()

    # ---------------------------------------------------------------- loading

    @classmethod
    def load(
        cls,
        base: str | Path,
        adapter_dir: Path,
        max_model_len: int,
        max_batch_size: int = 8,
        threads: int | None = None,
    ) -> LocalEngine:
        """Load base + adapter on the CPU (float32), ready to `start`; `threads` sets torch's."""
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        tokenizer = AutoTokenizer.from_pretrained(str(base))
        base_model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
        with peft_compat():
            model: Any = PeftModel.from_pretrained(base_model, str(adapter_dir))
        model.eval()
        limit = getattr(model.config, "max_position_embeddings", None) or max_model_len
        engine = cls(model, tokenizer, min(max_model_len, int(limit)), max_batch_size)
        log.info(
            "Loaded model base=%s adapter=%s max_model_len=%d max_batch_size=%d threads=%d",
            base,
            adapter_dir,
            engine.max_model_len,
            max_batch_size,
            torch.get_num_threads(),
        )
        return engine

    @staticmethod
    def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
        return set(stop_token_ids(tokenizer, getattr(model, "generation_config", None)))

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
        pending: deque[Job] = deque()
        stopping = False
        while pending or not stopping:
            if not pending:
                first = self._queue.get()
                if first is None:
                    return
                pending.append(first)
            while True:  # everything queued meanwhile joins the choice of the next batch
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                else:
                    pending.append(more)
            batch = self._next_batch(pending)
            if not batch:
                continue
            self.batches += 1
            self.batched_requests += len(batch)
            try:
                self._generate(batch)
            except Exception as exc:
                log.exception("Generation failed error=%s batch=%d", type(exc).__name__, len(batch))
                for job in batch:
                    with contextlib.suppress(Exception):
                        job.emit(Failed(f"generation failed: {type(exc).__name__}: {exc}"))

    def _next_batch(self, pending: deque[Job]) -> list[Job]:
        """Up to `max_batch_size` queued jobs, oldest first, that all want the adapter on (or off)."""
        live = [job for job in pending if not job.cancelled.is_set()]
        self.cancelled_requests += len(pending) - len(live)
        pending.clear()
        if not live:
            return []
        adapter = live[0].use_adapter
        batch = [job for job in live if job.use_adapter == adapter][: self.max_batch_size]
        chosen = {id(job) for job in batch}
        pending.extend(job for job in live if id(job) not in chosen)
        return batch

    def _generate(self, jobs: list[Job]) -> None:
        """Decode `jobs` together: prompts left-padded, one forward pass per step for all rows."""
        import torch

        rows = [_Row(job, self._decode) for job in jobs]
        width = max(len(job.prompt_ids) for job in jobs)
        pad = self.pad_id
        input_ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in jobs])
        mask = torch.tensor(
            [[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in jobs]
        )
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        # The adapter merged into the weights (no per-token LoRA cost), or off for requests
        # to the base model's name (peft unmerges as it runs; the next adapter batch merges).
        weights = use_adapter(
            self.model, self.model.active_adapter if jobs[0].use_adapter else None
        )
        with torch.inference_mode(), weights:
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,  # only the last position is sampled from
            )
            next_position = positions[:, -1:] + 1
            while True:
                logits = out.logits[:, -1]
                tokens = [row.step(logits[i], self.eos_ids) for i, row in enumerate(rows)]
                if all(row.done for row in rows):
                    self.cancelled_requests += sum(row.cancelled for row in rows)
                    return
                mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype)], dim=1)
                out = self.model(
                    input_ids=torch.tensor([[pad if t is None else t] for t in tokens]),
                    attention_mask=mask,
                    position_ids=next_position,
                    past_key_values=out.past_key_values,
                    use_cache=True,
                    logits_to_keep=1,
                )
                next_position = next_position + 1

    def _decode(self, ids: list[int]) -> str:
        if not ids:
            return ""
        with self._tokenizer_lock:
            text: str = self.tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        return text


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


class _Row:
    """One job's decoding state inside a batch: tokens so far, text sent, whether it is done."""

    def __init__(self, job: Job, decode: Callable[[list[int]], str]):
        import torch

        self.job = job
        self.decode = decode
        self.generated: list[int] = []
        self.emitted = 0
        self.done = False
        self.cancelled = False
        params = job.params
        self.generator = None
        if params.temperature > 0 and params.seed is not None:
            self.generator = torch.Generator().manual_seed(params.seed)

    def step(self, logits: Any, eos_ids: set[int]) -> int | None:
        """Take the next token from `logits`; returns it, or None once the row is done."""
        if self.done:
            return None
        job, params = self.job, self.job.params
        if job.cancelled.is_set():  # nobody is listening any more
            self.done = self.cancelled = True
            return None
        token = _pick(logits, params, self.generator)
        if token in eos_ids:
            self._finish("stop")
            return None
        self.generated.append(token)
        text = self.decode(self.generated)
        cut = min((i for s in params.stop if (i := text.find(s)) >= 0), default=-1)
        if cut >= 0:
            if cut > self.emitted:
                job.emit(TextDelta(text[self.emitted : cut]))
            self.emitted = len(text)  # the rest is never sent
            self._finish("stop")
            return None
        safe = len(text) - _held_back(text, params.stop)
        if safe > self.emitted:
            job.emit(TextDelta(text[self.emitted : safe]))
            self.emitted = safe
        if len(self.generated) >= params.max_tokens:
            self._finish("length")
            return None
        return token

    def _finish(self, reason: str) -> None:
        # What was held back can no longer change: the generation is over.
        text = self.decode(self.generated)
        if len(text) > self.emitted:
            self.job.emit(TextDelta(text[self.emitted :]))
        self.done = True
        self.job.emit(Finished(reason, len(self.job.prompt_ids), len(self.generated)))
