"""One reconcile of the operator with the cluster's answers played by a stand-in for the API
(the planner, cache, observer, store and settings are the real ones): a child the API server
refuses is on the DocModel in the same pass, with the API server's reason, and is not tried
again until its retry is due or the spec changes; a spec the models refuse starts nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from docmodel.api import parse_docmodel
from docmodel.revision import SourceCheck, resolve_source
from docmodel.storage import ObjectInfo
from docmodel_operator import reconcile as reconcile_module
from docmodel_operator.cache import Cache
from docmodel_operator.reconcile import Reconciler
from docmodel_operator.settings import OperatorSettings

NS, NAME = "ml", "handbook"
QUOTA = (
    'jobs.batch "handbook-x-ingest" is forbidden: exceeded quota: zero-jobs, requested: '
    "count/jobs.batch=1, used: count/jobs.batch=0, limited: count/jobs.batch=0"
)
BODY: dict[str, Any] = {
    "apiVersion": "docmodel.dev/v1alpha1",
    "kind": "DocModel",
    "metadata": {"name": NAME, "namespace": NS, "uid": "u-1", "generation": 1},
    "spec": {"source": {"bucket": "docs"}},
}


class Api:
    """What the operator asks the API server, answered as a cluster with a quota of no Jobs
    would, and every call recorded."""

    def __init__(self) -> None:
        self.status: dict[str, Any] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, str, str]] = []
        self.refuse_jobs = True

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status = status

    def event(self, owner: Any, type_: str, reason: str, message: str, now: Any) -> None:
        self.events.append((type_, reason, message))

    def secret_data(self, namespace: str, name: str) -> None:
        return None

    def create_job(self, job: dict[str, Any]) -> bool:
        self.calls.append(("create", job["metadata"]["name"]))
        if self.refuse_jobs:
            exc = ApiException(status=403, reason="Forbidden")
            exc.body = json.dumps(
                {"kind": "Status", "status": "Failure", "reason": "Forbidden", "message": QUOTA}
            )
            raise exc
        return True

    def apply(self, obj: dict[str, Any]) -> None:
        self.calls.append(("apply", f"{obj['kind']}/{obj['metadata']['name']}"))

    def delete(self, kind: str, namespace: str, name: str) -> None:
        self.calls.append(("delete", f"{kind}/{name}"))


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Reconciler, Cache, Api]:
    settings = OperatorSettings.model_validate(
        {"store_uri": str(tmp_path / "store"), "store_secret": "", "refusal_retry_seconds": 30}
    )
    cache, api = Cache(), Api()
    reconciler = Reconciler(settings, api, cache)  # type: ignore[arg-type]
    dm = parse_docmodel(BODY)
    listed = SourceCheck(resolve_source(dm.spec, [ObjectInfo("guide.md", "e1", 100)]))
    monkeypatch.setattr(reconciler, "_list_source", lambda dm, secrets: listed)
    cache.put_docmodel(json.loads(json.dumps(BODY)))
    return reconciler, cache, api


def at(monkeypatch: pytest.MonkeyPatch, when: datetime) -> None:
    monkeypatch.setattr(reconcile_module, "now", lambda: when)


def data_ready(api: Api) -> dict[str, Any]:
    return next(c for c in api.status["conditions"] if c["type"] == "DataReady")


def test_refused_job_is_a_condition_at_once_and_waits_for_its_retry(
    setup: tuple[Reconciler, Cache, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler, cache, api = setup
    t0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    at(monkeypatch, t0)
    requeue = reconciler.reconcile(NS, NAME)
    # Refused once, in this very pass: the condition carries the API server's reason and words.
    creates = [name for verb, name in api.calls if verb == "create"]
    assert len(creates) == 1 and creates[0].endswith("-ingest"), creates
    ready = data_ready(api)
    assert (ready["status"], ready["reason"]) == ("False", "Forbidden")
    assert "the cluster refused the ingest step" in ready["message"]
    assert "exceeded quota: zero-jobs" in ready["message"]
    assert ("Warning", "Forbidden") in [(t, r) for t, r, _ in api.events]
    assert api.status["phase"] == "Ingesting"
    assert requeue == 30.0
    # The steps' NetworkPolicy went first; the Job was the one refused.
    assert api.calls[0] == ("apply", "NetworkPolicy/handbook-steps")

    # Within the retry delay, another pass (any event) does not try again, nor post again.
    cache.put_docmodel({**json.loads(json.dumps(BODY)), "status": api.status})
    events = len(api.events)
    at(monkeypatch, t0 + timedelta(seconds=10))
    assert reconciler.reconcile(NS, NAME) == pytest.approx(20.0)
    assert len([c for c in api.calls if c[0] == "create"]) == 1
    assert len(api.events) == events

    # Once it is due, it is tried again; the quota was raised, so the Job is created.
    api.refuse_jobs = False
    at(monkeypatch, t0 + timedelta(seconds=30))
    reconciler.reconcile(NS, NAME)
    assert len([c for c in api.calls if c[0] == "create"]) == 2
    assert (data_ready(api)["status"], data_ready(api)["reason"]) == ("Unknown", "Started")
    # The steps' policy was applied once by this process, not again before each try.
    assert api.calls.count(("apply", "NetworkPolicy/handbook-steps")) == 1


def test_a_changed_spec_tries_a_refused_child_again_at_once(
    setup: tuple[Reconciler, Cache, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    reconciler, cache, api = setup
    t0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    at(monkeypatch, t0)
    reconciler.reconcile(NS, NAME)
    changed = json.loads(json.dumps(BODY))
    changed["metadata"]["generation"] = 2
    changed["spec"]["training"] = {"epochs": 2}
    cache.put_docmodel({**changed, "status": api.status})
    api.refuse_jobs = False
    at(monkeypatch, t0 + timedelta(seconds=1))
    reconciler.reconcile(NS, NAME)
    assert len([c for c in api.calls if c[0] == "create"]) == 2


def test_spec_the_models_refuse_starts_nothing(
    setup: tuple[Reconciler, Cache, Api], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stored spec the models refuse (one written under an older, looser CRD): Ready=False,
    InvalidSpec naming the field, phase Failed, no child."""
    reconciler, cache, api = setup
    bad = json.loads(json.dumps(BODY))
    bad["metadata"]["generation"] = 2
    bad["spec"]["retraining"] = {"schedule": "61 * * * *"}
    cache.put_docmodel(bad)
    at(monkeypatch, datetime(2026, 12, 3, 12, 0, tzinfo=UTC))
    assert reconciler.reconcile(NS, NAME) is None
    ready = next(c for c in api.status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.retraining.schedule" in ready["message"]
    assert api.status["phase"] == "Failed" and api.calls == []
