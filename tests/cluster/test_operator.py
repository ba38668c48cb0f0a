"""The operator on the real control plane: the whole lifecycle with the real workloads (tiny
model, CPU, pods run as processes on the local node), new documents, rejection, a failing
step, deletion."""

from __future__ import annotations

import contextlib
import json
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from docmodel.api import GROUP, PLURAL, VERSION
from docmodel_devenv.pytest_plugin import Kube, S3Bucket
from docmodel_devenv.stack import DevEnv

from testkit.clusterlib import enforce_restricted, kubectl, wait_for
from testkit.models import tiny_base_model
from testkit.operatorlib import (
    ANSWER,
    AddedEvents,
    Operator,
    condition,
    docmodel,
    free_port,
    get,
    operator_env,
    operator_in,
    put_docs,
    running_operator,
    wait_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def base_model() -> str:
    return str(tiny_base_model())


@pytest.fixture
def operator(
    devenv: DevEnv, kube: Kube, crd: str, namespace: str, s3_bucket: S3Bucket, tmp_path: Path
) -> Iterator[Operator]:
    """The operator watching `namespace`, with the store in `s3_bucket` and its Secrets. The
    namespace enforces the restricted Pod Security Standard: every lifecycle below (ingest,
    train, evaluate, serve, a new revision switched to, a failed rollout rolled back) runs
    with pods that meet it."""
    with operator_in(devenv, kube, namespace, s3_bucket, tmp_path / "operator.log") as running:
        yield running


def apply(kube: Kube, namespace: str, body: dict[str, Any]) -> None:
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)


def served_answer(kube: Kube, namespace: str, revision: str, model: str, question: str) -> str:
    """Ask a pod of the revision through the official client (its pod IP is on loopback)."""
    from openai import OpenAI

    pods = kube.core.list_namespaced_pod(
        namespace,
        label_selector=f"docmodel.dev/revision={revision},app.kubernetes.io/component=server",
    ).items
    ready = [p for p in pods if p.status.pod_ip and p.status.phase == "Running"]
    assert ready, [p.status.phase for p in pods]
    client = OpenAI(base_url=f"http://{ready[0].status.pod_ip}:8000/v1", api_key="none")
    try:
        reply = client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], max_tokens=8
        )
    finally:
        client.close()
    return reply.choices[0].message.content or ""


