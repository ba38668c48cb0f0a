"""From cluster objects to what the planner observes: Jobs and their pods as `JobState`,
server Deployments as `ServerState`, the Service's selector as the revision traffic goes to.

Pure functions of the objects the client returned, so they are tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from docmodel.builders import (
    ANNOTATION_SERVING_DIGEST,
    LABEL_REVISION,
    LABEL_STEP,
    STEPS,
    Step,
    job_name,
)
from docmodel.plan import JobState, ServerState
from docmodel.status import redact

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
LOG_TAIL_LINES = 20


def _labels(obj: Any) -> dict[str, str]:
    return dict(obj.metadata.labels or {})


def _true_conditions(obj: Any) -> dict[str, Any]:
    return {c.type: c for c in (obj.status.conditions or []) if c.status == "True"}


def _job_of(pod: Any) -> str | None:
    labels = _labels(pod)
    return next((labels[k] for k in JOB_NAME_LABELS if k in labels), None)


def _terminated(pod: Any) -> Any | None:
    for status in pod.status.container_statuses or []:
        if status.state is not None and status.state.terminated is not None:
            return status.state.terminated
    return None


def job_state(job: Any, pods: Iterable[Any], secrets: Iterable[str] = ()) -> JobState:
    """What one Job says: done, failed (with the last pod's exit code, reason and log lines,
    Secret values hidden), waiting to be scheduled, or running."""
    conditions = _true_conditions(job)
    if "Complete" in conditions:
        return JobState("Succeeded", exit_code=0, since=conditions["Complete"].last_transition_time)
    failed = conditions.get("Failed")
    own = [p for p in pods if _job_of(p) == job.metadata.name]
    if failed is not None:
        finished = [(p, t) for p in own if (t := _terminated(p)) is not None]
        finished.sort(key=lambda pt: pt[1].finished_at or pt[0].metadata.creation_timestamp)
        exit_code, reason, tail = None, failed.reason, []
        if finished:
            _, term = finished[-1]
            exit_code = term.exit_code
            if term.reason == "OOMKilled":
                reason = "OOMKilled"
            tail = [line for line in (term.message or "").splitlines() if line.strip()]
        return JobState(
            "Failed",
            exit_code=exit_code,
            reason=reason,
            message=" ".join(redact([failed.message or ""], secrets)),
            log_tail=tuple(redact(tail[-LOG_TAIL_LINES:], secrets)),
            since=failed.last_transition_time,
        )
    for pod in own:
        if pod.status.phase != "Pending":
            continue
        scheduled = next((c for c in pod.status.conditions or [] if c.type == "PodScheduled"), None)
        if scheduled is not None and scheduled.status == "False":
            return JobState(
                "Pending",
                reason=scheduled.reason or "Unschedulable",
                message=scheduled.message or "",
                since=pod.metadata.creation_timestamp,
            )
    return JobState("Running", since=job.metadata.creation_timestamp)


def step_jobs(
    dm: Any,
    jobs: Iterable[Any],
    pods: Iterable[Any],
    target: str | None,
    serving: str | None,
    secrets: Iterable[str] = (),
) -> tuple[dict[Step, JobState], frozenset[str]]:
    """The target revision's Job of each step (evaluation: the one for today's settings and
    serving revision), and every revision that has Jobs at all."""
    jobs = [j for j in jobs if j.metadata.deletion_timestamp is None]
    pods = list(pods)
    revisions = frozenset(_labels(j)[LABEL_REVISION] for j in jobs if LABEL_REVISION in _labels(j))
    by_name = {j.metadata.name: j for j in jobs}
    states: dict[Step, JobState] = {}
    if target is not None:
        for step in STEPS:
            job = by_name.get(job_name(dm, step, target, serving))
            if job is not None and _labels(job).get(LABEL_STEP) == step:
                states[step] = job_state(job, pods, secrets)
    return states, revisions


def server_state(deployment: Any, endpoint: str | None, pods: Iterable[Any] = ()) -> ServerState:
    """A revision's Deployment: ready when every replica of the current spec is ready; failed
    past its progress deadline (Kubernetes' own ProgressDeadlineExceeded)."""
    spec, status = deployment.spec, deployment.status
    wanted = spec.replicas if spec.replicas is not None else 1
    ready = (
        (status.ready_replicas or 0) >= wanted
        and (status.updated_replicas or 0) >= wanted
        and (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
    )
    failed, messages = False, []
    for cond in status.conditions or []:
        if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded":
            failed = True
        if cond.status == "False" and cond.message:
            messages.append(cond.message)
    revision = _labels(deployment).get(LABEL_REVISION)
    for pod in pods:
        if _labels(pod).get(LABEL_REVISION) != revision or _job_of(pod) is not None:
            continue
        for cs in pod.status.container_statuses or []:
            if cs.state is not None and cs.state.waiting is not None and cs.state.waiting.reason:
                messages.append(f"pod {pod.metadata.name}: {cs.state.waiting.reason}")
    annotations = deployment.metadata.annotations or {}
    return ServerState(
        ready=ready,
        created_at=deployment.metadata.creation_timestamp,
        serving_digest=annotations.get(ANNOTATION_SERVING_DIGEST),
        endpoint=endpoint,
        message="; ".join(messages),
        failed=failed,
    )


def servers(
    deployments: Iterable[Any], endpoint: str | None, pods: Iterable[Any] = ()
) -> dict[str, ServerState]:
    pods = list(pods)
    out = {}
    for deployment in deployments:
        revision = _labels(deployment).get(LABEL_REVISION)
        if revision and deployment.metadata.deletion_timestamp is None:
            out[revision] = server_state(deployment, endpoint, pods)
    return out


def traffic(service: Any | None) -> str | None:
    if service is None or service.spec is None:
        return None
    selector = service.spec.selector or {}
    return selector.get(LABEL_REVISION)
