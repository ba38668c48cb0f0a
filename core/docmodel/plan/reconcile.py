"""One reconcile pass, written once and given the executor (the operator's Kubernetes objects,
or local mode's processes): list the source when due, observe, plan, carry the actions out,
and plan again, knowing it, when the platform refuses one.

The pass itself does no I/O: every read and every action is the executor's. It returns the
plan whose actions it carried out; the executor records the status and the events (the
operator after acting, so the status never claims what has not happened).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from docmodel.api import DocModel, DocModelStatus
from docmodel.plan.actions import Action, Plan, Policy, refusal_key
from docmodel.plan.observed import Observed, Refusal
from docmodel.plan.planner import plan
from docmodel.plan.schedule import source_check_due
from docmodel.revision import SourceCheck

# A pass plans again after each refusal of a new child; each refusal is of a child not tried
# again in the pass, so this bounds nothing that could make progress.
MAX_PLANS = 8


class Refused(Exception):
    """The platform would not take a child (an admission check, a quota, a field it refuses):
    the executor raises it from `act`, and the pass plans again with `refusal` known."""

    def __init__(self, refusal: Refusal):
        super().__init__(f"{refusal.reason}: {refusal.message}")
        self.refusal = refusal


class Executor(Protocol):
    """What carries a DocModel's plan out: observes the platform, acts on it."""

    @property
    def store_uri(self) -> str: ...

    @property
    def policy(self) -> Policy: ...

    def list_source(self, dm: DocModel) -> SourceCheck: ...

    def observe(
        self, dm: DocModel, status: DocModelStatus, check: SourceCheck | None, now: datetime
    ) -> Observed: ...

    def order(self, actions: Sequence[Action]) -> Sequence[Action]:
        """The actions to carry out in this pass, in order (all of them, or fewer)."""
        ...

    def act(self, dm: DocModel, action: Action, observed: Observed) -> None:
        """Carry one action out; raise `Refused` when the platform will not take it."""
        ...


@dataclass(frozen=True)
class Pass:
    plan: Plan  # the last plan of the pass: its actions were carried out, but a refused one
    refused: dict[str, Refusal]  # the children refused so far, by `refusal_key`


def reconcile_pass(
    dm: DocModel,
    generation: int | None,
    status: DocModelStatus,
    executor: Executor,
    now: datetime,
    *,
    refused: Mapping[str, Refusal] | None = None,
    list_source: bool = False,
) -> Pass:
    """Observe, plan and act once. `refused`: the children refused in earlier passes, which
    the planner holds back until their retry is due; `list_source`: list it even when no check
    is due (a run the user started)."""
    check = None
    if list_source or source_check_due(dm.spec, status, generation, now):
        check = executor.list_source(dm)
    known = dict(refused or {})
    observed = replace(executor.observe(dm, status, check, now), refused=dict(known))
    done: list[Action] = []
    for _ in range(MAX_PLANS):
        result = plan(dm, generation, status, observed, executor.store_uri, executor.policy)
        refusal: tuple[str, Refusal] | None = None
        for action in executor.order(result.actions):
            if action in done:
                continue
            try:
                executor.act(dm, action, observed)
            except Refused as exc:
                refusal = (refusal_key(action), exc.refusal)
                break
            done.append(action)
            known.pop(refusal_key(action), None)
        if refusal is None:
            break
        known[refusal[0]] = refusal[1]
        observed = replace(observed, refused=dict(known))
    return Pass(result, known)