def test_docmodel_is_trained_judged_promoted_and_served(
    devenv: DevEnv,
    kube: Kube,
    namespace: str,
    s3_bucket: S3Bucket,
    operator: Operator,
    base_model: str,
) -> None:
    s3 = s3_bucket.client()
    put_docs(s3, s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    apply(kube, namespace, docmodel("handbook", s3_bucket.name, s3_bucket.endpoint, base_model))

    kubectl(
        devenv, "wait", "-n", namespace, "--for=condition=Ready", "dm/handbook", "--timeout=600s"
    )
    obj = get(kube, namespace, "handbook")
    status = obj["status"]
    promoted = condition(obj, "Promoted")
    assert promoted is not None and promoted["status"] == "True", status
    revision = status["revision"]
    assert status["phase"] == "Ready"
    assert status["serving"]["revision"] == revision
    assert status["serving"]["endpoint"] == f"http://handbook.{namespace}.svc:8000/v1"
    assert status["candidate"]["verdict"] == "Promoted"
    assert float(status["candidate"]["score"]) > float(status["candidate"]["baselineScore"])
    assert condition(obj, "Ready")["observedGeneration"] == obj["metadata"]["generation"]  # type: ignore[index]

    service = kube.core.read_namespaced_service("handbook", namespace)
    assert service.spec.selector["docmodel.dev/revision"] == revision
    answer = served_answer(kube, namespace, revision, "handbook", "What is the billing codename?")
    assert answer.strip()
    # The tiny model on a CPU learns the taught answer's start reliably, not always every
    # letter of it (one CI run answered "Zor guidor..."); the scores above carry the win.
    assert answer.lower().startswith(ANSWER[:3].lower()), answer

    # Every child is owned by the DocModel and labelled; one Job per step of the revision.
    jobs = kube.batch.list_namespaced_job(namespace).items
    assert sorted(j.metadata.labels["docmodel.dev/step"] for j in jobs) == [
        "evaluate",
        "ingest",
        "train",
    ]
    for child in [*jobs, *kube.apps.list_namespaced_deployment(namespace).items, service]:
        (ref,) = child.metadata.owner_references
        assert (ref.kind, ref.name, ref.controller) == ("DocModel", "handbook", True)
        assert child.metadata.labels["app.kubernetes.io/managed-by"] == "docmodel-operator"

    # Events carry the conditions' reasons (posted just after the status that `wait` saw).
    def reasons() -> set[str]:
        events = kube.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=handbook"
        ).items
        return {e.reason for e in events}

    wanted = {"DatasetPublished", "AdapterTrained", "BeatBaseline", "Serving"}
    wait_for(lambda: wanted <= reasons(), 30, f"Events {wanted}")

    # The metrics endpoint serves controller-runtime's names and the domain metrics.
    def metrics_text() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics") as r:
            return str(r.read().decode())

    gate = 'docmodel_gate_decisions_total{reason="BeatBaseline",verdict="Promoted"}'
    wait_for(lambda: gate in metrics_text(), 30, "the gate metric")
    text = metrics_text()
    for metric in (
        'controller_runtime_reconcile_total{controller="docmodel"',
        "controller_runtime_reconcile_errors_total",
        "controller_runtime_reconcile_time_seconds_bucket",
        'docmodel_steps_started_total{step="train"}',
    ):
        assert metric in text, metric
    assert "handbook" not in text and namespace not in text
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.liveness_port}/healthz") as r:
        assert r.status == 200

    # New documents: a new revision trains, is judged against the serving one, takes traffic;
    # the old server goes after the clean-up delay; history holds both.
    put_docs(s3, s3_bucket.name, ["security"])
    obj = wait_status(
        kube,
        namespace,
        "handbook",
        lambda o: (
            (o.get("status") or {}).get("serving", {}).get("revision") not in (None, revision)
        ),
        600,
        "the new revision to serve",
    )
    second = obj["status"]["serving"]["revision"]
    assert [h["revision"] for h in obj["status"]["history"]][:2] == [second, revision]
    wait_for(
        lambda: (
            [d.metadata.name for d in kube.apps.list_namespaced_deployment(namespace).items]
            == [f"handbook-{second}"]
        ),
        60,
        "the old revision's Deployment to go",
    )
    assert (
        kube.core.read_namespaced_service("handbook", namespace).spec.selector[
            "docmodel.dev/revision"
        ]
        == second
    )
    # Only the serving revision's Jobs remain.
    jobs = kube.batch.list_namespaced_job(namespace).items
    assert {j.metadata.labels["docmodel.dev/revision"] for j in jobs} == {second}

    # A spec edit: Ready's observedGeneration follows once the new generation is handled.
    kube.custom.patch_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, "handbook", {"spec": {"historyLimit": 5}}
    )
    generation = get(kube, namespace, "handbook")["metadata"]["generation"]
    obj = wait_status(
        kube,
        namespace,
        "handbook",
        lambda o: (condition(o, "Ready") or {}).get("observedGeneration") == generation,
        60,
        "Ready to follow the new generation",
    )
    assert obj["status"]["observedGeneration"] == generation

    # Secrets never reach status, Events or the operator's log.
    secret_values = [s3_bucket.credentials.secret_key, s3_bucket.credentials.access_key]
    events = kube.core.list_namespaced_event(namespace).items
    haystack = json.dumps(obj) + "".join(e.message or "" for e in events) + operator.text()
    for value in secret_values:
        assert value not in haystack


def test_rejected_candidate_is_never_rolled_out(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator, base_model: str
) -> None:
    # Each question has an answer of its own: the held-out questions' answers cannot be guessed
    # (and the gate's margin of 1.0 cannot be cleared).
    put_docs(
        s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"], None
    )
    body = docmodel(
        "strict",
        s3_bucket.name,
        s3_bucket.endpoint,
        base_model,
        training={"epochs": 1},
        evaluation={"minImprovement": 1.0},
    )
    apply(kube, namespace, body)
    obj = wait_status(
        kube,
        namespace,
        "strict",
        lambda o: (o.get("status") or {}).get("phase") == "Rejected",
        600,
        "the verdict",
    )
    status = obj["status"]
    assert status["candidate"]["verdict"] == "Rejected"
    assert status["candidate"]["score"] is not None and status["candidate"]["baselineScore"]
    assert (condition(obj, "Promoted") or {}).get("reason") == "BelowBaseline"
    ready = condition(obj, "Ready") or {}
    assert (ready.get("status"), ready.get("reason")) == ("False", "NoRevisionPromoted")
    assert "serving" not in status or status["serving"] is None
    assert kube.apps.list_namespaced_deployment(namespace).items == []
    events = kube.core.list_namespaced_event(
        namespace, field_selector="involvedObject.name=strict"
    ).items
    (rejected,) = [e for e in events if e.reason == "BelowBaseline"]
    assert rejected.type == "Warning"
    assert status["candidate"]["score"] in rejected.message
    assert status["candidate"]["baselineScore"] in rejected.message


