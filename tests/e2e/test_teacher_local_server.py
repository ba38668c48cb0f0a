"""The teacher client (`docmodel_trainer.qa.teacher`) against the real `docmodel-server` (local
engine) serving a real instruct model: SmolLM2-135M-Instruct, under the DocModel's name through
a no-op LoRA adapter (B matrices left at zero), with an API key.

What is checked is the client's documented behaviour against a real OpenAI-compatible server,
not the quality of a 135M teacher: its replies are usually prose, not the JSON asked for, so a
run may end in the documented failure accounting (retries, skipped passages, "more than half
failed") rather than in pairs; either outcome is accepted and checked against what the server
really answered. The server's prompt log (`DOCMODEL_PROMPT_LOG`) shows what arrived, its
`/metrics` how long each request spent in it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from docmodel.api import TeacherSpec
from docmodel_trainer.chunking import Passage, chunk_document, normalise
from docmodel_trainer.parsing import parse_document
from docmodel_trainer.qa.teacher import (
    MAX_ANSWER_WORDS,
    SYSTEM_PROMPT,
    Teacher,
    TeacherError,
    parse_reply,
    prompt,
)

from testkit.models import DEMO_DOCS, smollm2
from testkit.server_factory import (
    SERVED_NAME,
    RunningServer,
    build_adapter,
    free_port,
    server_env,
    start_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

API_KEY = "sk-teacher-e2e-0123456789"
WRONG_KEY = "sk-wrong-key-9876"
CHAT = 'docmodel_server_requests_total{endpoint="/v1/chat/completions",status="%d"}'
CHAT_SECONDS = 'docmodel_server_request_duration_seconds_sum{endpoint="/v1/chat/completions"}'
CANCELLED = "docmodel_server_cancelled_requests_total"
# Short demo sections (source, last heading) the ingest chunker keeps whole.
SECTIONS = [
    ("platform/deploy-service.md", "Prerequisites"),
    ("platform/deploy-service.md", "Rollback"),
    ("platform/deploy-service.md", "Canary Releases"),
    ("finance/purchasing.md", "Paying Suppliers"),
]
# SmolLM2 answers this one greedily with 256 tokens of repetition: slow enough to time out.
RAMBLING = ("platform/feature-flags.md", "Cleanup")
JSON_SHAPE = '{"pairs": [{"question": "...", "answer": "..."}]}'


# ------------------------------------------------------------------------------ fixtures


@dataclass
class Served:
    server: RunningServer
    prompt_log: Path

    @property
    def v1(self) -> str:
        return self.server.url + "/v1"

    def metrics(self) -> dict[str, float]:
        text = httpx.get(self.server.url + "/metrics", timeout=10).text
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def settled_metrics(self, expected: dict[str, float]) -> dict[str, float]:
        """The metrics once each counter in `expected` reached its value: a request is counted
        just after its answer is sent, so the client can see the answer first."""
        deadline = time.monotonic() + 10
        while True:
            values = self.metrics()
            if time.monotonic() > deadline or all(
                values.get(name, 0) >= value for name, value in expected.items()
            ):
                return values
            time.sleep(0.1)

    def prompts(self) -> list[dict[str, Any]]:
        if not self.prompt_log.exists():
            return []
        return [json.loads(line) for line in self.prompt_log.read_text().splitlines()]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("teacher")
    base = smollm2()
    adapter_uri = build_adapter(base, root)  # untrained LoRA: SmolLM2 answers as it is
    prompt_log = root / "prompts.jsonl"
    env = server_env(
        base,
        adapter_uri,
        free_port(),
        root / "work",
        DOCMODEL_API_KEY=API_KEY,
        DOCMODEL_PROMPT_LOG=str(prompt_log),
        # One torch thread: modest on a shared machine, and faster there than two threads
        # whose spinning workers wait for each other.
        DOCMODEL_CPU_THREADS="1",
    )
    server = start_server(env, root / "server.log")
    yield Served(server, prompt_log)
    server.stop()
    log = server.log()
    assert API_KEY not in log and WRONG_KEY not in log, "API keys must never be logged"


@pytest.fixture(scope="module")
def sections() -> dict[tuple[str, str], Passage]:
    """Demo passages, cut as ingest cuts them (its default chunking: 384 tokens, overlap 48)."""
    found = {}
    for source in {s for s, _ in [*SECTIONS, RAMBLING]}:
        doc = parse_document(source, (DEMO_DOCS / source).read_bytes())
        for passage in chunk_document(doc, 384, 48):
            found[(source, passage.heading_path[-1])] = passage
    return found


# ------------------------------------------------------------------------------ helpers


@dataclass
class Exchange:
    """One request as the client sent it and what the server answered."""

    url: str
    authorization: str
    body: dict[str, Any]
    started: float
    ended: float = 0.0
    status: int | None = None
    reply: Any = None
    error: str | None = None  # a transport error (a timeout): no answer

    @property
    def user(self) -> str:
        return str(self.body["messages"][1]["content"])

    @property
    def content(self) -> object:
        return self.reply["choices"][0]["message"]["content"]


class Recorder(httpx.BaseTransport):
    """httpx's own HTTP transport (the requests go to the real server over TCP), keeping a copy
    of every exchange and counting the requests in flight."""

    def __init__(self, max_connections: int):
        self.inner = httpx.HTTPTransport(limits=httpx.Limits(max_connections=max_connections))
        self.exchanges: list[Exchange] = []
        self.in_flight = self.most_in_flight = 0
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(
            str(request.url),
            request.headers.get("authorization", ""),
            json.loads(request.content),
            time.monotonic(),
        )
        with self._lock:
            self.exchanges.append(exchange)
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            response = self.inner.handle_request(request)
            content = response.read()
            exchange.status = response.status_code
            try:
                exchange.reply = json.loads(content)
            except ValueError:
                exchange.reply = content.decode(errors="replace")
            return httpx.Response(response.status_code, headers=response.headers, content=content)
        except httpx.TransportError as exc:
            exchange.error = type(exc).__name__
            raise
        finally:
            exchange.ended = time.monotonic()
            with self._lock:
                self.in_flight -= 1

    def close(self) -> None:
        self.inner.close()


class GreedyTeacher(Teacher):
    """The teacher with its requests' temperature pinned to 0.

    `Teacher` asks for temperature 0.2 without a seed, so what the server answers is sampled
    and differs between runs. With temperature 0 the local engine decodes greedily, and one
    request at a time (maxConcurrency 1, nothing else in flight) is never batched with
    another: the same request then always gets the same reply. Everything else (prompt,
    max_tokens, retries, validation, accounting) is the real client's.
    """

    def _body(self, user: str, max_tokens: int) -> dict[str, object]:
        return {**super()._body(user, max_tokens), "temperature": 0}


class Sleeps(list[float]):
    """The backoff delays the client asked for; they are really slept."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)
        time.sleep(seconds)


