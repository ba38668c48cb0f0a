"""What the operator reads from cluster objects, as the planner observes it. The objects are
built with the client's models and turned into the API's JSON, as the watches deliver them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k

from docmodel.api import parse_docmodel
from docmodel.builders import job_name
from docmodel_operator.observe import job_state, refused_job, server_state, step_jobs, traffic
from docmodel_operator.reconcile import parse_status, status_patch

API = k.ApiClient()


def plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = API.sanitize_for_serialization(obj)
    return out


T0 = datetime(2026, 12, 1, tzinfo=UTC)
T1 = datetime(2026, 12, 1, 0, 5, tzinfo=UTC)
DM = parse_docmodel(
    {
        "apiVersion": "docmodel.dev/v1alpha1",
        "kind": "DocModel",
        "metadata": {"name": "handbook", "namespace": "ml"},
        "spec": {"source": {"bucket": "docs"}},
    }
)


def job(
    name: str, *conditions: k.V1JobCondition, labels: dict[str, str] | None = None
) -> dict[str, Any]:
    return plain(
        k.V1Job(
            metadata=k.V1ObjectMeta(name=name, creation_timestamp=T0, labels=labels or {}),
            status=k.V1JobStatus(conditions=list(conditions)),
        )
    )


def cond(type_: str, reason: str = "", message: str = "") -> k.V1JobCondition:
    return k.V1JobCondition(
        type=type_, status="True", reason=reason, message=message, last_transition_time=T1
    )


def pod(
    job_name_: str,
    phase: str = "Failed",
    terminated: k.V1ContainerStateTerminated | None = None,
    scheduled: k.V1PodCondition | None = None,
) -> dict[str, Any]:
    statuses = []
    if terminated is not None:
        statuses.append(
            k.V1ContainerStatus(
                name="train",
                image="x",
                image_id="",
                ready=False,
                restart_count=0,
                state=k.V1ContainerState(terminated=terminated),
            )
        )
    return plain(
        k.V1Pod(
            metadata=k.V1ObjectMeta(
                name=f"{job_name_}-abcde",
                creation_timestamp=T0,
                labels={"batch.kubernetes.io/job-name": job_name_},
            ),
            status=k.V1PodStatus(
                phase=phase,
                container_statuses=statuses,
                conditions=[scheduled] if scheduled else [],
            ),
        )
    )


def test_completed_job_succeeded() -> None:
    assert job_state(job("j", cond("Complete")), []).phase == "Succeeded"


def test_failed_job_gives_the_pods_exit_code_reason_and_hidden_log_tail() -> None:
    term = k.V1ContainerStateTerminated(
        exit_code=137,
        reason="OOMKilled",
        message="loading\ntoken=hunter2-secret\nKilled",
        finished_at=T1,
    )
    state = job_state(
        job("j", cond("Failed", "BackoffLimitExceeded", "Job has reached the backoff limit")),
        [pod("j", terminated=term), pod("other", terminated=term)],
        secrets=["hunter2-secret"],
    )
    assert (state.phase, state.exit_code, state.reason) == ("Failed", 137, "OOMKilled")
    assert state.log_tail == ("loading", "token=[redacted]", "Killed")
    assert state.since == T1


def test_unschedulable_pod_is_pending_with_the_schedulers_message() -> None:
    scheduled = k.V1PodCondition(
        type="PodScheduled",
        status="False",
        reason="Unschedulable",
        message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
    )
    state = job_state(job("j"), [pod("j", phase="Pending", scheduled=scheduled)])
    assert (state.phase, state.reason) == ("Pending", "Unschedulable")
    assert "Insufficient nvidia.com/gpu" in state.message
    assert job_state(job("j"), [pod("j", phase="Running")]).phase == "Running"


def test_step_jobs_pick_the_targets_jobs_and_list_every_revision() -> None:
    labels = {"docmodel.dev/revision": "r1", "docmodel.dev/step": "train"}
    mine = job(job_name(DM, "train", "r1"), cond("Complete"), labels=labels)
    old = job("handbook-r0-train", labels={**labels, "docmodel.dev/revision": "r0"})
    states, revisions = step_jobs(DM, [mine, old], [], "r1", None)
    assert set(states) == {"train"} and states["train"].phase == "Succeeded"
    assert revisions == frozenset({"r0", "r1"})


def deployment(**status: int) -> dict[str, Any]:
    return plain(
        k.V1Deployment(
            metadata=k.V1ObjectMeta(
                name="handbook-r1",
                generation=2,
                creation_timestamp=T0,
                labels={"docmodel.dev/revision": "r1"},
                annotations={"docmodel.dev/serving-digest": "abc"},
            ),
            spec=k.V1DeploymentSpec(
                replicas=2, selector=k.V1LabelSelector(), template=k.V1PodTemplateSpec()
            ),
            status=k.V1DeploymentStatus(**status),
        )
    )


def test_server_is_ready_only_when_every_replica_of_the_current_spec_is() -> None:
    ready = server_state(
        deployment(ready_replicas=2, updated_replicas=2, observed_generation=2), "http://x/v1"
    )
    assert ready.ready and ready.serving_digest == "abc" and ready.endpoint == "http://x/v1"
    stale = server_state(
        deployment(ready_replicas=2, updated_replicas=2, observed_generation=1), None
    )
    assert not stale.ready
    stuck = deployment(ready_replicas=0, observed_generation=2)
    stuck["status"]["conditions"] = [
        plain(
            k.V1DeploymentCondition(
                type="Progressing",
                status="False",
                reason="ProgressDeadlineExceeded",
                message='ReplicaSet "handbook-r1-5d9" has timed out progressing.',
            )
        )
    ]
    failed = server_state(stuck, None)
    assert failed.failed and "timed out progressing" in failed.message


def test_traffic_is_the_services_revision() -> None:
    def service(name: str, revision: str) -> dict[str, Any]:
        return plain(
            k.V1Service(
                metadata=k.V1ObjectMeta(name=name),
                spec=k.V1ServiceSpec(selector={"docmodel.dev/revision": revision}),
            )
        )

    services = [service("other", "r0"), service("handbook", "r1")]
    assert traffic(services, "handbook") == "r1" and traffic([], "handbook") is None


def test_status_round_trip_ignores_other_writers_fields() -> None:
    status = parse_status({"phase": "Ready", "kopf": {"progress": {}}, "revision": "r1"})
    assert status.phase == "Ready" and status.revision == "r1"
    patch = status_patch(status)
    assert patch["phase"] == "Ready" and patch["lastFailure"] is None


FORBIDDEN = (
    'Error creating: pods "handbook-r1-train-x1y2z" is forbidden: violates PodSecurity '
    '"restricted:latest": runAsNonRoot != true'
)


def event(reason: str, message: str, at: datetime) -> dict[str, Any]:
    return plain(
        k.CoreV1Event(
            metadata=k.V1ObjectMeta(name=f"e-{reason}"),
            involved_object=k.V1ObjectReference(kind="Job", name="handbook-r1-train"),
            reason=reason,
            message=message,
            last_timestamp=at,
        )
    )


def test_job_without_a_pod_awaits_it_and_its_controllers_refusal_is_the_reason() -> None:
    waiting = job_state(job("handbook-r1-train"), [])
    assert waiting.phase == "Pending" and waiting.awaiting_pod and not waiting.refused
    assert waiting.since == T0
    # No FailedCreate yet: unchanged.
    assert refused_job(waiting, [event("SuccessfulCreate", "Created pod: x", T0)]) == waiting
    events = [
        event("FailedCreate", "Error creating: pods is invalid: old", T0),
        event("FailedCreate", FORBIDDEN + " (token hunter2)", T1),
    ]
    refused = refused_job(waiting, events, ["hunter2"])
    assert refused.refused and refused.reason == "Forbidden"
    assert refused.message.startswith('pods "handbook-r1-train-x1y2z" is forbidden')
    assert "hunter2" not in refused.message and "[redacted]" in refused.message
    # With its pod, a Job is running, never awaiting.
    assert not job_state(
        job("handbook-r1-train"), [pod("handbook-r1-train", "Running")]
    ).awaiting_pod


def test_deployment_whose_replicaset_cannot_create_pods_is_refused() -> None:
    quota = 'pods "handbook-r1-5d8f-abcde" is forbidden: exceeded quota: zero'
    body = deployment(ready_replicas=0, updated_replicas=0, observed_generation=2)
    body["status"]["conditions"] = [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "reason": "FailedCreate",
            "message": quota,
            "lastTransitionTime": "2026-12-01T00:05:00Z",
        }
    ]
    state = server_state(body, "http://x/v1")
    assert state.refused is not None
    assert (state.refused.reason, state.refused.message, state.refused.at) == (
        "Forbidden",
        quota,
        T1,
    )
    assert not state.ready and not state.failed