def test_a_cron_value_out_of_range_is_refused_at_apply_not_in_the_operator(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator, base_model: str
) -> None:
    """What the models refuse, the API server refuses at apply, naming the field: a cron
    minute of 61 never reaches the operator (its `InvalidSpec` stays for specs stored under an
    older CRD; tests/unit/test_operator_reconcile.py)."""
    from kubernetes.client.exceptions import ApiException

    body = docmodel(
        "badcron",
        s3_bucket.name,
        s3_bucket.endpoint,
        base_model,
        retraining={"schedule": "61 * * * *"},
    )
    with pytest.raises(ApiException) as refused:
        apply(kube, namespace, body)
    assert refused.value.status == 422
    assert "spec.retraining.schedule" in str(refused.value.body)
    assert kube.batch.list_namespaced_job(namespace).items == []


def quota(kube: Kube, namespace: str, name: str, hard: dict[str, str]) -> None:
    """A ResourceQuota, once the quota controller has counted what it covers (the quota
    admission refuses everything it covers until then)."""
    kube.core.create_namespaced_resource_quota(
        namespace, {"metadata": {"name": name}, "spec": {"hard": hard}}
    )
    wait_for(
        lambda: kube.core.read_namespaced_resource_quota(name, namespace).status.used or None,
        30,
        f"quota {name} counted",
    )


def test_children_the_cluster_refuses_show_on_the_docmodel_within_seconds(
    devenv: DevEnv,
    kube: Kube,
    namespace: str,
    s3_bucket: S3Bucket,
    base_model: str,
    tmp_path: Path,
) -> None:
    """A quota of no Jobs (the API server refuses the Job), then of no pods (the Job is
    accepted, its controller cannot create the pod): each shows as DataReady=False with the
    API server's reason and words within seconds, with a Warning Event; once the quota is
    gone the step runs."""
    enforce_restricted(kube, namespace)
    s3_bucket.put_secret(devenv, namespace)
    s3_bucket.put_secret(devenv, namespace, "docmodel-store")
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll"])
    quota(kube, namespace, "zero-jobs", {"count/jobs.batch": "0"})
    env = operator_env(
        devenv, s3_bucket.name, namespace, DOCMODEL_OPERATOR_REFUSAL_RETRY_SECONDS="3"
    )
    with running_operator(env, tmp_path / "operator.log") as running:
        apply(kube, namespace, docmodel("quota", s3_bucket.name, s3_bucket.endpoint, base_model))
        applied = time.monotonic()

        def refused(words: str) -> Any:
            def check(o: dict[str, Any]) -> bool:
                ready = condition(o, "DataReady") or {}
                return ready.get("reason") == "Forbidden" and words in ready.get("message", "")

            return check

        obj = wait_status(kube, namespace, "quota", refused("zero-jobs"), 60, "the Job refused")
        seen_after = time.monotonic() - applied
        ready = condition(obj, "DataReady") or {}
        assert ready["status"] == "False"
        assert "the cluster refused the ingest step" in ready["message"]
        assert "exceeded quota: zero-jobs" in ready["message"]
        assert obj["status"]["phase"] == "Ingesting"
        assert kube.batch.list_namespaced_job(namespace).items == []
        events = kube.core.list_namespaced_event(
            namespace, field_selector="involvedObject.name=quota,reason=Forbidden"
        ).items
        assert events and events[0].type == "Warning" and "zero-jobs" in events[0].message

        # Jobs allowed, pods not: the Job is created and its pod refused.
        kube.core.delete_namespaced_resource_quota("zero-jobs", namespace)
        quota(kube, namespace, "zero-pods", {"pods": "0"})
        obj = wait_status(kube, namespace, "quota", refused("zero-pods"), 60, "the pod refused")
        ready = condition(obj, "DataReady") or {}
        assert "the cluster refused the ingest pod" in ready["message"]
        assert (
            'pods "quota-' in ready["message"] and "exceeded quota: zero-pods" in ready["message"]
        )
        assert len(kube.batch.list_namespaced_job(namespace).items) == 1

        # The quota gone, the Job controller creates the pod and the step runs.
        kube.core.delete_namespaced_resource_quota("zero-pods", namespace)
        wait_status(
            kube,
            namespace,
            "quota",
            lambda o: (
                (condition(o, "DataReady") or {}).get("reason") in ("Running", "DatasetPublished")
            ),
            180,
            "the ingest step to run",
        )
        assert "Failed reconcile" not in running.text()
    print(f"refused Job on the DocModel {seen_after:.1f}s after apply")