def spec(served: Served, **fields: Any) -> TeacherSpec:
    return TeacherSpec(
        **{
            "endpoint": served.v1,
            "model": SERVED_NAME,
            "questionsPerChunk": 1,  # max_tokens 256: the client's cap for one pair
            "timeoutSeconds": 30,
            **fields,
        }
    )


def documented_pairs(content: object, passage_text: str) -> list[tuple[str, str]]:
    """The validation rules of teacher.py's docstring, written out independently: a JSON object
    of the expected shape (or its bare list of pairs), possibly with chatter around it;
    questions that are questions; short answers grounded in the passage (at least half of
    their words appear in it)."""
    if not isinstance(content, str):
        return []
    starts = [i for i in (content.find("{"), content.find("[")) if i >= 0]
    try:
        data, _ = json.JSONDecoder().raw_decode(content[min(starts) :]) if starts else (None, 0)
    except json.JSONDecodeError:
        return []
    items = data.get("pairs") if isinstance(data, dict) else data
    passage_words = set(normalise(passage_text).split())
    pairs = []
    for item in items if isinstance(items, list) else []:
        question, answer = (
            item.get(k) if isinstance(item, dict) else None for k in ("question", "answer")
        )
        if not isinstance(question, str) or not isinstance(answer, str):
            continue
        question, answer = " ".join(question.split()), " ".join(answer.split())
        words = normalise(answer).split()
        if (
            question.endswith("?")
            and 3 <= len(question.split()) <= 60
            and 1 <= len(answer.split()) <= MAX_ANSWER_WORDS
            and words
            and 2 * sum(w in passage_words for w in words) >= len(words)
        ):
            pairs.append((question, answer))
    return pairs


