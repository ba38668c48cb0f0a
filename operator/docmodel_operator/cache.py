"""What the watches delivered, kept in memory, so that a reconcile reads the cluster without
asking the API server: the DocModels, their labelled children (Jobs, their pods, server
Deployments, the Service) and the Secrets of the watched namespaces.

The same idea as client-go's informer cache, fed by the Kopf watches the operator already
runs for its triggers:
- Before Kopf starts, one LIST per kind (per watched namespace) primes the cache, so that the
  first reconciles after a restart see every child that exists (not an empty cluster, which
  would make the planner start Jobs again and report servers gone).
- Each watch event replaces the object unless the cache holds a newer version (resource
  versions are compared as the integers the API server hands out; one that is not an integer
  always replaces).
- A periodic re-LIST (`relist`) drops what was deleted while no watch ran, and keeps
  what changed since the list was taken.

Objects are stored trimmed to what the operator reads: `managedFields` and the pod templates
go (a pod's or Job's spec is never read). Of the Secrets, every name is kept (to tell a
missing Secret from one of another type) and the values of `Opaque` ones; the reconciler
reads any other referenced Secret directly.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from docmodel import labels

KINDS = {
    "jobs": "Job",
    "pods": "Pod",
    "deployments": "Deployment",
    "services": "Service",
    "pytorchjobs": "PyTorchJob",
    "trainjobs": "TrainJob",
}
CHILD_KINDS = tuple(KINDS)
# Kept of each child's spec: what the observer reads (replicas, the Service's selector,
# whether a queued workload is still suspended).
SPEC_FIELDS = {
    "deployments": ("replicas",),
    "services": ("selector",),
    "jobs": ("suspend",),
    "pytorchjobs": ("runPolicy",),
    "trainjobs": ("suspend",),
}
DATA_TYPES = ("Opaque", "")
TOMBSTONES = 4096  # uids of recently deleted objects, so that a late LIST cannot revive them

Key = tuple[str, str]  # (namespace, name)


def resource_version(obj: dict[str, Any]) -> int | None:
    """An object's (or a list's) resourceVersion as an integer; None when it is not one."""
    raw = (obj.get("metadata") or {}).get("resourceVersion")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        return None


def _not_older(version: int | None, than: int | None) -> bool:
    """Whether `version` is at least `than` (when either is unknown, it counts as newer)."""
    return version is None or than is None or version >= than


def _newer(incoming: dict[str, Any], held: dict[str, Any] | None) -> bool:
    return held is None or _not_older(resource_version(incoming), resource_version(held))


def trim(kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """The parts of a child the observer reads."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    spec = obj.get("spec") or {}
    return {
        "kind": KINDS[kind],  # a LIST's items do not say it
        "metadata": meta,
        "spec": {k: spec[k] for k in SPEC_FIELDS.get(kind, ()) if k in spec},
        "status": obj.get("status") or {},
    }


def decode_secret_data(data: Mapping[str, str | bytes] | None) -> dict[str, str]:
    """A Secret's `data` (base64 values), decoded."""
    return {
        key: base64.b64decode(value).decode(errors="replace") for key, value in (data or {}).items()
    }