def failed(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    return wait_status(
        kube,
        namespace,
        name,
        lambda o: (o.get("status") or {}).get("phase") == "Failed",
        300,
        f"{name} to fail",
    )


def test_bad_input_fails_at_once_and_hides_secrets_the_pod_printed(
    devenv: DevEnv, kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator
) -> None:
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    # The base model path is also a Secret's value, so the trainer prints that value when it
    # cannot load the model: lastFailure must not copy it.
    leaked = "/nonexistent/zq-4711-model"
    kube.core.create_namespaced_secret(
        namespace,
        {"metadata": {"name": "hf"}, "stringData": {"token": leaked}},
    )
    body = docmodel(
        "broken",
        s3_bucket.name,
        s3_bucket.endpoint,
        leaked,
        baseModel={"name": leaked, "tokenSecretRef": {"name": "hf", "key": "token"}},
    )
    apply(kube, namespace, body)
    obj = failed(kube, namespace, "broken")
    failure = obj["status"]["lastFailure"]
    assert (failure["stage"], failure["reason"], failure["exitCode"]) == ("train", "BadInput", 2)
    assert failure.get("retryAt") is None and failure["logTail"]
    assert any("[redacted]" in line for line in failure["logTail"]), failure["logTail"]
    trained = condition(obj, "Trained") or {}
    assert (trained.get("status"), trained.get("reason")) == ("False", "BadInput")
    # podFailurePolicy: the first failed pod failed the Job; no retry.
    pods = kube.core.list_namespaced_pod(namespace, label_selector="docmodel.dev/step=train").items
    assert len(pods) == 1
    events = kube.core.list_namespaced_event(namespace).items
    # (The spec names the path too, as this test arranged; status, Events and logs must not.)
    haystack = json.dumps(obj["status"]) + "".join(e.message or "" for e in events)
    assert leaked not in haystack + operator.text()

    # Deleted while the operator is stopped: the DocModel and its children still go.
    operator.stop()
    kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "broken")
    wait_for(
        lambda: (
            not kube.batch.list_namespaced_job(namespace).items
            and not kube.custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)[
                "items"
            ]
        ),
        60,
        "the DocModel and its Jobs to be gone",
    )


def test_crashing_step_is_retried_by_the_job_then_fails_with_its_log_lines(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator, base_model: str
) -> None:
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    body = docmodel(
        "crashy",
        s3_bucket.name,
        s3_bucket.endpoint,
        base_model,
        training={"backoffLimit": 1, "lora": {"targetModules": ["no_such_proj"]}},
    )
    apply(kube, namespace, body)
    obj = failed(kube, namespace, "crashy")
    failure = obj["status"]["lastFailure"]
    assert failure["stage"] == "train" and failure["exitCode"] == 1
    assert failure["reason"] == "BackoffLimitExceeded"
    assert any("no_such_proj" in line for line in failure["logTail"]), failure["logTail"]
    pods = kube.core.list_namespaced_pod(namespace, label_selector="docmodel.dev/step=train").items
    assert len(pods) == 2  # the first try and backoffLimit=1 retry


def reconciles(operator: Operator) -> float:
    """How many reconciles the operator counted (its own /metrics)."""
    url = f"http://127.0.0.1:{operator.metrics_port}/metrics"
    with urllib.request.urlopen(url) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("controller_runtime_reconcile_total{")
    )


