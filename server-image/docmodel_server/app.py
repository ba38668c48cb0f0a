"""The local OpenAI-compatible server (FastAPI) in front of `LocalEngine`: CPU, local mode, tests.

It speaks the subset of vLLM's OpenAI API that DocModel clients use, in the same shapes:

    GET  /v1/models             the served name (the adapter) and the base model's name
    POST /v1/chat/completions   messages -> one choice; `stream: true` streams SSE chunks
    POST /v1/completions        prompt -> one choice; streams too
    GET  /health                200 while the process and its generation worker are up (open)
    GET  /ready                 200 once the model has answered a warm-up request (open)
    GET  /metrics               Prometheus text format (open)

Streams are `data: <chunk JSON>` events: a role delta first (chat), then content deltas, then a
chunk that carries `finish_reason`, an optional usage chunk (`stream_options.include_usage`),
then `data: [DONE]`. A client that disconnects stops its generation, streaming or not (the
worker drops the job, or stops its row at the next token). With an API key set, `/v1/*` needs
`Authorization: Bearer <key>` and answers 401 otherwise. Errors use vLLM's body:
`{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field, field_validator

from docmodel_server.app_metrics import (
    ASGIApp,
    MetricsMiddleware,
    Receive,
    Scope,
    Send,
    ServerMetrics,
)
from docmodel_server.context import RequestContext
from docmodel_server.engine import Event, Finished, Job, SamplingParams, TextDelta

log = logging.getLogger("docmodel.server")


class Engine(Protocol):
    max_model_len: int
    default_temperature: float
    default_top_p: float
    batches: int
    batched_requests: int
    cancelled_requests: int

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]: ...
    def encode(self, text: str) -> list[int]: ...
    def submit(self, job: Job) -> None: ...
    def alive(self) -> bool: ...
    def waiting(self) -> int: ...


# ------------------------------------------------------------------------------- errors


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    404: "NotFoundError",
    499: "ClientClosedRequestError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "Error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param), status_code=status)


class ApiKeyMiddleware:
    """Requires `Authorization: Bearer <key>` on `/v1/*`; probes and metrics stay open."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith("/v1"):
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                response = error_response(401, "Invalid or missing API key.")
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


# ------------------------------------------------------------------------------- requests


class StreamOptions(BaseModel):
    include_usage: bool = False


class TextPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class _Generation(BaseModel):
    """Fields that chat and completion requests share (unknown fields are ignored, as vLLM does)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    n: int = 1
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported")
        return value

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes up to 4 non-empty strings")
        return value

    def stop_strings(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)


class ChatCompletionRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Generation):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and len(value) != 1:
            raise ValueError("exactly one prompt is supported")
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]


def _param(loc: tuple[int | str, ...]) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) or "body"


# ------------------------------------------------------------------------------- responses


@dataclass(frozen=True)
class Shape:
    """One response shape, built the same way streaming or not: a chat completion (a message,
    streamed as deltas after a role delta) or a text completion (text, streamed as text)."""

    id_prefix: str
    object: str  # of the whole answer
    chunk_object: str  # of each streamed chunk
    chat: bool

    def choice(self, text: str | None, finish: str | None, *, streamed: bool) -> dict[str, Any]:
        """The one choice of an answer (`streamed=False`) or of a chunk; `text` None: none."""
        body: dict[str, Any]
        if not self.chat:
            body = {"text": text or ""}
        elif streamed:
            body = {"delta": {} if text is None else {"content": text}}
        else:
            body = {"message": {"role": "assistant", "content": text or ""}}
        return {"index": 0, **body, "logprobs": None, "finish_reason": finish}

    def opening(self) -> dict[str, Any] | None:
        """The choice a stream starts with: chat announces the assistant's role."""
        if not self.chat:
            return None
        return {
            "index": 0,
            "delta": {"role": "assistant", "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }


CHAT = Shape("chatcmpl-", "chat.completion", "chat.completion.chunk", chat=True)
COMPLETION = Shape("cmpl-", "text_completion", "text_completion", chat=False)


def usage(done: Finished) -> dict[str, int]:
    return {
        "prompt_tokens": done.prompt_tokens,
        "completion_tokens": done.completion_tokens,
        "total_tokens": done.prompt_tokens + done.completion_tokens,
    }


def sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


async def _disconnected(request: Request) -> None:
    # The body has been read: the next message is the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Generator:
    """The steps of one generation request against `engine`: check the prompt's length and
    settle the sampling, submit the job, then answer whole or stream, in `shape`."""

    def __init__(self, engine: Engine, metrics: ServerMetrics):
        self.engine = engine
        self.metrics = metrics

    def sampling(
        self, req: _Generation, prompt_len: int, max_tokens: int | None, field: str
    ) -> SamplingParams:
        limit = self.engine.max_model_len
        if prompt_len >= limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens; the {field} "
                f"use {prompt_len}.",
                field,
            )
        if max_tokens is None:
            max_tokens = limit - prompt_len
        elif prompt_len + max_tokens > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {limit} tokens. However, you "
                f"requested {prompt_len + max_tokens} tokens ({prompt_len} in the {field}, "
                f"{max_tokens} in the completion). Reduce max_tokens or the {field}.",
                "max_tokens",
            )
        engine = self.engine
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=engine.default_temperature if req.temperature is None else req.temperature,
            top_p=engine.default_top_p if req.top_p is None else req.top_p,
            stop=req.stop_strings(),
            seed=req.seed,
        )

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, adapter: bool
    ) -> tuple[Job, asyncio.Queue[Event]]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()

        def emit(event: Event) -> None:
            loop.call_soon_threadsafe(events.put_nowait, event)

        job = Job(prompt_ids, params, adapter, emit)
        self.engine.submit(job)
        return job, events

    def account(self, done: Finished) -> None:
        self.metrics.prompt_tokens.inc(done.prompt_tokens)
        self.metrics.generated_tokens.inc(done.completion_tokens)

    async def respond(
        self,
        shape: Shape,
        req: _Generation,
        request: Request,
        prompt_ids: list[int],
        max_tokens: int | None,
        field: str,
        adapter: bool,
    ) -> dict[str, Any] | StreamingResponse:
        """The whole request after the prompt is tokenized: one builder for both paths."""
        params = self.sampling(req, len(prompt_ids), max_tokens, field)
        job, events = self.submit(prompt_ids, params, adapter)
        head = {
            "id": f"{shape.id_prefix}{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": req.model,
        }
        if req.stream:
            include = bool(req.stream_options and req.stream_options.include_usage)
            return StreamingResponse(
                self.stream(shape, head, job, events, include),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        text, done = await self.answer(request, job, events)
        return {
            **head,
            "object": shape.object,
            "choices": [shape.choice(text, done.finish_reason, streamed=False)],
            "usage": usage(done),
        }

    async def collect(self, job: Job, events: asyncio.Queue[Event]) -> tuple[str, Finished]:
        parts: list[str] = []
        try:
            while True:
                event = await events.get()
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                elif isinstance(event, Finished):
                    self.account(event)
                    return "".join(parts), event
                else:
                    raise ApiError(500, event.message)
        finally:
            # A no-op once finished; when `answer` cancels the collection (the client left),
            # the worker drops the job, or stops its row at the next token.
            job.cancelled.set()

    async def answer(
        self, request: Request, job: Job, events: asyncio.Queue[Event]
    ) -> tuple[str, Finished]:
        """`collect`, raced against the client's disconnect (which Starlette does not act on
        for a handler that is still running): a client that leaves cancels its generation."""
        collecting = asyncio.ensure_future(self.collect(job, events))
        watching = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({collecting, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            collecting.cancel()  # a no-op once done
        if collecting.done() and not collecting.cancelled():
            return collecting.result()
        log.info("Cancelled generation of a disconnected client endpoint=%s", request.url.path)
        raise ApiError(499, "The client closed the request.")

    async def stream(
        self,
        shape: Shape,
        head: dict[str, Any],
        job: Job,
        events: asyncio.Queue[Event],
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        head = {**head, "object": shape.chunk_object}
        try:
            opening = shape.opening()
            if opening is not None:
                yield sse({**head, "choices": [opening]})
            while True:
                event = await events.get()
                if isinstance(event, TextDelta):
                    yield sse({**head, "choices": [shape.choice(event.text, None, streamed=True)]})
                elif isinstance(event, Finished):
                    self.account(event)
                    finish = shape.choice(None, event.finish_reason, streamed=True)
                    yield sse({**head, "choices": [finish]})
                    if include_usage:
                        yield sse({**head, "choices": [], "usage": usage(event)})
                    break
                else:
                    yield sse(error_body(500, event.message))
                    break
            yield b"data: [DONE]\n\n"
        finally:
            job.cancelled.set()  # the client went away, or we are done: stop generating


# ------------------------------------------------------------------------------- the app


def create_app(
    engine: Engine,
    *,
    served_name: str,
    base_name: str,
    api_key: str | None = None,
    revision: str | None = None,
    context: RequestContext | None = None,
) -> FastAPI:
    """The FastAPI app serving `engine` as `served_name` (adapter on) and `base_name` (off);
    `context` retrieves for a retrieval revision's chat requests (`docmodel_server.context`)."""
    app = FastAPI(title="DocModel server", docs_url=None, redoc_url=None, openapi_url=None)
    metrics = ServerMetrics(served_name, revision, engine)
    models = {served_name: True}  # name -> adapter on?
    if base_name != served_name:
        models[base_name] = False
    _add_error_handlers(app)
    _add_probes(app, engine, metrics, served_name, revision)
    _add_models(app, engine, models, base_name)
    context = context or RequestContext(None, engine.max_model_len)
    _add_generation(app, engine, Generator(engine, metrics), models, context)
    # The last middleware added is the outermost: metrics see every answer, 401s included.
    if api_key:
        app.add_middleware(ApiKeyMiddleware, api_key=api_key)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.state.metrics = metrics
    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        param = _param(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid request")).removeprefix("Value error, ")
        return error_response(400, f"{param}: {message}", param)


def _add_probes(
    app: FastAPI, engine: Engine, metrics: ServerMetrics, served_name: str, revision: str | None
) -> None:
    @app.get("/health")
    async def health() -> Response:
        if not engine.alive():
            return error_response(503, "The generation worker is not running.")
        return JSONResponse({"status": "ok"})

    @app.get("/ready")
    async def ready() -> Response:
        if not engine.alive():
            return error_response(503, "The model is not loaded yet.")
        return JSONResponse({"status": "ready", "model": served_name, "revision": revision})

    @app.get("/metrics")
    async def prometheus() -> Response:
        metrics.waiting.set(engine.waiting())
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_models(app: FastAPI, engine: Engine, models: dict[str, bool], base_name: str) -> None:
    created = int(time.time())

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        def card(name: str, adapter: bool) -> dict[str, Any]:
            return {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "docmodel",
                "root": name,
                "parent": base_name if adapter else None,
                "max_model_len": engine.max_model_len,
            }

        return {"object": "list", "data": [card(n, a) for n, a in models.items()]}


def _add_generation(
    app: FastAPI,
    engine: Engine,
    generator: Generator,
    models: dict[str, bool],
    context: RequestContext,
) -> None:
    def resolve(model: str) -> bool:
        if model not in models:
            raise ApiError(404, f"The model `{model}` does not exist.", "model")
        return models[model]

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(
        req: ChatCompletionRequest, request: Request
    ) -> dict[str, Any] | StreamingResponse:
        adapter = resolve(req.model)
        max_tokens = req.max_completion_tokens or req.max_tokens
        messages = context.messages(
            uuid.uuid4().hex,
            req.model,
            [{"role": m.role, "content": m.text()} for m in req.messages],
            adapter,
            max_tokens,
        )
        prompt_ids = engine.chat_prompt(messages)
        return await generator.respond(
            CHAT, req, request, prompt_ids, max_tokens, "messages", adapter
        )

    @app.post("/v1/completions", response_model=None)
    async def complete(
        req: CompletionRequest, request: Request
    ) -> dict[str, Any] | StreamingResponse:
        adapter = resolve(req.model)
        prompt_ids = engine.encode(req.prompt_text())
        return await generator.respond(
            COMPLETION, req, request, prompt_ids, req.max_tokens, "prompt", adapter
        )
