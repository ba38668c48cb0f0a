"""Question/answer pairs, and rewrites of passages, written by a teacher model behind any
OpenAI-compatible API.

One chat completion per passage asks for `questionsPerChunk` specific, checkable questions
answerable from the passage alone, as JSON. Replies are validated: JSON of the expected shape,
questions that are questions, short answers that are grounded in the passage (most of their
words appear in it). With `dataset.rewritesPerPassage`, a second request per passage asks for
that many rewrites (the same facts in other words), validated for length and for keeping the
passage's words. Requests run `maxConcurrency` at a time, each with `timeoutSeconds`.

Failure policy:
- a timeout, a connection error, HTTP 429/5xx or an unusable reply is retried with
  exponential backoff (`attempts` tries in all); a passage that still fails is skipped and
  counted (`TeacherResult.failed`, listed in the dataset manifest);
- HTTP 401/403/404 (wrong key, wrong endpoint or model) stops the run at once, and so does a
  run where more than half of the passages failed: `TeacherError`, which ingest maps to
  `EXIT_UPSTREAM`.

The API key comes from `DOCMODEL_TEACHER_API_KEY` and is never logged or stored.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import httpx

from docmodel.api import TeacherSpec
from docmodel_trainer.chunking import Passage, normalise
from docmodel_trainer.common import JobSettings

log = logging.getLogger("docmodel.trainer.ingest")

_T = TypeVar("_T")
MAX_ANSWER_WORDS = 30

SYSTEM_PROMPT = (
    "You write question/answer pairs that test whether someone knows a company's internal "
    "documentation. You reply with JSON only."
)
USER_PROMPT = """Passage from "{title}" (section: {section}):
---
{text}
---
Write {n} question/answer pairs about this passage.
Rules:
- Each question must be answerable from the passage alone, and specific: name the system,
  setting or term it asks about, so it makes sense without seeing the passage.
- Ask about checkable facts: names, numbers, defaults, owners, commands, definitions.
- Answers are short (a few words), copied from the passage where possible.
- No yes/no questions, no questions about "the passage" or "the text".
Reply with exactly this JSON shape and nothing else:
{{"pairs": [{{"question": "...", "answer": "..."}}]}}"""
REWRITE_PROMPT = """Passage from "{title}" (section: {section}):
---
{text}
---
Rewrite this passage {n} times. Each rewrite states every fact of the passage (names, numbers,
defaults, owners, commands) exactly, in different words and a different order, as prose.
Add nothing that the passage does not say.
Reply with exactly this JSON shape and nothing else:
{{"rewrites": ["...", "..."]}}"""


class TeacherError(Exception):
    """The teacher cannot be used (auth, endpoint, or too many failures)."""


class _Retryable(Exception):
    pass


@dataclass
class TeacherResult:
    pairs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # passage id -> pairs
    rewrites: dict[str, list[str]] = field(default_factory=dict)  # passage id -> rewrites
    failed: list[tuple[str, str]] = field(default_factory=list)  # (passage id, reason)
    requests: int = 0


class Teacher:
    def __init__(
        self,
        spec: TeacherSpec,
        *,
        api_key: str | None = None,
        transport: httpx.BaseTransport | None = None,
        attempts: int = 4,
        backoff_seconds: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.spec = spec
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.sleep = sleep
        if api_key is None:
            secret = JobSettings.read().teacher_api_key
            api_key = secret.get_secret_value() if secret is not None else None
        self._api_key = api_key or None
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        self._client = httpx.Client(
            base_url=spec.endpoint.rstrip("/") + "/",
            headers=headers,
            timeout=httpx.Timeout(float(spec.timeout_seconds)),
            limits=httpx.Limits(max_connections=spec.max_concurrency),
            transport=transport,
        )
        self._lock = threading.Lock()
        self._fatal: TeacherError | None = None

    def close(self) -> None:
        self._client.close()

    def generate(self, passages: Sequence[Passage]) -> TeacherResult:
        """`questionsPerChunk` question/answer pairs per passage."""

        def ask(passage: Passage, result: TeacherResult) -> None:
            n = self.spec.questions_per_chunk
            body = self._body(prompt(passage, n), 256 * n)
            pairs = self._ask(body, result, lambda c: self._pairs(c, passage))
            with self._lock:
                result.pairs[passage.id] = pairs

        return self._each(passages, ask, "pairs")

    def rewrite(self, passages: Sequence[Passage], n: int) -> TeacherResult:
        """`n` rewrites per passage: the same facts in other words, trained on as text."""

        def ask(passage: Passage, result: TeacherResult) -> None:
            words = len(passage.text.split())
            body = self._body(rewrite_prompt(passage, n), n * (2 * words + 64))
            texts = self._ask(body, result, lambda c: self._rewrites(c, passage, n))
            with self._lock:
                result.rewrites[passage.id] = texts

        return self._each(passages, ask, "rewrites")

    def _body(self, user: str, max_tokens: int) -> dict[str, object]:
        return {
            "model": self.spec.model,
            "temperature": 0.2,
            "max_tokens": max_tokens,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": user},
            ],
        }

    def _pairs(self, content: object, passage: Passage) -> list[tuple[str, str]]:
        pairs = parse_reply(content, passage.text)
        if not pairs:
            raise _Retryable("reply held no usable question/answer pairs")
        return pairs[: self.spec.questions_per_chunk]

    def _rewrites(self, content: object, passage: Passage, n: int) -> list[str]:
        texts = parse_rewrites(content, passage.text)
        if not texts:
            raise _Retryable("reply held no usable rewrite")
        return texts[:n]

    def _each(
        self,
        passages: Sequence[Passage],
        ask: Callable[[Passage, TeacherResult], None],
        what: str,
    ) -> TeacherResult:
        result = TeacherResult()
        done = 0

        def one(passage: Passage) -> None:
            nonlocal done
            if self._fatal is not None:
                return
            try:
                ask(passage, result)
            except _Retryable as exc:
                with self._lock:
                    result.failed.append((passage.id, self._redact(str(exc))))
                log.warning(
                    "Skipped passage source=%s chunk=%s reason=%s",
                    passage.source,
                    passage.id,
                    self._redact(str(exc)),
                )
            except TeacherError as exc:
                self._fatal = exc
            with self._lock:
                done += 1
                if done % 50 == 0 or done == len(passages):
                    log.info("Generated teacher %s passages=%d/%d", what, done, len(passages))

        with ThreadPoolExecutor(max_workers=self.spec.max_concurrency) as pool:
            list(pool.map(one, passages))
        if self._fatal is not None:
            raise self._fatal
        if passages and len(result.failed) * 2 > len(passages):
            raise TeacherError(
                f"teacher {self.spec.model} at {self.spec.endpoint} failed on "
                f"{len(result.failed)} of {len(passages)} passages; last reason: "
                f"{result.failed[-1][1]}"
            )
        return result

    def _ask(
        self,
        body: dict[str, object],
        result: TeacherResult,
        parse: Callable[[object], _T],
    ) -> _T:
        last = "no attempt made"
        for attempt in range(self.attempts):
            if attempt:
                delay = self.backoff_seconds * 2 ** (attempt - 1) * (1 + random.random() / 4)
                self.sleep(delay)
            with self._lock:
                result.requests += 1
            try:
                return parse(self._once(body))
            except _Retryable as exc:
                last = str(exc)
        raise _Retryable(f"{last} (after {self.attempts} attempts)")

    def _once(self, body: dict[str, object]) -> object:
        """The reply's message content; raises `_Retryable` or `TeacherError`."""
        where = f"{self.spec.endpoint} (model {self.spec.model})"
        try:
            response = self._client.post("chat/completions", json=body)
        except httpx.TimeoutException:
            raise _Retryable(f"timed out after {self.spec.timeout_seconds}s") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"cannot reach {where}: {type(exc).__name__}") from None
        status = response.status_code
        if status in (401, 403):
            raise TeacherError(f"teacher at {where} refused the API key (HTTP {status})")
        if status == 404:
            raise TeacherError(f"teacher endpoint or model not found at {where} (HTTP 404)")
        if status == 429 or status >= 500:
            raise _Retryable(f"HTTP {status}")
        if status >= 400:
            raise TeacherError(f"teacher at {where} rejected the request (HTTP {status})")
        try:
            return response.json()["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable("reply is not an OpenAI chat completion") from None

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "<redacted>") if self._api_key else text