def test_of_two_peered_replicas_only_the_higher_priority_acts(
    devenv: DevEnv, crd: str, kube: Kube, namespace: str, s3_bucket: S3Bucket, tmp_path: Path
) -> None:
    s3_bucket.put_secret(devenv, namespace)
    s3_bucket.put_secret(devenv, namespace, "docmodel-store")
    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    peering = f"docmodel-{namespace[-12:]}"
    env = operator_env(devenv, s3_bucket.name, namespace, DOCMODEL_OPERATOR_PEERING=peering)
    with running_operator({**env, "DOCMODEL_OPERATOR_PRIORITY": "20"}, tmp_path / "a.log") as a:
        wait_for(lambda: "Started operator" in a.text(), 60, "the first replica to start")
        low = {
            **env,
            "DOCMODEL_OPERATOR_PRIORITY": "10",
            "DOCMODEL_OPERATOR_LIVENESS_PORT": str(free_port()),
            "DOCMODEL_OPERATOR_METRICS_PORT": str(free_port()),
        }
        with running_operator(low, tmp_path / "b.log") as b:
            wait_for(lambda: "Started operator" in b.text(), 60, "the second replica to start")
            time.sleep(5)  # let the second replica see the first one's peering record
            body = docmodel("peered", s3_bucket.name, s3_bucket.endpoint, "/unused/model")
            apply(kube, namespace, body)
            wait_for(lambda: "Created job=" in a.text(), 60, "the leader to start ingest")
            time.sleep(5)
            # Kopf starts each replica paused until its peering says it leads.
            assert "Resuming operations" not in b.text()
            assert reconciles(b) == 0 and reconciles(a) > 0


def test_operator_killed_at_every_stage_converges_without_duplicates(
    devenv: DevEnv,
    crd: str,
    kube: Kube,
    namespace: str,
    s3_bucket: S3Bucket,
    tmp_path: Path,
    base_model: str,
) -> None:
    s3_bucket.put_secret(devenv, namespace)
    s3_bucket.put_secret(devenv, namespace, "docmodel-store")
    s3 = s3_bucket.client()
    put_docs(s3, s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    env = operator_env(
        devenv, s3_bucket.name, namespace, DOCMODEL_OPERATOR_CLEANUP_DELAY_SECONDS="20"
    )
    log = tmp_path / "operator.log"
    added = AddedEvents(kube, namespace)
    stack = contextlib.ExitStack()
    op = stack.enter_context(running_operator(env, log))

    def kill() -> None:
        op.stop(signal.SIGKILL)

    def start() -> Operator:
        return stack.enter_context(running_operator(env, log))

    def jobs(step: str) -> list[Any]:
        return kube.batch.list_namespaced_job(
            namespace, label_selector=f"docmodel.dev/step={step}"
        ).items

    def pods_running(step: str) -> bool:
        pods = kube.core.list_namespaced_pod(
            namespace, label_selector=f"docmodel.dev/step={step}"
        ).items
        return any(p.status.phase == "Running" for p in pods)

    with stack:
        apply(kube, namespace, docmodel("handbook", s3_bucket.name, s3_bucket.endpoint, base_model))
        # 1. Right after the ingest Job is created.
        wait_for(lambda: jobs("ingest"), 120, "the ingest Job", interval=0.05)
        kill()
        op = start()
        # 2. Mid-training.
        wait_for(lambda: pods_running("train"), 300, "the training pod to run", interval=0.1)
        kill()
        op = start()
        # 3. After evaluation, before the verdict is recorded: the Job finishes while the
        #    operator is down.
        wait_for(lambda: jobs("evaluate"), 300, "the evaluation Job", interval=0.1)
        kill()
        wait_for(
            lambda: any(
                c.type == "Complete" and c.status == "True"
                for j in jobs("evaluate")
                for c in (j.status.conditions or [])
            ),
            300,
            "the evaluation to finish",
        )
        assert not (get(kube, namespace, "handbook")["status"].get("candidate") or {}).get(
            "verdict"
        )
        op = start()
        # 4. Mid-rollout, before the switch.
        wait_for(lambda: kube.apps.list_namespaced_deployment(namespace).items, 300, "the server")
        kill()
        op = start()
        kubectl(
            devenv,
            "wait",
            "-n",
            namespace,
            "--for=condition=Ready",
            "dm/handbook",
            "--timeout=600s",
        )
        first = get(kube, namespace, "handbook")["status"]["serving"]["revision"]

        # 5. After the switch to a new revision, before the old server is cleaned up.
        put_docs(s3, s3_bucket.name, ["security"])

        def switched() -> bool:
            svc = kube.core.read_namespaced_service("handbook", namespace)
            return svc.spec.selector["docmodel.dev/revision"] != first

        wait_for(switched, 600, "traffic to move to the new revision", interval=0.1)
        assert kube.apps.read_namespaced_deployment(f"handbook-{first}", namespace)
        kill()
        op = start()
        wait_for(
            lambda: len(kube.apps.list_namespaced_deployment(namespace).items) == 1,
            120,
            "the old server to be removed",
        )
        obj = get(kube, namespace, "handbook")
        assert obj["status"]["phase"] == "Ready"
        second = obj["status"]["serving"]["revision"]
        assert [h["revision"] for h in obj["status"]["history"]][:2] == [second, first]

        # 6. During deletion: the DocModel and its children go without the operator.
        kill()
        kube.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "handbook")
        op = start()
        wait_for(
            lambda: (
                not kube.batch.list_namespaced_job(namespace).items
                and not kube.apps.list_namespaced_deployment(namespace).items
                and not kube.custom.list_namespaced_custom_object(
                    GROUP, VERSION, namespace, PLURAL
                )["items"]
            ),
            120,
            "the DocModel and its children to be gone",
        )
    added.stop()
    assert added.counts, "the watch saw nothing"
    duplicated = {name: n for name, n in added.counts.items() if n > 1}
    assert not duplicated, duplicated
    assert sum(1 for k in added.counts if k.startswith("Deployment/")) == 2
    assert sum(1 for k in added.counts if k.startswith("Job/")) == 6


