"""Status helpers: conditions, history and events, the same for the operator and local mode.

Status is a public API (cert-manager's conventions): typed condition types with CamelCase
reasons; `lastTransitionTime` moves only when a condition's status flips; every condition
carries the generation it was set for; history is newest first and trimmed to `historyLimit`.
Everything here is pure: a new status is returned, nothing is written.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from docmodel.api import Condition, ConditionType, DocModelStatus, HistoryEntry

DATA_READY: ConditionType = "DataReady"
TRAINED: ConditionType = "Trained"
EVALUATED: ConditionType = "Evaluated"
PROMOTED: ConditionType = "Promoted"
ROLLED_OUT: ConditionType = "RolledOut"
READY: ConditionType = "Ready"
CONDITION_TYPES: tuple[ConditionType, ...] = (
    DATA_READY,
    TRAINED,
    EVALUATED,
    PROMOTED,
    ROLLED_OUT,
    READY,
)
# The conditions that describe the revision being worked on (reset when a new one starts);
# RolledOut and Ready describe what serves.
REVISION_CONDITIONS: tuple[ConditionType, ...] = (DATA_READY, TRAINED, EVALUATED, PROMOTED)

ConditionStatus = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event worth a user's attention (a condition that changed)."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def get_condition(conditions: Iterable[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)


def set_condition(
    conditions: list[Condition],
    type_: ConditionType,
    status: ConditionStatus,
    reason: str,
    message: str,
    generation: int | None,
    now: datetime,
) -> list[Condition]:
    """Conditions with `type_` set; its `lastTransitionTime` changes only when `status` flips.

    The result keeps the canonical order of `CONDITION_TYPES`.
    """
    old = get_condition(conditions, type_)
    changed = old is None or old.status != status
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=now if changed or old is None else old.last_transition_time,
    )
    by_type = {c.type: c for c in conditions}
    by_type[type_] = new
    ordered = [by_type.pop(t) for t in CONDITION_TYPES if t in by_type]
    return ordered + list(by_type.values())


def condition_events(before: Iterable[Condition], after: Iterable[Condition]) -> list[Event]:
    """One Event per condition whose status or reason changed (reason and message as set).

    A condition that became False is a Warning; anything else is Normal. Unknown conditions
    (work in progress) make no Event: the phase already says so.
    """
    old = {c.type: c for c in before}
    events = []
    for cond in after:
        prev = old.get(cond.type)
        if prev is not None and (prev.status, prev.reason) == (cond.status, cond.reason):
            continue
        if cond.status == "Unknown":
            continue
        kind: Literal["Normal", "Warning"] = "Warning" if cond.status == "False" else "Normal"
        events.append(Event(kind, cond.reason, cond.message))
    return events


def record_history(
    history: list[HistoryEntry], entry: HistoryEntry, limit: int
) -> list[HistoryEntry]:
    """History with `entry` first (replacing an older entry of the same revision), trimmed."""
    rest = [h for h in history if h.revision != entry.revision]
    return [entry, *rest][:limit]


REDACTED = "[redacted]"


def redact(lines: Iterable[str], secrets: Iterable[str]) -> list[str]:
    """`lines` with every occurrence of a Secret's value replaced (longest first, so a value
    that contains another is hidden whole); values shorter than 4 characters are left alone,
    as hiding them would hide ordinary words."""
    values = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)
    out = []
    for line in lines:
        for value in values:
            line = line.replace(value, REDACTED)
        out.append(line)
    return out


def history_entry(status: DocModelStatus, revision: str | None) -> HistoryEntry | None:
    if revision is None:
        return None
    return next((h for h in status.history if h.revision == revision), None)