def skipped(caplog: pytest.LogCaptureFixture) -> dict[str, str]:
    """Passage id -> reason, from the client's "Skipped passage" warnings."""
    return {
        str(r.args[1]): str(r.args[2])
        for r in caplog.records
        if r.name == "docmodel.trainer.ingest"
        and r.msg.startswith("Skipped passage")
        and isinstance(r.args, tuple)
    }


# ------------------------------------------------------------------------------ tests


def test_pairs_or_documented_failures_with_requests_in_flight_together(
    served: Served,
    sections: dict[tuple[str, str], Passage],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.WARNING, logger="docmodel.trainer.ingest")
    monkeypatch.setenv("DOCMODEL_TEACHER_API_KEY", API_KEY)  # where the Job's key comes from
    passages = [sections[s] for s in SECTIONS]
    attempts, backoff = 2, 0.2
    # 10 s: a short reply takes a few seconds; SmolLM2 sometimes rambles to the 256-token cap
    # instead, and the timeout (retried, as documented) keeps that from dominating the run.
    teacher_spec = spec(served, maxConcurrency=2, timeoutSeconds=10)
    recorder, sleeps = Recorder(teacher_spec.max_concurrency), Sleeps()
    before, logged = served.metrics(), len(served.prompts())
    teacher = Teacher(
        teacher_spec, transport=recorder, attempts=attempts, backoff_seconds=backoff, sleep=sleeps
    )
    started = time.monotonic()
    with closing(teacher):
        try:
            result, error = teacher.generate(passages), None
        except TeacherError as exc:
            result, error = None, exc
    wall = time.monotonic() - started
    exchanges = recorder.exchanges
    # The server answers 499 to a client that left (a timeout), and counts that too.
    counts = {
        200: sum(e.status == 200 for e in exchanges),
        499: sum(bool(e.error) for e in exchanges),
    }
    after = served.settled_metrics(
        {CHAT % k: before.get(CHAT % k, 0) + n for k, n in counts.items()}
    )
    arrived = served.prompts()[logged:]
    in_server = after[CHAT_SECONDS] - before.get(CHAT_SECONDS, 0)

    for e in exchanges:  # shown when the test fails
        print(
            f"{e.started - started:5.1f}s +{e.ended - e.started:4.1f}s",
            e.status or e.error,
            e.reply,
        )
    print(f"run {wall:.1f}s, in the server {in_server:.1f}s, sleeps {sleeps}, error {error}")

    # The request format, as sent and as the server received it.
    by_user = {prompt(p, 1): p for p in passages}
    assert exchanges and len(arrived) == len(exchanges)
    for code, count in counts.items():
        assert after.get(CHAT % code, 0) - before.get(CHAT % code, 0) == count, code
    for exchange in exchanges:
        assert exchange.url == served.v1 + "/chat/completions"
        assert exchange.authorization == f"Bearer {API_KEY}"
        assert exchange.body["model"] == SERVED_NAME
        assert exchange.body["max_tokens"] == 256
        assert exchange.body["temperature"] == 0.2
        assert exchange.body["messages"] == [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": exchange.user},
        ]
        assert exchange.user in by_user
        assert exchange.status == 200 or exchange.error == "ReadTimeout"
        if exchange.status == 200:  # the server kept to the client's cap
            assert exchange.reply["usage"]["completion_tokens"] <= 256
    for record in arrived:
        assert record["model"] == SERVED_NAME
        assert [m["role"] for m in record["messages"]] == ["system", "user"]
        assert record["messages"][0]["content"] == SYSTEM_PROMPT
        assert JSON_SHAPE in record["messages"][1]["content"]
    assert sorted(e.user for e in exchanges) == sorted(r["messages"][1]["content"] for r in arrived)

    # Concurrency: two requests in flight on the client (maxConcurrency, never more), and in
    # the server: the time the requests spent there (its own measure) adds up to more than
    # the whole run lasted, which requests one after another cannot do.
    assert recorder.most_in_flight == 2
    assert in_server > wall, (in_server, wall)

    # Every reply was judged by the documented rules: a passage with a usable reply got its
    # pairs at once; one without was asked again after a backoff, and skipped after the
    # configured attempts.
    reasons = skipped(caplog)
    for passage in passages:
        asked = [e for e in exchanges if e.user == prompt(passage, 1)]
        judged = [[] if e.error else documented_pairs(e.content, passage.text) for e in asked]
        assert [[] if e.error else parse_reply(e.content, passage.text) for e in asked] == judged
        assert all(not pairs for pairs in judged[:-1]), "a usable reply is not asked again"
        if judged[-1]:
            assert passage.id not in reasons
            assert result is None or result.pairs[passage.id] == judged[-1][:1]
        else:
            assert len(asked) == attempts
            assert reasons[passage.id].endswith(f"(after {attempts} attempts)")
    failed = sum(passage.id in reasons for passage in passages)
    assert len(sleeps) == len(exchanges) - len(passages), "one backoff before every retry"
    assert all(backoff <= s <= backoff * 1.25 for s in sleeps)
    if 2 * failed > len(passages):
        assert result is None and error is not None
        assert f"failed on {failed} of {len(passages)} passages" in str(error)
        assert API_KEY not in str(error)
    else:
        assert result is not None and error is None
        assert sorted(pid for pid, _ in result.failed) == sorted(reasons)
        assert result.requests == len(exchanges)
    assert all(API_KEY not in reason for reason in reasons.values())