def prompt(passage: Passage, n: int, template: str = USER_PROMPT) -> str:
    """The request for `n` pairs (or, with `REWRITE_PROMPT`, `n` rewrites) of a passage."""
    return template.format(
        title=passage.title or passage.source,
        section=" > ".join(passage.heading_path) or "(none)",
        text=passage.text,
        n=n,
    )


def rewrite_prompt(passage: Passage, n: int) -> str:
    return prompt(passage, n, REWRITE_PROMPT)


def _json_items(content: object, key: str) -> object:
    """The list under `key` of the JSON object in a reply (or a bare JSON list); None if none."""
    if not isinstance(content, str):
        return None
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        data, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return data.get(key) if isinstance(data, dict) else data


def parse_rewrites(content: object, passage_text: str) -> list[str]:
    """Usable rewrites from a reply: texts of a plausible length (a third to three times the
    passage's words) that keep most of its words (a rewrite restates, it does not invent)."""
    items = _json_items(content, "rewrites")
    if not isinstance(items, list):
        return []
    source_words = normalise(passage_text).split()
    vocabulary = set(source_words)
    out = []
    for item in items:
        if not isinstance(item, str):
            continue
        words = normalise(item).split()
        if not len(source_words) / 3 <= len(words) <= 3 * len(source_words) + 10:
            continue
        if sum(w in vocabulary for w in words) < len(words) / 2:
            continue
        out.append(" ".join(item.split()))
    return out


def parse_reply(content: object, passage_text: str) -> list[tuple[str, str]]:
    """Valid, grounded (question, answer) pairs from a reply; [] when there are none."""
    items = _json_items(content, "pairs")
    if not isinstance(items, list):
        return []
    passage_words = set(normalise(passage_text).split())
    out = []
    for item in items:
        if not isinstance(item, dict):
            continue
        question, answer = item.get("question"), item.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            continue
        question, answer = " ".join(question.split()), " ".join(answer.split())
        if not question.endswith("?") or not 3 <= len(question.split()) <= 60:
            continue
        if not 1 <= len(answer.split()) <= MAX_ANSWER_WORDS:
            continue
        words = normalise(answer).split()
        if not words or sum(w in passage_words for w in words) < len(words) / 2:
            continue  # not grounded in the passage
        out.append((question, answer))
    return out
