"""Liveness and readiness of a DocModel server, the same checks for vLLM and the local server.

- Live: `GET /health` answers 200 (the process and its engine are up).
- Ready: live, and `GET /v1/models` (with the API key, when one is set) lists the served name,
  so the adapter is loaded and requests for it will be answered.

`check_ready` is a plain function the operator (or a test) can call; `docmodel-server probe
--ready` runs it as a Kubernetes exec probe inside the pod, reading the same environment as the
server. Only the standard library is imported, so the probe starts in a fraction of a second.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str


def _get(url: str, api_key: str | None, timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    if api_key:
        request.add_header("Authorization", f"Bearer {api_key}")
    # Probes go straight to the pod: never through an HTTP proxy from the environment.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), exc.read()


def _answered(url: str, api_key: str | None, timeout: float) -> ProbeResult | bytes:
    """The body of a 200 answer, or why there was none."""
    try:
        status, body = _get(url, api_key, timeout)
    except (OSError, urllib.error.URLError) as exc:
        return ProbeResult(False, f"{url} unreachable: {exc}")
    if status != 200:
        return ProbeResult(False, f"{url} answered {status}")
    return body


def check_live(base_url: str, timeout: float = 2.0) -> ProbeResult:
    """`/health` answers 200."""
    url = base_url.rstrip("/") + "/health"
    answer = _answered(url, None, timeout)
    return answer if isinstance(answer, ProbeResult) else ProbeResult(True, f"{url} answered 200")


def check_ready(
    base_url: str, served_name: str, api_key: str | None = None, timeout: float = 2.0
) -> ProbeResult:
    """`/health` answers 200 and `/v1/models` lists `served_name`."""
    live = check_live(base_url, timeout)
    if not live.ok:
        return live
    url = base_url.rstrip("/") + "/v1/models"
    body = _answered(url, api_key, timeout)
    if isinstance(body, ProbeResult):
        return body
    try:
        names = [entry["id"] for entry in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        return ProbeResult(False, f"{url} did not return a model list")
    if served_name not in names:
        return ProbeResult(False, f"{served_name!r} is not among the served models {names}")
    return ProbeResult(True, f"{served_name!r} is served")
