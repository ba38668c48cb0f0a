"""The operator's cache of what the watches delivered: newest version wins, a re-LIST drops
what was deleted unseen and never revives what a watch saw deleted, objects are trimmed."""

from __future__ import annotations

import base64
from typing import Any

from docmodel_operator.cache import Cache

LABELS = {"app.kubernetes.io/managed-by": "docmodel-operator", "app.kubernetes.io/instance": "hb"}


def obj(uid: str, version: int, **extra: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "uid": uid,
            "name": f"hb-{uid}",
            "namespace": "ml",
            "resourceVersion": str(version),
            "labels": LABELS,
            "managedFields": [{"manager": "kube-controller-manager"}],
        },
        "spec": {"template": {"spec": {"containers": [{"name": "x"}]}}, "replicas": 2},
        "status": {"phase": extra.get("phase", "Running")},
    }


def phases(cache: Cache, kind: str = "pods") -> dict[str, str]:
    return {o["metadata"]["uid"]: o["status"]["phase"] for o in cache.children(kind, "ml", "hb")}


def test_newest_version_wins_and_objects_are_trimmed() -> None:
    cache = Cache()
    cache.put_child("pods", obj("a", 5, phase="Running"))
    cache.put_child("pods", obj("a", 4, phase="Pending"))  # a late, older event
    assert phases(cache) == {"a": "Running"}
    cache.put_child("pods", obj("a", 6, phase="Succeeded"))
    assert phases(cache) == {"a": "Succeeded"}
    (pod,) = cache.children("pods", "ml", "hb")
    assert "managedFields" not in pod["metadata"] and pod["spec"] == {}
    cache.put_child("deployments", obj("d", 1))
    (deployment,) = cache.children("deployments", "ml", "hb")
    assert deployment["spec"] == {"replicas": 2}


def test_objects_of_other_managers_are_ignored() -> None:
    cache = Cache()
    foreign = obj("x", 1)
    foreign["metadata"]["labels"] = {"app.kubernetes.io/instance": "hb"}
    cache.put_child("jobs", foreign)
    assert cache.children("jobs", "ml", "hb") == []


def test_relist_drops_the_unseen_deleted_keeps_the_newer_and_never_revives() -> None:
    cache = Cache()
    cache.put_child("jobs", obj("gone", 3))  # deleted while no watch ran
    cache.put_child("jobs", obj("fresh", 12))  # created after the list was taken
    cache.put_child("jobs", obj("dead", 4))
    cache.drop_child("jobs", obj("dead", 4))  # its DELETED event came before the list
    cache.relist("jobs", "ml", [obj("kept", 9), obj("dead", 4)], version=10)
    assert set(phases(cache, "jobs")) == {"fresh", "kept"}
    cache.relist("jobs", "other", [], version=20)  # another namespace's list
    assert set(phases(cache, "jobs")) == {"fresh", "kept"}


def test_secrets_keep_names_of_all_and_values_of_opaque_ones() -> None:
    cache = Cache()

    def secret(name: str, type_: str, version: int) -> dict[str, Any]:
        return {
            "metadata": {"name": name, "namespace": "ml", "resourceVersion": str(version)},
            "type": type_,
            "data": {"AWS_SECRET_ACCESS_KEY": base64.b64encode(b"s3cr3t").decode()},
        }

    cache.put_secret(secret("s3", "Opaque", 2))
    cache.put_secret(secret("tls", "kubernetes.io/tls", 3))
    assert cache.secret("ml", "s3") == (True, {"AWS_SECRET_ACCESS_KEY": "s3cr3t"})
    assert cache.secret("ml", "tls") == (True, None)
    assert cache.secret("ml", "nope") == (False, None)
    cache.relist_secrets("ml", [secret("tls", "kubernetes.io/tls", 3)], version=5)
    assert cache.secret("ml", "s3") == (False, None)
    cache.drop_secret("ml", "tls")
    assert cache.secret("ml", "tls") == (False, None)


def test_docmodels_newest_version_wins() -> None:
    cache = Cache()
    body = {"metadata": {"name": "hb", "namespace": "ml", "resourceVersion": "7"}, "spec": {}}
    cache.put_docmodel(body)
    cache.put_docmodel({**body, "metadata": {**body["metadata"], "resourceVersion": "6"}})
    assert cache.docmodel("ml", "hb") == body
    cache.drop_docmodel("ml", "hb")
    assert cache.docmodel("ml", "hb") is None