def test_an_unusable_greedy_reply_is_judged_as_documented_retried_and_counted(
    served: Served, sections: dict[tuple[str, str], Passage]
) -> None:
    # Deterministic: the teacher's own request with temperature 0, one at a time, so the
    # server decodes greedily and alone (see GreedyTeacher). SmolLM2 answers this passage
    # in prose, which has no JSON: unusable under the first documented rule.
    passage = sections[("platform/deploy-service.md", "Canary Releases")]
    teacher_spec = spec(served, maxConcurrency=1)
    recorder, sleeps = Recorder(1), Sleeps()
    teacher = GreedyTeacher(
        teacher_spec, api_key=API_KEY, transport=recorder, attempts=2, sleep=sleeps
    )
    with closing(teacher):
        try:
            result, error = teacher.generate([passage]), None
        except TeacherError as exc:
            result, error = None, exc
    replies = [e.content for e in recorder.exchanges]
    assert all(e.status == 200 for e in recorder.exchanges)
    assert all(isinstance(reply, str) and reply for reply in replies)
    assert len(set(replies)) == 1, "greedy decoding of one request gives one reply"
    expected = documented_pairs(replies[0], passage.text)
    assert parse_reply(replies[0], passage.text) == expected
    if expected:
        assert result is not None and result.pairs[passage.id] == expected[:1]
        assert len(replies) == 1 and not sleeps
    else:
        assert result is None and error is not None
        assert len(replies) == 2 and len(sleeps) == 1
        assert str(error).endswith(
            "failed on 1 of 1 passages; last reason: reply held no usable question/answer "
            "pairs (after 2 attempts)"
        )


