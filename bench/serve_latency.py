"""Latency and throughput of the local server under concurrent clients, on CPU with a tiny model.

    .venv/bin/python bench/serve_latency.py                  # writes bench/results/serve_latency.json
    .venv/bin/python bench/serve_latency.py --requests 64 --concurrency 4 --max-tokens 32
    .venv/bin/python bench/serve_latency.py --retrievers BM25,Hybrid   # retrieval revisions
        # side by side: what embedding each request's query on the CPU adds

Builds a tiny Llama and a LoRA adapter, starts the real `docmodel-server --engine local` as a
subprocess on a free loopback port, warms it up, then lets `--concurrency` client threads (the
official openai client, greedy decoding, a fixed `max_tokens`) send `--requests` chat
completions in total, each with its own prompt. The run is bounded by `--requests` and by
`--max-seconds`; all traffic stays on 127.0.0.1. Reports p50/p99 latency, requests/s and the
mean batch size the engine formed; the load average is recorded because the machine may be
shared. The committed JSON is the baseline later changes are measured against.

With `--retrievers`, the same load runs once per retriever against a retrieval revision (its
adapter carries a passage index over the services' pages, top-k 2) in one command, and
`retrieval` records each run and the p50/p99 each adds over BM25, the retriever that embeds
nothing: a Dense or Hybrid revision embeds every request's query on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from benchlib import cpu_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the tests' testkit package

from testkit.server_factory import (  # noqa: E402
    SERVED_NAME,
    build_model_and_adapter,
    free_port,
    server_env,
    start_server,
)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def batch_counters(url: str) -> tuple[float, float]:
    """(batches, batched requests) from the server's /metrics."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        values = dict(
            line.rsplit(" ", 1) for line in response.read().decode().splitlines() if line[:1] != "#"
        )
    return (
        float(values["docmodel_server_batches_total"]),
        float(values["docmodel_server_batched_requests_total"]),
    )


def run(args: argparse.Namespace, retriever: str | None = None) -> dict[str, object]:
    import openai
    import torch

    with tempfile.TemporaryDirectory(prefix="docmodel-bench-") as tmp:
        root = Path(tmp)
        base, adapter_uri = build_model_and_adapter(root, retriever=retriever)
        extra = {"DOCMODEL_API_KEY": "bench"}
        if args.cpu_threads:
            extra["DOCMODEL_CPU_THREADS"] = str(args.cpu_threads)
        env = server_env(base, adapter_uri, free_port(), root / "work", **extra)
        server = start_server(env, root / "server.log")
        try:
            client = openai.OpenAI(
                base_url=server.url + "/v1", api_key="bench", max_retries=0, timeout=120
            )

            def ask(i: int) -> tuple[float, int]:
                started = time.perf_counter()
                response = client.chat.completions.create(
                    model=SERVED_NAME,
                    messages=[{"role": "user", "content": f"Request {i}: how long are logs kept?"}],
                    max_tokens=args.max_tokens,
                    temperature=0,
                )
                tokens = response.usage.completion_tokens if response.usage else 0
                return time.perf_counter() - started, tokens

            for i in range(args.warmup):
                ask(-1 - i)

            latencies: list[float] = []
            tokens: list[int] = []
            errors: list[str] = []
            lock = threading.Lock()
            counter = iter(range(args.requests))
            deadline = time.monotonic() + args.max_seconds

            def client_loop() -> None:
                while time.monotonic() < deadline:
                    with lock:
                        i = next(counter, None)
                    if i is None:
                        return
                    try:
                        latency, n = ask(i)
                    except openai.OpenAIError as exc:
                        with lock:
                            errors.append(f"{type(exc).__name__}: {exc}")
                        continue
                    with lock:
                        latencies.append(latency)
                        tokens.append(n)

            threads = [threading.Thread(target=client_loop) for _ in range(args.concurrency)]
            batches_before, rows_before = batch_counters(server.url)
            load_before = os.getloadavg()[0]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - started
            load_after = os.getloadavg()[0]
            batches_after, rows_after = batch_counters(server.url)
            threads = re.search(r"Loaded model .* threads=(\d+)", server.log())
            client.close()
        finally:
            server.stop()

    if not latencies:
        raise SystemExit(f"no request succeeded; errors: {errors[:3]}")
    return {
        "benchmark": "serve_latency",
        "engine": "local (transformers + peft, queued requests decoded in batches of up to 8)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpu": cpu_model(),
            "cpu_count": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "server_torch_threads": int(threads.group(1)) if threads else None,
            "load_avg_1m_before": round(load_before, 2),
            "load_avg_1m_after": round(load_after, 2),
        },
        "model": "tiny random Llama (2 layers, hidden 64) + LoRA r=8 on q/v/o",
        "concurrency": args.concurrency,
        "requests": len(latencies),
        "requests_planned": args.requests,
        "errors": len(errors),
        "max_tokens": args.max_tokens,
        "completion_tokens": sum(tokens),
        "wall_s": round(wall, 3),
        "p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "p90_ms": round(percentile(latencies, 90) * 1000, 1),
        "p99_ms": round(percentile(latencies, 99) * 1000, 1),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 1),
        "rps": round(len(latencies) / wall, 2),
        "tokens_per_s": round(sum(tokens) / wall, 1),
        "mean_batch_size": round(
            (rows_after - rows_before) / max(1.0, batches_after - batches_before), 2
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests in total (bound)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of each request")
    parser.add_argument("--cpu-threads", type=int, help="server torch threads (its default)")
    parser.add_argument("--warmup", type=int, default=4, help="sequential requests first")
    parser.add_argument("--max-seconds", type=float, default=300, help="time bound of the run")
    parser.add_argument(
        "--out", type=Path, default=ROOT / "bench" / "results" / "serve_latency.json"
    )
    parser.add_argument(
        "--retrievers",
        help="comma-separated retrievers (BM25, Dense, Hybrid): one run per retrieval revision",
    )
    args = parser.parse_args()
    if args.retrievers:
        runs = {name: run(args, name) for name in args.retrievers.split(",")}
        result = {"benchmark": "serve_latency", "retrieval": runs}
        if "BM25" in runs:
            result["added_over_bm25_ms"] = {
                name: {
                    q: round(float(r[q]) - float(runs["BM25"][q]), 1)  # type: ignore[arg-type]
                    for q in ("p50_ms", "p99_ms")
                }
                for name, r in runs.items()
                if name != "BM25"
            }
        if args.out.is_file():  # kept beside the plain run's figures
            previous = json.loads(args.out.read_text())
            previous.update({k: v for k, v in result.items() if k != "benchmark"})
            result = previous
    else:
        result = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
