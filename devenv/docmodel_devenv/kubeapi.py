"""A small JSON client for the local API server (dicts in, dicts out).

The dev environment's own controllers (pod runner, node registration) use this
rather than the generated client: merge patches of whole status lists and
watches as plain dicts are simpler here. Tests use the official client.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger(__name__)

Obj = dict[str, Any]


@dataclass(frozen=True)
class Credentials:
    """Where the API server is and how to authenticate to it (files on disk)."""

    server: str
    ca_cert: Path
    client_cert: Path
    client_key: Path

    def ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_cert))
        context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


class ApiError(RuntimeError):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"API server answered {status}: {body[:500]}")
        self.status = status
        self.body = body


def _path(api_version: str, plural: str, namespace: str | None, name: str | None) -> str:
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespace:
        base += f"/namespaces/{namespace}"
    base += f"/{plural}"
    if name:
        base += f"/{name}"
    return base


class KubeApi:
    """JSON over HTTPS to one API server, authenticated with a client certificate."""

    def __init__(self, credentials: Credentials, timeout: float = 30.0) -> None:
        self.credentials = credentials
        self._client = httpx.Client(
            base_url=credentials.server,
            verify=credentials.ssl_context(),
            timeout=timeout,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, path: str, body: Any = None, **kwargs: Any) -> Obj:
        headers = dict(kwargs.pop("headers", {}))
        content = None
        if body is not None:
            content = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        response = self._client.request(method, path, content=content, headers=headers, **kwargs)
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        return response.json() if response.content else {}

    def get(
        self,
        api_version: str,
        plural: str,
        name: str | None = None,
        namespace: str | None = None,
        **params: Any,
    ) -> Obj:
        return self.request("GET", _path(api_version, plural, namespace, name), params=params)

    def create(self, obj: Obj, plural: str) -> Obj:
        namespace = obj.get("metadata", {}).get("namespace")
        return self.request("POST", _path(obj["apiVersion"], plural, namespace, None), obj)

    def apply(self, obj: Obj, plural: str, manager: str = "docmodel-devenv") -> Obj:
        """Server-side apply of a whole object (creates or updates)."""
        metadata = obj["metadata"]
        path = _path(obj["apiVersion"], plural, metadata.get("namespace"), metadata["name"])
        return self.request(
            "PATCH",
            path,
            obj,
            params={"fieldManager": manager, "force": "true"},
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    def merge_patch(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: Obj,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        path = _path(api_version, plural, namespace, name)
        if subresource:
            path += f"/{subresource}"
        return self.request(
            "PATCH", path, patch, headers={"Content-Type": "application/merge-patch+json"}
        )

    def delete(
        self,
        api_version: str,
        plural: str,
        name: str,
        namespace: str | None = None,
        body: Obj | None = None,
    ) -> Obj:
        try:
            return self.request("DELETE", _path(api_version, plural, namespace, name), body)
        except ApiError as error:
            if error.status == 404:
                return {}
            raise

    def watch(
        self,
        api_version: str,
        plural: str,
        resource_version: str,
        namespace: str | None = None,
        timeout_seconds: int = 60,
        **params: Any,
    ) -> Iterator[Obj]:
        """Yield watch events until the server ends the watch (or ``timeout_seconds``)."""
        params.update(
            watch="1",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout_seconds),
        )
        path = _path(api_version, plural, namespace, None)
        with self._client.stream(
            "GET", path, params=params, timeout=httpx.Timeout(30.0, read=timeout_seconds + 30)
        ) as response:
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.read().decode(errors="replace"))
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)


def create_namespace(api: KubeApi, name: str, timeout: float = 30.0) -> None:
    """Create a namespace and wait for its default ServiceAccount: the API server refuses pods
    until the controller manager has made it."""
    import time

    api.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}, "namespaces")
    deadline = time.monotonic() + timeout
    while True:
        try:
            api.get("v1", "serviceaccounts", "default", namespace=name)
            return
        except ApiError as error:
            if error.status != 404 or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
