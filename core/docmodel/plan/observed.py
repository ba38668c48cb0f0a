"""What an executor observed and hands the planner: the target revision's Jobs, the servers by
revision, where traffic goes, the children the cluster refused."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from docmodel.builders import Step
from docmodel.revision import RevisionArtifacts, SourceCheck


@dataclass(frozen=True)
class JobState:
    """One step's child (a Job, or a local process) for the target revision."""

    phase: Literal["Pending", "Running", "Succeeded", "Failed"]
    exit_code: int | None = None
    reason: str | None = None  # Kubernetes' reason: Unschedulable, OOMKilled, DeadlineExceeded
    message: str = ""
    log_tail: tuple[str, ...] = ()
    since: datetime | None = None  # when it entered this phase
    # The cluster refuses its pod (Pod Security admission, a quota, a webhook): `reason` is
    # the API server's (Forbidden, Invalid), `message` its words. Shown at once, not after
    # the pending warning: waiting does not help.
    refused: bool = False
    # Pending with no pod yet: the executor looks again shortly for why (a refused pod).
    awaiting_pod: bool = False
    # Waiting in a Kueue queue for its quota (created suspended; `message` says which queue
    # and, when Kueue has said it, why it is not admitted yet).
    queued: bool = False


# A Job with no pod yet is looked at again this soon: its controller's reason, if the cluster
# refuses the pod, is then on the DocModel within seconds.
POD_LOOK_AGAIN_SECONDS = 3.0
# A queued step is looked at again this often (its admission also wakes the pass at once).
QUEUED_LOOK_AGAIN_SECONDS = 30.0


@dataclass(frozen=True)
class Refusal:
    """The cluster refused a child: the API server (an admission check, a quota, a webhook,
    a field it does not accept) refused the object itself, or its controller could not create
    its pods. `reason` is the API server's (Forbidden, Invalid, ...)."""

    reason: str
    message: str
    at: datetime


@dataclass(frozen=True)
class ServerState:
    """One revision's server (a Deployment, or a local process)."""

    ready: bool
    created_at: datetime
    serving_digest: str | None = None  # what it was built from (builders.serving_digest)
    endpoint: str | None = None  # where clients reach the DocModel once traffic is here
    message: str = ""  # why it is not ready, when known
    failed: bool = False  # it will not become ready (past its deadline, or the process exited)
    refused: Refusal | None = None  # the cluster refuses its pods


@dataclass(frozen=True)
class Observed:
    now: datetime
    source: SourceCheck | None = None  # None: the source was not listed this time
    artifacts: RevisionArtifacts = field(default_factory=RevisionArtifacts)  # of the target
    jobs: Mapping[Step, JobState] = field(default_factory=dict)  # the target's, by step
    job_revisions: frozenset[str] = frozenset()  # every revision that has Jobs
    servers: Mapping[str, ServerState] = field(default_factory=dict)  # by revision
    traffic: str | None = None  # the revision the Service (local: the state) points at
    missing_secrets: tuple[str, ...] = ()  # Secrets the DocModel's pods need that do not exist
    # Children the cluster refused to create, by what they were for (`refusal_key`): a
    # step, a revision's server (its Deployment, budget and policy), the Service.
    refused: Mapping[str, Refusal] = field(default_factory=dict)
