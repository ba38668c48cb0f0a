"""What the planner asks an executor to do (start a step, delete Jobs, deploy, switch traffic,
remove a server), the executor-wide timings, and the plan itself."""

from __future__ import annotations

from dataclasses import dataclass

from docmodel.api import (
    DocModelStatus,
)
from docmodel.builders import Step
from docmodel.status import (
    Event,
)


@dataclass(frozen=True)
class StartStep:
    step: Step
    revision: str
    serving_revision: str | None = None  # evaluation: also score what serves now


@dataclass(frozen=True)
class DeleteJobs:
    revision: str
    reason: str  # Superseded, Retry, Replaced


@dataclass(frozen=True)
class Deploy:
    """Create the revision's server, or update it to the current serving settings."""

    revision: str


@dataclass(frozen=True)
class SwitchTraffic:
    revision: str


@dataclass(frozen=True)
class RemoveServer:
    revision: str
    reason: str  # Replaced, RolloutFailed


Action = StartStep | DeleteJobs | Deploy | SwitchTraffic | RemoveServer


def refusal_key(action: Action) -> str:
    """What a refused action was for: a step's name, `server/<revision>` or `traffic`."""
    if isinstance(action, StartStep):
        return action.step
    if isinstance(action, SwitchTraffic):
        return "traffic"
    return f"server/{action.revision}"


@dataclass(frozen=True)
class Policy:
    """Executor-wide timings (the operator's settings; local mode uses the defaults)."""

    cleanup_delay_seconds: float = 120.0  # the old revision's server lives on this long
    pending_warning_seconds: float = 300.0  # a pod Pending this long gets a condition
    # A child the cluster refused is tried again this long after (a raised quota or a fixed
    # webhook lets it through; a changed spec tries again at once).
    refusal_retry_seconds: float = 30.0


@dataclass(frozen=True)
class Plan:
    status: DocModelStatus
    actions: tuple[Action, ...]
    events: tuple[Event, ...]
    requeue_after: float | None  # look again after this many seconds (timers, retries, polls)
    permanent: bool  # failed for good: nothing more happens until the spec or the docs change
