"""The front process: retrieval in front of an OpenAI-compatible upstream (vLLM).

    docmodel-server front --adapter DIR --upstream http://127.0.0.1:8001 [--host H] [--port P]

vLLM serves the adapter as it is; this process listens where clients connect, rewrites each
chat request to the served name with the revision's retrieved passages (`RequestContext`: the
core's prompt builder, the adapter's passage index, its tokenizer), and forwards it. Everything
else (`/v1/models`, completions, `/health`, `/metrics`, the base model's name) is passed through
unchanged, and so are the upstream's answers: status, headers and bodies, streams chunk by chunk
as they arrive. The `Authorization` header goes to the upstream, which checks the API key.
`/health` answers 200 only while the upstream does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from docmodel_server.context import RequestContext

log = logging.getLogger("docmodel.server.front")

# Hop-by-hop and length headers are the proxy's own business.
_DROPPED = {"host", "content-length", "connection", "keep-alive", "transfer-encoding"}


def _forward_headers(request: Request) -> dict[str, str]:
    return {k: v for k, v in request.headers.items() if k.lower() not in _DROPPED}


def _error(status: int, message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "BadRequestError", "param": None, "code": status}}
    return JSONResponse(body, status_code=status)


def create_front(upstream: str, served_name: str, context: RequestContext) -> FastAPI:
    client = httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=httpx.Timeout(None))

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(
        title="DocModel front", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan
    )

    async def forward(request: Request, path: str, body: bytes) -> Response:
        outgoing = client.build_request(
            request.method,
            path,
            params=request.query_params,
            headers=_forward_headers(request),
            content=body,
        )
        try:
            answer = await client.send(outgoing, stream=True)
        except httpx.HTTPError as exc:
            log.warning("Upstream unreachable path=%s error=%s", path, exc)
            return _error(502, f"the model server behind this endpoint is unreachable: {exc}")
        headers = {k: v for k, v in answer.headers.items() if k.lower() not in _DROPPED}

        async def relay() -> AsyncIterator[bytes]:
            async for chunk in answer.aiter_raw():
                yield chunk

        return StreamingResponse(
            relay(),
            status_code=answer.status_code,
            headers=headers,
            background=BackgroundTask(answer.aclose),
        )

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        raw = await request.body()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return await forward(request, "/v1/chat/completions", raw)  # the upstream explains
        messages = [_plain(m) for m in body["messages"]]
        if any(m is None for m in messages):
            return await forward(request, "/v1/chat/completions", raw)
        max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        body["messages"] = context.messages(
            uuid.uuid4().hex,
            str(body.get("model")),
            [m for m in messages if m is not None],
            body.get("model") == served_name,
            max_tokens if isinstance(max_tokens, int) else None,
        )
        return await forward(request, "/v1/chat/completions", json.dumps(body).encode())

    @app.api_route("/{path:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def passthrough(request: Request, path: str) -> Response:
        return await forward(request, f"/{path}", await request.body())

    return app


def _plain(message: Any) -> dict[str, str] | None:
    """A message as role and text (content parts of type text joined), or None when it holds
    anything else (the upstream then gets the request as sent, and answers for it)."""
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        return None
    content = message.get("content")
    if isinstance(content, str):
        return {"role": message["role"], "content": content}
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        for p in content
    ):
        return {"role": message["role"], "content": "".join(p["text"] for p in content)}
    return None
