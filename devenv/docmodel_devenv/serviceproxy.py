"""Service addresses for the local nodes' pods: a small user-space kube-proxy.

The local nodes give pods loopback addresses, which EndpointSlices refuse, and no ClusterIP
range is routed on this machine. A `ServiceProxy` gives a Service a loopback address of its own
(127.0.2.N) and listens there on each of the Service's ports; every new connection goes to a
pod the Service selects *now* (its selector, in its namespace, Running and Ready), round robin,
on the port's ``targetPort`` (a number, or a container port's name). So a client talks to the
Service, and a change of the Service's selector (a blue-green switch) moves new connections,
as it would through kube-proxy.

    proxy = ServiceProxy(api)
    host, port = proxy.address("ml", "handbook")        # listening from now on
    ...
    proxy.stop()
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import logging
import selectors
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from .kubeapi import KubeApi

log = logging.getLogger(__name__)

Obj = dict[str, Any]


class NoEndpoints(ConnectionError):
    """The Service selects no ready pod."""


def _ready(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if status.get("phase") != "Running" or not status.get("podIP"):
        return False
    if pod["metadata"].get("deletionTimestamp"):
        return False
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    )


def _target_port(pod: Obj, target: int | str) -> int:
    if isinstance(target, int) or str(target).isdigit():
        return int(target)
    for container in pod["spec"]["containers"]:
        for declared in container.get("ports") or []:
            if declared.get("name") == target:
                return int(declared["containerPort"])
    raise NoEndpoints(f"pod {pod['metadata']['name']} has no port named {target}")


@dataclass
class ServiceProxy:
    api: KubeApi
    network: str = "127.0.2.0/24"
    _hosts: dict[tuple[str, str], str] = field(default_factory=dict)
    _listeners: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def address(self, namespace: str, name: str, port: int | str | None = None) -> tuple[str, int]:
        """The Service's (host, port): its first port, or the one with that number or name."""
        service = self.api.get("v1", "services", name, namespace=namespace)
        ports = service["spec"].get("ports") or []
        if not ports:
            raise NoEndpoints(f"Service {namespace}/{name} has no ports")
        with self._lock:
            key = (namespace, name)
            if key not in self._hosts:
                if not ipaddress.ip_network(self.network).is_loopback:
                    raise ValueError(f"service network {self.network} is not a loopback range")
                hosts = list(ipaddress.ip_network(self.network).hosts())[9:]
                host = str(hosts[len(self._hosts) % len(hosts)])
                for entry in ports:
                    self._listen(host, int(entry["port"]), namespace, name, entry)
                self._hosts[key] = host
        chosen = ports[0]
        for entry in ports:
            if port is not None and port in (entry["port"], entry.get("name")):
                chosen = entry
        return self._hosts[key], int(chosen["port"])

    def _listen(self, host: str, port: int, namespace: str, name: str, entry: Obj) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(64)
        listener.settimeout(0.5)
        self._listeners.append(listener)
        thread = threading.Thread(
            target=self._accept,
            args=(listener, namespace, name, entry),
            name=f"service-{namespace}-{name}-{port}",
            daemon=True,
        )
        thread.start()
        log.info("Service proxy listening service=%s/%s address=%s:%d", namespace, name, host, port)

    def endpoint(self, namespace: str, name: str, entry: Obj) -> tuple[str, int]:
        """A ready pod of the Service, as it selects now (round robin)."""
        service = self.api.get("v1", "services", name, namespace=namespace)
        selector = service["spec"].get("selector") or {}
        if not selector:
            raise NoEndpoints(f"Service {namespace}/{name} has no selector")
        labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
        pods = self.api.get("v1", "pods", namespace=namespace, labelSelector=labels)["items"]
        ready = sorted((p for p in pods if _ready(p)), key=lambda p: p["metadata"]["name"])
        if not ready:
            raise NoEndpoints(f"Service {namespace}/{name} selects no ready pod ({labels})")
        pod = ready[next(self._counter) % len(ready)]
        target = entry.get("targetPort", entry["port"])
        return pod["status"]["podIP"], _target_port(pod, target)

    def _accept(self, listener: socket.socket, namespace: str, name: str, entry: Obj) -> None:
        while not self._stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(
                target=self._forward, args=(client, namespace, name, entry), daemon=True
            ).start()

    def _forward(self, client: socket.socket, namespace: str, name: str, entry: Obj) -> None:
        with contextlib.ExitStack() as stack:
            stack.enter_context(client)
            try:
                host, port = self.endpoint(namespace, name, entry)
                upstream = stack.enter_context(socket.create_connection((host, port), timeout=10))
            except (OSError, NoEndpoints) as error:
                log.warning("Service proxy refused service=%s/%s error=%s", namespace, name, error)
                return
            upstream.settimeout(None)
            client.settimeout(None)
            selector = stack.enter_context(selectors.DefaultSelector())
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            while not self._stop.is_set():
                for key, _ in selector.select(timeout=0.5):
                    source = key.fileobj
                    assert isinstance(source, socket.socket)
                    data = source.recv(65536)
                    if not data:
                        return
                    key.data.sendall(data)

    def stop(self) -> None:
        self._stop.set()
        for listener in self._listeners:
            with contextlib.suppress(OSError):
                listener.close()
        self._listeners.clear()
