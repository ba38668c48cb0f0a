"""The local node's answer to the kubelet's log endpoint, so that ``kubectl logs``
and ``read_namespaced_pod_log`` work for pods on ``docmodel-local``.

The API server proxies ``GET /api/v1/namespaces/NS/pods/POD/log`` to
``https://<node InternalIP>:<kubeletEndpoint port>/containerLogs/NS/POD/CONTAINER``.
``follow`` returns what is there and ends; ``previous`` is not kept apart.
"""

from __future__ import annotations

import logging
import ssl
import threading
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger(__name__)

# (namespace, pod, container) -> the container's log file, or None
LogLookup = Callable[[str, str, str], Path | None]


def _handler(lookup: LogLookup) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            parts = url.path.strip("/").split("/")
            if len(parts) != 4 or parts[0] != "containerLogs":
                self.send_error(404, "only /containerLogs/NAMESPACE/POD/CONTAINER is served")
                return
            path = lookup(parts[1], parts[2], parts[3])
            if path is None or not path.exists():
                self.send_error(
                    404, f"no log for container {parts[3]} of pod {parts[1]}/{parts[2]}"
                )
                return
            query = urllib.parse.parse_qs(url.query)
            data = path.read_bytes()
            if "tailLines" in query:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-int(query["tailLines"][0]) :]) if lines else b""
            if "limitBytes" in query:
                data = data[: int(query["limitBytes"][0])]
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("Served log request %s", format % args)

    return Handler


class LogServer:
    """HTTPS on 127.0.0.1: a certificate the API server trusts, and only clients with a
    certificate from the cluster CA (the API server's kubelet client certificate)."""

    def __init__(self, lookup: LogLookup, cert: Path, key: Path, client_ca: Path) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(lookup))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        context.load_verify_locations(str(client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="log-server", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