@pytest.mark.parametrize("wrong", ["key", "model", "endpoint"])
def test_a_refusal_stops_the_run_at_once(
    wrong: str, served: Served, sections: dict[tuple[str, str], Passage]
) -> None:
    """401 for a wrong key, 404 for a model or a path the server does not have: no retry
    (a backoff of a minute would show), no passage after the refusal is sent."""
    passages = [sections[s] for s in SECTIONS]
    fields: dict[str, Any] = {"maxConcurrency": 2}
    key = WRONG_KEY if wrong == "key" else API_KEY
    if wrong == "model":
        fields["model"] = "no-such-model"
    if wrong == "endpoint":
        fields["endpoint"] = served.server.url  # without /v1: /chat/completions is not there
    status = 401 if wrong == "key" else 404
    recorder, sleeps = Recorder(2), Sleeps()
    teacher = Teacher(
        spec(served, **fields), api_key=key, transport=recorder, backoff_seconds=60, sleep=sleeps
    )
    before, logged = served.metrics(), len(served.prompts())
    started = time.monotonic()
    with closing(teacher), pytest.raises(TeacherError) as caught:
        teacher.generate(passages)
    assert time.monotonic() - started < 15
    assert not sleeps, "a refusal is not retried"
    assert 1 <= len(recorder.exchanges) <= 2, "passages after the refusal are not sent"
    assert {e.status for e in recorder.exchanges} == {status}
    message = str(caught.value)
    if wrong == "key":
        assert f"refused the API key (HTTP {status})" in message
        assert recorder.exchanges[0].reply["error"]["type"] == "AuthenticationError"
        assert key not in message
    else:
        assert "not found" in message and "(HTTP 404)" in message
    if wrong != "endpoint":  # a path the server does not serve is counted as "other"
        count = before.get(CHAT % status, 0) + len(recorder.exchanges)
        after = served.settled_metrics({CHAT % status: count})
        assert after[CHAT % status] - before.get(CHAT % status, 0) == len(recorder.exchanges)
    if wrong == "model":
        assert recorder.exchanges[0].reply["error"]["message"] == (
            "The model `no-such-model` does not exist."
        )
    assert len(served.prompts()) == logged, "nothing was generated"


def test_a_timeout_is_retried_and_the_server_stops_generating(
    served: Served, sections: dict[tuple[str, str], Passage]
) -> None:
    # Deterministic: greedily, SmolLM2 answers this passage with 256 tokens of repetition,
    # far more than the engine writes in the one-second timeout.
    passage = sections[RAMBLING]
    recorder, sleeps = Recorder(1), Sleeps()
    teacher = GreedyTeacher(
        spec(served, maxConcurrency=1, timeoutSeconds=1),
        api_key=API_KEY,
        transport=recorder,
        attempts=2,
        backoff_seconds=0.2,
        sleep=sleeps,
    )
    before = served.metrics()
    with closing(teacher), pytest.raises(TeacherError) as caught:
        teacher.generate([passage])
    assert [e.error for e in recorder.exchanges] == ["ReadTimeout", "ReadTimeout"]
    assert len(sleeps) == 1
    assert str(caught.value).endswith(
        "failed on 1 of 1 passages; last reason: timed out after 1s (after 2 attempts)"
    )
    # The server saw each client leave (499) and stopped its generation (or dropped it before
    # it started).
    after = served.settled_metrics(
        {CHAT % 499: before.get(CHAT % 499, 0) + 2, CANCELLED: before.get(CANCELLED, 0) + 2}
    )
    assert after.get(CHAT % 499, 0) - before.get(CHAT % 499, 0) == 2
    assert after.get(CANCELLED, 0) - before.get(CANCELLED, 0) == 2