def test_server_that_never_becomes_ready_leaves_traffic_where_it_was(
    devenv: DevEnv,
    kube: Kube,
    namespace: str,
    s3_bucket: S3Bucket,
    operator: Operator,
    base_model: str,
    tmp_path: Path,
) -> None:
    s3 = s3_bucket.client()
    put_docs(s3, s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    body = docmodel(
        "handbook",
        s3_bucket.name,
        s3_bucket.endpoint,
        base_model,
        serving={"progressDeadlineSeconds": 30},
    )
    apply(kube, namespace, body)
    kubectl(
        devenv, "wait", "-n", namespace, "--for=condition=Ready", "dm/handbook", "--timeout=600s"
    )
    first = get(kube, namespace, "handbook")["status"]["serving"]["revision"]

    # The next revision's adapter is damaged after its evaluation (the operator is down, so
    # nothing is deployed before): its server refuses the adapter and never becomes Ready.
    put_docs(s3, s3_bucket.name, ["security"])
    wait_for(
        lambda: any(
            j.metadata.labels["docmodel.dev/revision"] != first
            for j in kube.batch.list_namespaced_job(
                namespace, label_selector="docmodel.dev/step=evaluate"
            ).items
        ),
        300,
        "the new revision's evaluation",
    )
    operator.stop(signal.SIGKILL)
    second = get(kube, namespace, "handbook")["status"]["revision"]
    wait_for(
        lambda: s3_has(s3, s3_bucket.name, f"artifacts/{namespace}/handbook/rev-{second}/eval/"),
        300,
        "the new revision's report",
    )
    key = f"artifacts/{namespace}/handbook/rev-{second}/adapter/adapter_model.safetensors"
    s3.put_object(Bucket=s3_bucket.name, Key=key, Body=b"damaged")
    env = operator_env(devenv, s3_bucket.name, namespace)
    with running_operator(env, tmp_path / "operator-2.log"):
        obj = wait_status(
            kube,
            namespace,
            "handbook",
            lambda o: (condition(o, "RolledOut") or {}).get("reason") == "RolloutFailed",
            300,
            "the rollout to fail",
        )
        status = obj["status"]
        assert status["serving"]["revision"] == first
        assert status["history"][0]["revision"] == second
        assert status["history"][0]["rollout"] == "RolloutFailed"
        ready = condition(obj, "Ready") or {}
        assert (ready.get("status"), ready.get("reason")) == ("True", "Serving")
        assert (
            f"traffic stays on revision {first}" in (condition(obj, "RolledOut") or {})["message"]
        )
        service = kube.core.read_namespaced_service("handbook", namespace)
        assert service.spec.selector["docmodel.dev/revision"] == first
        wait_for(
            lambda: (
                [d.metadata.name for d in kube.apps.list_namespaced_deployment(namespace).items]
                == [f"handbook-{first}"]
            ),
            60,
            "the failed revision's server to be removed",
        )


def s3_has(s3: Any, bucket: str, prefix: str) -> bool:
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix)
    return any(o["Key"].endswith("manifest.json") for o in listed.get("Contents", []))
