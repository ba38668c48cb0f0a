"""Prometheus metrics of the local server, in a registry of their own (one per app)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Paths with their own label; anything else is counted as "other" to bound cardinality.
ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/health",
    "/ready",
    "/metrics",
)


class _BatchCollector(Collector):
    """Reads the engine's batch and cancellation counters at scrape time (the worker thread only increments)."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def collect(self) -> Any:
        yield CounterMetricFamily(
            "docmodel_server_batches",
            "Groups of requests decoded together.",
            value=self.engine.batches,
        )
        yield CounterMetricFamily(
            "docmodel_server_batched_requests",
            "Requests decoded in those groups (divide by batches for the mean batch size).",
            value=self.engine.batched_requests,
        )
        yield CounterMetricFamily(
            "docmodel_server_cancelled_requests",
            "Generation requests dropped or stopped early because their client disconnected.",
            value=self.engine.cancelled_requests,
        )


class ServerMetrics:
    def __init__(self, served_name: str, revision: str | None, engine: Any) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_BatchCollector(engine))
        self.requests = Counter(
            "docmodel_server_requests",
            "HTTP requests answered, by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "docmodel_server_request_duration_seconds",
            "Time from request to the last byte of the response (streams included).",
            ["endpoint"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "docmodel_server_prompt_tokens", "Prompt tokens processed.", registry=self.registry
        )
        self.generated_tokens = Counter(
            "docmodel_server_generated_tokens",
            "Completion tokens generated.",
            registry=self.registry,
        )
        self.waiting = Gauge(
            "docmodel_server_requests_waiting",
            "Generation requests queued behind the one running.",
            registry=self.registry,
        )
        info = Gauge(
            "docmodel_server_info",
            "The model being served (value is always 1).",
            ["served_name", "revision"],
            registry=self.registry,
        )
        info.labels(served_name=served_name, revision=revision or "").set(1)


class MetricsMiddleware:
    """Counts every HTTP request and times it until its last body chunk is sent."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
