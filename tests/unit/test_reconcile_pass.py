"""The one reconcile pass both executors go through (`docmodel.plan.reconcile_pass`), with a
stand-in executor that records what it is asked: when the source is listed, the actions
carried out (in the executor's order), and the plan again after a refused child."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from test_plan import DM, GEN, R1, STORE, T0, in_flight, listing

from docmodel.api import DocModel, DocModelStatus
from docmodel.plan import (
    Action,
    Observed,
    Policy,
    Refusal,
    Refused,
    StartStep,
    reconcile_pass,
)
from docmodel.revision import SourceCheck
from docmodel.status import get_condition

QUOTA = 'jobs.batch "handbook-x-ingest" is forbidden: exceeded quota: jobs, requested: 1'


@dataclass
class StandIn:
    """An executor that observes nothing but the source and refuses what it is told to."""

    refuse: set[str] = field(default_factory=set)  # steps whose Job the platform refuses
    listed: int = 0
    acted: list[Action] = field(default_factory=list)
    seen_refused: list[set[str]] = field(default_factory=list)
    only_first: bool = False

    @property
    def store_uri(self) -> str:
        return STORE

    @property
    def policy(self) -> Policy:
        return Policy(refusal_retry_seconds=30.0)

    def list_source(self, dm: DocModel) -> SourceCheck:
        self.listed += 1
        return SourceCheck(listing(dm))

    def observe(
        self, dm: DocModel, status: DocModelStatus, check: SourceCheck | None, now: datetime
    ) -> Observed:
        return Observed(now=now, source=check)

    def order(self, actions: Sequence[Action]) -> Sequence[Action]:
        return actions[:1] if self.only_first else actions

    def act(self, dm: DocModel, action: Action, observed: Observed) -> None:
        self.seen_refused.append(set(observed.refused))
        if isinstance(action, StartStep) and action.step in self.refuse:
            raise Refused(Refusal("Forbidden", QUOTA, observed.now))
        self.acted.append(action)


def test_a_new_docmodel_lists_its_source_and_starts_ingest() -> None:
    executor = StandIn()
    done = reconcile_pass(DM, GEN, DocModelStatus(), executor, T0)
    assert executor.listed == 1
    assert executor.acted == [StartStep("ingest", R1)] == list(done.plan.actions)
    assert done.refused == {} and done.plan.status.phase == "Ingesting"


def test_the_source_is_listed_only_when_due_unless_asked() -> None:
    executor = StandIn()
    reconcile_pass(DM, GEN, in_flight(), executor, T0 + timedelta(seconds=5))
    assert executor.listed == 0  # listed at T0; the poll interval is not up
    reconcile_pass(DM, GEN, in_flight(), executor, T0 + timedelta(seconds=5), list_source=True)
    assert executor.listed == 1


def test_a_refused_child_is_planned_again_in_the_same_pass_and_shown() -> None:
    executor = StandIn(refuse={"ingest"})
    done = reconcile_pass(DM, GEN, DocModelStatus(), executor, T0)
    assert executor.acted == []
    assert executor.seen_refused == [set()]  # tried once; the second plan holds it back
    assert set(done.refused) == {"ingest"} and done.refused["ingest"].message == QUOTA
    ready = get_condition(done.plan.status.conditions, "DataReady")
    assert ready is not None and (ready.status, ready.reason) == ("False", "Forbidden")
    assert done.plan.actions == ()
    assert done.plan.requeue_after == 30.0  # the retry


def test_a_refusal_is_kept_until_its_retry_and_cleared_when_the_child_is_taken() -> None:
    first = reconcile_pass(DM, GEN, DocModelStatus(), StandIn(refuse={"ingest"}), T0)
    status = first.plan.status
    soon = StandIn()
    held = reconcile_pass(DM, GEN, status, soon, T0 + timedelta(seconds=10), refused=first.refused)
    assert soon.acted == [] and set(held.refused) == {"ingest"}
    later = StandIn()
    retried = reconcile_pass(
        DM, GEN, status, later, T0 + timedelta(seconds=31), refused=first.refused
    )
    assert later.acted == [StartStep("ingest", R1)] and retried.refused == {}


def test_the_executor_orders_and_may_defer_actions() -> None:
    executor = StandIn(only_first=True)
    done = reconcile_pass(DM, GEN, DocModelStatus(), executor, T0)
    assert executor.acted == list(done.plan.actions)[:1]