class Cache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._docmodels: dict[Key, dict[str, Any]] = {}
        # kind -> (namespace, instance) -> uid -> object
        self._children: dict[str, dict[Key, dict[str, dict[str, Any]]]] = {
            kind: {} for kind in CHILD_KINDS
        }
        self._secret_names: dict[Key, int | None] = {}  # every Secret: its resourceVersion
        self._secret_data: dict[Key, dict[str, str]] = {}  # the values of Opaque ones
        self._gone: dict[str, None] = {}  # recently deleted uids, oldest first

    # -- DocModels ----------------------------------------------------------------------------

    def docmodel(self, namespace: str, name: str) -> dict[str, Any] | None:
        with self._lock:
            return self._docmodels.get((namespace, name))

    def put_docmodel(self, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        key = (meta["namespace"], meta["name"])
        with self._lock:
            if _newer(obj, self._docmodels.get(key)):
                self._docmodels[key] = obj

    def drop_docmodel(self, namespace: str, name: str) -> None:
        with self._lock:
            self._docmodels.pop((namespace, name), None)

    # -- children -----------------------------------------------------------------------------

    @staticmethod
    def _owner(obj: dict[str, Any]) -> tuple[Key, str] | None:
        meta = obj.get("metadata") or {}
        name = labels.owned(meta.get("labels") or {})
        if name is None or not meta.get("uid") or not meta.get("namespace"):
            return None
        return (meta["namespace"], name), str(meta["uid"])

    def children(self, kind: str, namespace: str, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._children[kind].get((namespace, name), {}).values())

    def put_child(self, kind: str, obj: dict[str, Any]) -> None:
        owned = self._owner(obj)
        if owned is None:
            return
        key, uid = owned
        with self._lock:
            if uid in self._gone:
                return
            objects = self._children[kind].setdefault(key, {})
            if _newer(obj, objects.get(uid)):
                objects[uid] = trim(kind, obj)

    def drop_child(self, kind: str, obj: dict[str, Any]) -> None:
        owned = self._owner(obj)
        if owned is None:
            return
        key, uid = owned
        with self._lock:
            self._forget_uid(uid)
            objects = self._children[kind].get(key)
            if objects is not None:
                objects.pop(uid, None)
                if not objects:
                    del self._children[kind][key]

    def _forget_uid(self, uid: str) -> None:
        self._gone[uid] = None
        while len(self._gone) > TOMBSTONES:
            del self._gone[next(iter(self._gone))]

    def relist(
        self, kind: str, namespace: str | None, items: Iterable[dict[str, Any]], version: int | None
    ) -> None:
        """Replace the cached children of `kind` (in `namespace`; None: all) with a LIST taken
        at `version`, keeping what is newer than the list."""
        listed: dict[Key, dict[str, dict[str, Any]]] = {}
        for obj in items:
            owned = self._owner(obj)
            if owned is not None:
                listed.setdefault(owned[0], {})[owned[1]] = obj
        with self._lock:
            held = self._children[kind]
            for key in list(held):
                if namespace is not None and key[0] != namespace:
                    continue
                for uid, obj in list(held[key].items()):
                    # Gone from the list, unless it changed after the list was taken.
                    if uid not in listed.get(key, {}) and _not_older(
                        version, resource_version(obj)
                    ):
                        del held[key][uid]
                if not held[key]:
                    del held[key]
            for key, objs in listed.items():
                for uid, obj in objs.items():
                    if uid in self._gone:
                        continue
                    current = held.setdefault(key, {})
                    if _newer(obj, current.get(uid)):
                        current[uid] = trim(kind, obj)

    # -- Secrets ------------------------------------------------------------------------------

    def put_secret(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self._lock:
            version = resource_version(obj)
            if key in self._secret_names and not _not_older(version, self._secret_names[key]):
                return
            self._secret_names[key] = version
            if obj.get("type", "") in DATA_TYPES:
                self._secret_data[key] = decode_secret_data(obj.get("data"))
            else:
                self._secret_data.pop(key, None)

    def drop_secret(self, namespace: str, name: str) -> None:
        with self._lock:
            self._secret_names.pop((namespace, name), None)
            self._secret_data.pop((namespace, name), None)

    def relist_secrets(
        self, namespace: str | None, items: Iterable[dict[str, Any]], version: int | None
    ) -> None:
        """As `relist`, for the Secrets (of `namespace`; None: all)."""
        items = list(items)
        listed = {
            ((i.get("metadata") or {}).get("namespace", ""), i["metadata"]["name"]) for i in items
        }
        with self._lock:
            for key, held in list(self._secret_names.items()):
                if (namespace is not None and key[0] != namespace) or key in listed:
                    continue
                if _not_older(version, held):  # gone, unless it changed after the list
                    self._secret_names.pop(key, None)
                    self._secret_data.pop(key, None)
        for obj in items:
            self.put_secret(obj)

    def secret(self, namespace: str, name: str) -> tuple[bool, dict[str, str] | None]:
        """(exists, values): values None when the Secret exists but is not of a type whose
        values the cache keeps."""
        with self._lock:
            key = (namespace, name)
            if key not in self._secret_names:
                return False, None
            return True, self._secret_data.get(key)
