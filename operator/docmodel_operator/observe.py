"""From cluster objects to what the planner observes: Jobs and their pods as `JobState`,
server Deployments as `ServerState`, the Service's selector as the revision traffic goes to.

Pure functions of the objects as the API serves them (plain JSON, as the watches deliver them
to the cache), so they are tested without a cluster.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from docmodel import labels
from docmodel.builders import STEPS, Step, job_name
from docmodel.plan import JobState, Refusal, ServerState
from docmodel.status import redact

JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name", labels.TRAINING_JOB_NAME)
# A Job's pod normally follows within a second; past this, its Events are read for why not.
POD_GRACE_SECONDS = 2.0
LOG_TAIL_LINES = 20


Obj = dict[str, Any]


def _meta(obj: Obj) -> Obj:
    return obj.get("metadata") or {}


def _status(obj: Obj) -> Obj:
    return obj.get("status") or {}


def _labels(obj: Obj) -> dict[str, str]:
    return dict(_meta(obj).get("labels") or {})


def _time(value: Any) -> datetime | None:
    """A Kubernetes timestamp (RFC 3339, `Z` for UTC)."""
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _true_conditions(obj: Obj) -> dict[str, Obj]:
    return {c["type"]: c for c in _status(obj).get("conditions") or [] if c.get("status") == "True"}


def _job_of(pod: Obj) -> str | None:
    labels = _labels(pod)
    return next((labels[k] for k in JOB_NAME_LABELS if k in labels), None)


def _terminated(pod: Obj) -> Obj | None:
    for status in _status(pod).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is not None:
            return dict(terminated)
    return None


def queued_state(obj: Obj, workloads: Iterable[Obj] = ()) -> JobState | None:
    """A Job or PyTorchJob that waits in its Kueue queue (created suspended, not admitted
    yet), with Kueue's reason from its Workload when there is one; None when it is not
    queued."""
    queue = _labels(obj).get(labels.QUEUE_NAME)
    spec = obj.get("spec") or {}
    suspended = spec.get("suspend") or (spec.get("runPolicy") or {}).get("suspend")
    if not queue or not suspended:
        return None
    message = f"waiting for quota in Kueue LocalQueue {queue}"
    for workload in workloads:
        for cond in _status(workload).get("conditions") or []:
            reserved = cond.get("type") == "QuotaReserved"
            if reserved and cond.get("status") == "False" and cond.get("message"):
                message += f": {cond['message']}"
    return JobState(
        "Pending",
        reason="Queued",
        message=message,
        since=_time(_meta(obj).get("creationTimestamp")),
        queued=True,
    )


def job_state(job: Obj, pods: Iterable[Obj], secrets: Iterable[str] = ()) -> JobState:
    """What one Job (or a training engine's PyTorchJob or TrainJob) says: done, failed (with
    the last pod's exit code, reason and log lines, Secret values hidden), waiting to be
    scheduled, or running."""
    conditions = _true_conditions(job)
    done = conditions.get("Complete") or conditions.get("Succeeded")
    if done is not None:
        return JobState("Succeeded", exit_code=0, since=_time(done.get("lastTransitionTime")))
    failed = conditions.get("Failed")
    own = [p for p in pods if _job_of(p) == _meta(job).get("name")]
    if failed is not None:
        finished = [(p, t) for p in own if (t := _terminated(p)) is not None]
        finished.sort(
            key=lambda pt: str(pt[1].get("finishedAt") or _meta(pt[0]).get("creationTimestamp"))
        )
        exit_code, reason, tail = None, failed.get("reason"), []
        if finished:
            _, term = finished[-1]
            exit_code = term.get("exitCode")
            if term.get("reason") == "OOMKilled":
                reason = "OOMKilled"
            tail = [line for line in (term.get("message") or "").splitlines() if line.strip()]
        return JobState(
            "Failed",
            exit_code=exit_code,
            reason=reason,
            message=" ".join(redact([failed.get("message") or ""], secrets)),
            log_tail=tuple(redact(tail[-LOG_TAIL_LINES:], secrets)),
            since=_time(failed.get("lastTransitionTime")),
        )
    for pod in own:
        if _status(pod).get("phase") != "Pending":
            continue
        scheduled = next(
            (c for c in _status(pod).get("conditions") or [] if c.get("type") == "PodScheduled"),
            None,
        )
        if scheduled is not None and scheduled.get("status") == "False":
            return JobState(
                "Pending",
                reason=scheduled.get("reason") or "Unschedulable",
                message=scheduled.get("message") or "",
                since=_time(_meta(pod).get("creationTimestamp")),
            )
    created = _time(_meta(job).get("creationTimestamp"))
    if not own and not _status(job).get("active"):
        # A Job's controller says in Events why it makes no pod; an engine's conditions say it.
        is_job = job.get("kind", "Job") == "Job"
        return JobState("Pending", reason="NoPod", since=created, awaiting_pod=is_job)
    return JobState("Running", since=created)


def refused_reason(message: str) -> str:
    """The API server's reason in a controller's "Error creating: ..." message: `pods "x" is
    forbidden: ...` is Forbidden, `... is invalid: ...` Invalid."""
    if " is forbidden" in message:
        return "Forbidden"
    if " is invalid" in message:
        return "Invalid"
    return "FailedCreate"


def refused_job(job: JobState, events: Iterable[Obj], secrets: Iterable[str] = ()) -> JobState:
    """`job` (awaiting its pod) as refused when its controller's newest FailedCreate Event
    says why; unchanged when there is none."""
    failed = [e for e in events if e.get("reason") == "FailedCreate" and e.get("message")]
    if not failed:
        return job
    newest = max(failed, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))
    message = str(newest["message"]).removeprefix("Error creating: ")
    return JobState(
        "Pending",
        reason=refused_reason(message),
        message=" ".join(redact([message], secrets)),
        since=job.since,
        refused=True,
    )


def step_jobs(
    dm: Any,
    jobs: Iterable[Obj],
    pods: Iterable[Obj],
    target: str | None,
    serving: str | None,
    secrets: Iterable[str] = (),
) -> tuple[dict[Step, JobState], frozenset[str]]:
    """The target revision's Job of each step (evaluation: the one for today's settings and
    serving revision), and every revision that has Jobs at all."""
    jobs = [j for j in jobs if not _meta(j).get("deletionTimestamp")]
    pods = list(pods)
    revisions = frozenset(
        _labels(j)[labels.REVISION] for j in jobs if labels.REVISION in _labels(j)
    )
    by_name = {_meta(j).get("name"): j for j in jobs}
    states: dict[Step, JobState] = {}
    if target is not None:
        for step in STEPS:
            job = by_name.get(job_name(dm, step, target, serving))
            if job is not None and _labels(job).get(labels.STEP) == step:
                states[step] = queued_state(job) or job_state(job, pods, secrets)
    return states, revisions


def server_state(deployment: Obj, endpoint: str | None, pods: Iterable[Obj] = ()) -> ServerState:
    """A revision's Deployment: ready when every replica of the current spec is ready; failed
    past its progress deadline (Kubernetes' own ProgressDeadlineExceeded)."""
    spec, status, meta = deployment.get("spec") or {}, _status(deployment), _meta(deployment)
    wanted = spec["replicas"] if spec.get("replicas") is not None else 1
    ready = (
        (status.get("readyReplicas") or 0) >= wanted
        and (status.get("updatedReplicas") or 0) >= wanted
        and (status.get("observedGeneration") or 0) >= (meta.get("generation") or 0)
    )
    failed, messages, refused = False, [], None
    for cond in status.get("conditions") or []:
        if cond.get("type") == "Progressing" and cond.get("reason") == "ProgressDeadlineExceeded":
            failed = True
        if cond.get("type") == "ReplicaFailure" and cond.get("status") == "True":
            message = str(cond.get("message") or "")
            refused = Refusal(
                refused_reason(message),
                message,
                _time(cond.get("lastTransitionTime")) or datetime.now(UTC),
            )
        if cond.get("status") == "False" and cond.get("message"):
            messages.append(cond["message"])
    revision = _labels(deployment).get(labels.REVISION)
    for pod in pods:
        if _labels(pod).get(labels.REVISION) != revision or _job_of(pod) is not None:
            continue
        for cs in _status(pod).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason"):
                messages.append(f"pod {_meta(pod).get('name')}: {waiting['reason']}")
    annotations = meta.get("annotations") or {}
    return ServerState(
        ready=ready,
        created_at=_time(meta.get("creationTimestamp")) or datetime.now(UTC),
        serving_digest=annotations.get(labels.SERVING_DIGEST),
        endpoint=endpoint,
        message="; ".join(messages),
        failed=failed,
        refused=refused,
    )


def servers(
    deployments: Iterable[Obj], endpoint: str | None, pods: Iterable[Obj] = ()
) -> dict[str, ServerState]:
    pods = list(pods)
    out = {}
    for deployment in deployments:
        revision = _labels(deployment).get(labels.REVISION)
        if revision and not _meta(deployment).get("deletionTimestamp"):
            out[revision] = server_state(deployment, endpoint, pods)
    return out


def traffic(services: Iterable[Obj], name: str) -> str | None:
    """The revision the DocModel's Service (`name`, among its labelled Services) selects."""
    for service in services:
        if _meta(service).get("name") == name:
            selector = (service.get("spec") or {}).get("selector") or {}
            return selector.get(labels.REVISION)
    return None
