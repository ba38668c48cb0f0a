"""The lifecycle planner, table by table: every phase transition, superseded revisions, each
class of failed step, the verdict with and without a serving revision, rollout and rollback,
suspend, serving-only changes and source checks. Pure: no cluster, no processes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from docmodel.api import (
    DocModel,
    DocModelStatus,
    HistoryEntry,
    LastFailure,
    ServingStatus,
    parse_docmodel,
)
from docmodel.builders import serving_digest
from docmodel.plan import (
    POD_LOOK_AGAIN_SECONDS,
    DeleteJobs,
    Deploy,
    JobState,
    Observed,
    Plan,
    Policy,
    Refusal,
    RemoveServer,
    ServerState,
    StartStep,
    SwitchTraffic,
    judgement_key,
    plan,
    source_check_due,
    target_revision,
)
from docmodel.report import EvalReport, Scores, SystemName
from docmodel.revision import ResolvedSource, RevisionArtifacts, SourceCheck, resolve_source
from docmodel.status import get_condition
from docmodel.storage import ObjectInfo

from testkit.reports import uniform_report, uniform_scores

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
STORE = "s3://artifacts/dm"
GEN = 3
MANIFEST: dict[str, Any] = {
    "apiVersion": "docmodel.dev/v1alpha1",
    "kind": "DocModel",
    "metadata": {"name": "handbook", "namespace": "ml"},
    "spec": {"source": {"bucket": "docs"}, "evaluation": {"minImprovement": 0.02}},
}


def docmodel(**spec: Any) -> DocModel:
    manifest = copy.deepcopy(MANIFEST)
    for section, values in spec.items():
        if isinstance(values, dict):
            manifest["spec"].setdefault(section, {}).update(values)
        else:
            manifest["spec"][section] = values
    return parse_docmodel(manifest)


DM = docmodel()


def listing(dm: DocModel, etag: str = "e1") -> ResolvedSource:
    return resolve_source(dm.spec, [ObjectInfo("guide.md", etag, 100)])


R1 = listing(DM, "e1").revision
R2 = listing(DM, "e2").revision


def report(candidate: float, baseline: float, serving: float | None = None) -> EvalReport:
    aggregate: dict[SystemName, Scores] = {
        "candidate": uniform_scores(candidate),
        "baseline": uniform_scores(baseline),
    }
    if serving is not None:
        aggregate["serving"] = uniform_scores(serving)
    return uniform_report(
        aggregate, questions=40, revision=R1, base_model="base", adapter_uri="x", created_at=T0
    )


WIN = report(0.6, 0.3)
LOSS = report(0.2, 0.3)
ALL = RevisionArtifacts(dataset=True, adapter=True, report=WIN)


def judged(revision: str, verdict: str = "Promoted", **extra: Any) -> HistoryEntry:
    return HistoryEntry(
        revision=revision,
        verdict=verdict,  # type: ignore[arg-type]
        judged_with=judgement_key(DM.spec),
        reason="r",
        **extra,
    )


def serving_status(revision: str, since: datetime = T0, **extra: Any) -> DocModelStatus:
    """A DocModel serving `revision`, which was promoted and rolled out; the source listed."""
    return DocModelStatus(
        revision=revision,
        source_digest=listing(DM, "e1" if revision == R1 else "e2").digest,
        source_checked_at=T0,
        observed_generation=GEN,
        serving=ServingStatus(revision=revision, endpoint="http://ep/v1", since=since),
        history=[judged(revision, rollout="RolledOut")],
        **extra,
    )


def in_flight(revision: str = R1, **extra: Any) -> DocModelStatus:
    """A DocModel working on `revision` (listed at T0), nothing serving."""
    return DocModelStatus(
        revision=revision,
        source_digest=listing(DM, "e1" if revision == R1 else "e2").digest,
        source_checked_at=T0,
        observed_generation=GEN,
        **extra,
    )


def ready_server(revision: str, dm: DocModel = DM, **extra: Any) -> ServerState:
    return ServerState(
        ready=True, created_at=T0, serving_digest=serving_digest(dm), endpoint="http://ep/v1"
    )


def run(
    status: DocModelStatus | None = None,
    dm: DocModel = DM,
    at: datetime = T0,
    **observed: Any,
) -> Plan:
    before = (status or DocModelStatus()).model_copy(deep=True)
    result = plan(dm, GEN, status or DocModelStatus(), Observed(now=at, **observed), STORE)
    # Pure: the status passed in is never changed.
    assert (status or DocModelStatus()) == before
    return result


def cond(result: Plan, type_: str) -> tuple[str, str]:
    c = get_condition(result.status.conditions, type_)
    assert c is not None, type_
    return c.status, c.reason


# --------------------------------------------------------------------------------------------
# The happy path, one transition per row
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "observed", "phase", "actions", "conditions"),
    [
        (
            "new DocModel: ingest starts",
            DocModelStatus(),
            {"source": SourceCheck(listing(DM))},
            "Ingesting",
            [StartStep("ingest", R1)],
            {"DataReady": ("Unknown", "Started"), "Ready": ("False", "NoRevisionPromoted")},
        ),
        (
            "ingest running: wait",
            in_flight(),
            {"jobs": {"ingest": JobState("Running", since=T0)}, "job_revisions": frozenset({R1})},
            "Ingesting",
            [],
            {"DataReady": ("Unknown", "Running")},
        ),
        (
            "dataset published: train starts",
            in_flight(),
            {"artifacts": RevisionArtifacts(dataset=True)},
            "Training",
            [StartStep("train", R1)],
            {"DataReady": ("True", "DatasetPublished"), "Trained": ("Unknown", "Started")},
        ),
        (
            "adapter trained: evaluation starts",
            in_flight(),
            {"artifacts": RevisionArtifacts(dataset=True, adapter=True)},
            "Evaluating",
            [StartStep("evaluate", R1)],
            {"Trained": ("True", "AdapterTrained"), "Evaluated": ("Unknown", "Started")},
        ),
        (
            "candidate beats the baseline: its server is deployed",
            in_flight(),
            {"artifacts": ALL},
            "RollingOut",
            [Deploy(R1)],
            {"Promoted": ("True", "BeatBaseline"), "RolledOut": ("Unknown", "Progressing")},
        ),
        (
            "candidate rejected, nothing serving",
            in_flight(),
            {"artifacts": RevisionArtifacts(dataset=True, adapter=True, report=LOSS)},
            "Rejected",
            [],
            {"Promoted": ("False", "BelowBaseline"), "Ready": ("False", "NoRevisionPromoted")},
        ),
        (
            "server ready: traffic moves",
            in_flight(history=[judged(R1)]),
            {"artifacts": ALL, "servers": {R1: ready_server(R1)}},
            "Ready",
            [SwitchTraffic(R1)],
            {"RolledOut": ("True", "RolledOut"), "Ready": ("True", "Serving")},
        ),
        (
            "steady state: nothing to do",
            serving_status(R1),
            {"artifacts": ALL, "servers": {R1: ready_server(R1)}, "traffic": R1},
            "Ready",
            [],
            {"Ready": ("True", "Serving")},
        ),
    ],
)
def test_lifecycle_transitions(
    name: str,
    status: DocModelStatus,
    observed: dict[str, Any],
    phase: str,
    actions: list[Any],
    conditions: dict[str, tuple[str, str]],
) -> None:
    result = run(status, **observed)
    assert result.status.phase == phase, name
    assert list(result.actions) == actions, name
    for type_, expected in conditions.items():
        assert cond(result, type_) == expected, (name, type_)
    assert result.status.revision == R1
    assert result.status.observed_generation == GEN
    assert all(c.observed_generation == GEN for c in result.status.conditions)


def test_verdict_is_recorded_in_candidate_and_history() -> None:
    result = run(in_flight(), artifacts=ALL)
    candidate = result.status.candidate
    assert candidate is not None
    assert (candidate.verdict, candidate.score, candidate.baseline_score) == (
        "Promoted",
        "0.6000",
        "0.3000",
    )
    assert candidate.report_uri == f"{STORE}/ml/handbook/rev-{R1}/eval/report.json"
    assert candidate.adapter_uri == f"{STORE}/ml/handbook/rev-{R1}/adapter"
    entry = result.status.history[0]
    assert (entry.revision, entry.verdict, entry.judged_with) == (
        R1,
        "Promoted",
        judgement_key(DM.spec),
    )
    assert any(e.reason == "BeatBaseline" and e.type == "Normal" for e in result.events)


def test_rejected_candidate_with_a_serving_revision_leaves_serving_alone() -> None:
    status = serving_status(R1)
    status.source_digest = listing(DM, "e2").digest
    status.revision = R2
    loss = RevisionArtifacts(dataset=True, adapter=True, report=report(0.2, 0.3, 0.5))
    result = run(status, artifacts=loss, servers={R1: ready_server(R1)}, traffic=R1)
    assert result.actions == ()
    assert result.status.phase == "Ready"
    assert result.status.serving is not None and result.status.serving.revision == R1
    assert cond(result, "Promoted") == ("False", "BelowBaseline")
    assert cond(result, "Ready") == ("True", "Serving")
    assert [h.revision for h in result.status.history] == [R2, R1]


def test_candidate_worse_than_serving_is_rejected() -> None:
    status = serving_status(R1)
    status.source_digest = listing(DM, "e2").digest
    status.revision = R2
    worse = RevisionArtifacts(dataset=True, adapter=True, report=report(0.6, 0.3, 0.7))
    result = run(status, artifacts=worse, servers={R1: ready_server(R1)}, traffic=R1)
    assert cond(result, "Promoted") == ("False", "WorseThanServing")
    assert result.actions == ()


def test_evaluation_also_scores_the_serving_revision() -> None:
    status = serving_status(R1)
    result = run(
        status,
        source=SourceCheck(listing(DM, "e2")),
        artifacts=RevisionArtifacts(dataset=True, adapter=True),
        servers={R1: ready_server(R1)},
        traffic=R1,
    )
    assert StartStep("evaluate", R2, serving_revision=R1) in result.actions
    assert result.status.phase == "Evaluating"
    assert cond(result, "Ready") == ("True", "Serving")


# --------------------------------------------------------------------------------------------
# Rollout: blue-green, clean-up, rollback
# --------------------------------------------------------------------------------------------


def test_new_revision_takes_traffic_and_the_old_server_goes_after_the_delay() -> None:
    status = serving_status(R1)
    status.source_digest = listing(DM, "e2").digest
    status.revision = R2
    status.history.insert(0, judged(R2))
    servers = {R1: ready_server(R1), R2: ready_server(R2)}
    switched = run(status, artifacts=ALL, servers=servers, traffic=R1)
    assert list(switched.actions) == [SwitchTraffic(R2)]
    assert switched.status.serving is not None and switched.status.serving.revision == R2
    assert switched.status.history[0].rollout == "RolledOut"
    assert switched.requeue_after == Policy().cleanup_delay_seconds

    later = T0 + timedelta(seconds=Policy().cleanup_delay_seconds - 1)
    kept = run(switched.status, at=later, artifacts=ALL, servers=servers, traffic=R2)
    assert kept.actions == ()
    assert kept.requeue_after == 1.0

    after = T0 + timedelta(seconds=Policy().cleanup_delay_seconds)
    gone = run(switched.status, at=after, artifacts=ALL, servers=servers, traffic=R2)
    assert list(gone.actions) == [RemoveServer(R1, "Replaced")]


@pytest.mark.parametrize(
    ("server", "at"),
    [
        (ServerState(ready=False, created_at=T0, message="CrashLoopBackOff"), 900),
        (ServerState(ready=False, created_at=T0, failed=True, message="exited with 1"), 5),
    ],
    ids=["past the progress deadline", "failed before it"],
)
def test_server_that_never_becomes_ready_rolls_back(server: ServerState, at: int) -> None:
    status = serving_status(R1)
    status.source_digest = listing(DM, "e2").digest
    status.revision = R2
    status.history.insert(0, judged(R2))
    servers = {R1: ready_server(R1), R2: server}
    result = run(status, at=T0 + timedelta(seconds=at), artifacts=ALL, servers=servers, traffic=R1)
    assert list(result.actions) == [RemoveServer(R2, "RolloutFailed")]
    assert cond(result, "RolledOut") == ("False", "RolloutFailed")
    assert cond(result, "Ready") == ("True", "Serving")
    assert result.status.serving is not None and result.status.serving.revision == R1
    assert result.status.history[0].rollout == "RolloutFailed"
    message = get_condition(result.status.conditions, "RolledOut").message  # type: ignore[union-attr]
    assert server.message in message and f"traffic stays on revision {R1}" in message
    # The next pass does not try the failed revision again.
    again = run(result.status, artifacts=ALL, servers={R1: ready_server(R1)}, traffic=R1)
    assert again.actions == ()


def test_server_still_starting_waits_until_its_deadline() -> None:
    status = in_flight(history=[judged(R1)])
    starting = ServerState(ready=False, created_at=T0)
    hourly = docmodel(retraining={"pollInterval": "1h"})
    at = T0 + timedelta(seconds=100)
    result = run(status, dm=hourly, at=at, artifacts=ALL, servers={R1: starting})
    assert result.actions == ()
    assert result.status.phase == "RollingOut"
    assert result.requeue_after == DM.spec.serving.progress_deadline_seconds - 100
    # The next source poll comes first when it is due sooner.
    assert run(status, at=at, artifacts=ALL, servers={R1: starting}).requeue_after == 500


def test_missing_serving_server_and_service_are_rebuilt() -> None:
    result = run(serving_status(R1), artifacts=ALL)
    assert list(result.actions) == [Deploy(R1), SwitchTraffic(R1)]
    assert cond(result, "Ready") == ("False", "ServerNotReady")


def test_serving_only_change_updates_the_live_server_without_retraining() -> None:
    more = docmodel(serving={"replicas": 3})
    assert target_revision(more.spec, serving_status(R1), None) == R1
    result = run(
        serving_status(R1),
        dm=more,
        artifacts=ALL,
        servers={R1: ready_server(R1, dm=DM)},
        traffic=R1,
    )
    assert list(result.actions) == [Deploy(R1)]
    assert result.status.phase == "Ready"


# --------------------------------------------------------------------------------------------
# Superseded revisions and suspend
# --------------------------------------------------------------------------------------------


def test_new_revision_supersedes_one_in_flight() -> None:
    status = in_flight(R1)
    result = run(
        status,
        source=SourceCheck(listing(DM, "e2")),
        job_revisions=frozenset({R1}),
    )
    assert list(result.actions) == [DeleteJobs(R1, "Superseded"), StartStep("ingest", R2)]
    assert result.status.revision == R2
    assert result.status.history[0].revision == R1
    assert result.status.history[0].rollout == "Superseded"
    assert any(e.reason == "Superseded" for e in result.events)
    assert cond(result, "DataReady") == ("Unknown", "Started")


def test_training_relevant_spec_change_starts_a_new_revision() -> None:
    changed = docmodel(training={"epochs": 5})
    status = serving_status(R1)
    assert source_check_due(changed.spec, status, GEN + 1, T0)
    result = run(
        status, dm=changed, source=SourceCheck(listing(changed)), servers={R1: ready_server(R1)}
    )
    new = listing(changed).revision
    assert new != R1
    assert StartStep("ingest", new) in result.actions
    assert result.status.serving is not None and result.status.serving.revision == R1


def test_suspend_starts_nothing_and_keeps_serving() -> None:
    suspended = docmodel(suspend=True)
    status = serving_status(R1)
    result = run(
        status,
        dm=suspended,
        source=SourceCheck(listing(suspended, "e2")),
        servers={R1: ready_server(R1, dm=suspended)},
        traffic=R1,
    )
    assert result.status.phase == "Suspended"
    assert not any(isinstance(a, StartStep | Deploy) for a in result.actions)
    assert cond(result, "Ready") == ("True", "Serving")
    # A promoted candidate is not rolled out while suspended.
    judged_status = in_flight(history=[judged(R1)])
    rolled = run(judged_status, dm=suspended, artifacts=ALL)
    assert rolled.actions == () and rolled.status.phase == "Suspended"


# --------------------------------------------------------------------------------------------
# Failed steps: one row per class of exit code
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exit_code", "k8s_reason", "reason", "retried", "phase"),
    [
        (2, None, "BadInput", False, "Failed"),
        (3, None, "NoUsableData", False, "Failed"),
        (4, None, "StorageError", True, "Ingesting"),
        (5, None, "UpstreamError", True, "Ingesting"),
        (1, "BackoffLimitExceeded", "BackoffLimitExceeded", False, "Failed"),
        (137, "OOMKilled", "OOMKilled", False, "Failed"),
        (None, "DeadlineExceeded", "DeadlineExceeded", False, "Failed"),
    ],
)
def test_failed_step_by_class(
    exit_code: int | None, k8s_reason: str | None, reason: str, retried: bool, phase: str
) -> None:
    job = JobState(
        "Failed",
        exit_code=exit_code,
        reason=k8s_reason,
        message="pod failed",
        log_tail=("Traceback", "boom"),
        since=T0,
    )
    at = T0 + timedelta(seconds=1)
    result = run(in_flight(), at=at, jobs={"ingest": job}, job_revisions=frozenset({R1}))
    failure = result.status.last_failure
    assert failure is not None
    assert (failure.stage, failure.reason, failure.exit_code) == ("ingest", reason, exit_code)
    assert failure.log_tail == ["Traceback", "boom"]
    assert cond(result, "DataReady") == ("False", reason)
    assert result.status.phase == phase
    if retried:
        assert list(result.actions) == [DeleteJobs(R1, "Retry")]
        assert failure.retry_at == at + timedelta(seconds=30)
        assert result.requeue_after == 30 and not result.permanent
    else:
        assert result.actions == ()
        assert failure.retry_at is None and result.permanent
        # Observed again (the failed Job is still there): recorded once, never restarted.
        again = run(result.status, at=at + timedelta(hours=1), jobs={"ingest": job})
        assert again.status.last_failure == failure and again.actions == ()
        # Gone (deleted by hand, or local mode's next run): still not restarted.
        gone = run(result.status, at=at + timedelta(hours=1))
        assert gone.actions == () and gone.status.phase == "Failed"


def test_temporary_failure_is_retried_with_growing_back_off() -> None:
    first = run(
        in_flight(),
        at=T0,
        jobs={"train": JobState("Failed", exit_code=4, since=T0)},
        artifacts=RevisionArtifacts(dataset=True),
    )
    failure = first.status.last_failure
    assert failure is not None and failure.retry_at == T0 + timedelta(seconds=30)
    waiting = run(first.status, at=T0 + timedelta(seconds=10), artifacts=RevisionArtifacts(True))
    assert waiting.actions == () and waiting.requeue_after == 20
    due = T0 + timedelta(seconds=30)
    retried = run(first.status, at=due, artifacts=RevisionArtifacts(True))
    assert list(retried.actions) == [StartStep("train", R1)]
    second = run(
        retried.status,
        at=due + timedelta(seconds=5),
        jobs={"train": JobState("Failed", exit_code=4, since=due + timedelta(seconds=4))},
        artifacts=RevisionArtifacts(True),
    )
    assert second.status.last_failure is not None
    assert second.status.last_failure.attempts == 2
    assert second.status.last_failure.retry_at == due + timedelta(seconds=65)


def test_finished_step_without_its_artifact_is_retried() -> None:
    result = run(in_flight(), jobs={"ingest": JobState("Succeeded", exit_code=0, since=T0)})
    assert result.status.last_failure is not None
    assert result.status.last_failure.reason == "ArtifactMissing"
    assert list(result.actions) == [DeleteJobs(R1, "Retry")]


def test_pod_pending_past_the_deadline_gets_the_schedulers_message() -> None:
    pending = JobState(
        "Pending",
        reason="Unschedulable",
        message="0/3 nodes are available: 3 Insufficient nvidia.com/gpu.",
        since=T0,
    )
    early = run(
        in_flight(), at=T0 + timedelta(seconds=60), jobs={"train": pending}, artifacts=ALL_DATA
    )
    assert cond(early, "Trained") == ("Unknown", "Running")
    assert early.requeue_after == Policy().pending_warning_seconds - 60
    late = run(
        in_flight(), at=T0 + timedelta(seconds=400), jobs={"train": pending}, artifacts=ALL_DATA
    )
    assert cond(late, "Trained") == ("False", "Unschedulable")
    message = get_condition(late.status.conditions, "Trained").message  # type: ignore[union-attr]
    assert "Insufficient nvidia.com/gpu" in message
    assert late.status.phase == "Training" and late.actions == ()


ALL_DATA = RevisionArtifacts(dataset=True)


def test_failure_of_a_superseded_revision_is_forgotten() -> None:
    failed = in_flight(
        last_failure=LastFailure(revision=R1, stage="ingest", reason="BadInput", time=T0)
    )
    result = run(failed, source=SourceCheck(listing(DM, "e2")))
    assert result.status.last_failure is None
    assert list(result.actions) == [StartStep("ingest", R2)]
    assert "BadInput" in (result.status.history[0].reason or "")


# --------------------------------------------------------------------------------------------
# Judging again, and source checks
# --------------------------------------------------------------------------------------------


def test_gate_policy_change_judges_again_from_the_same_report() -> None:
    status = in_flight(history=[judged(R1, verdict="Rejected")])
    stricter = docmodel(evaluation={"minImprovement": 0.5})
    result = run(status, dm=stricter, artifacts=ALL)
    assert cond(result, "Promoted") == ("False", "BelowBaseline")
    assert result.status.history[0].judged_with == judgement_key(stricter.spec)
    # Same policy: the recorded verdict stands, no Job, nothing re-decided.
    same = run(status, artifacts=ALL)
    assert same.status.history[0].judged_with == judgement_key(DM.spec)


def test_evaluation_settings_change_evaluates_again() -> None:
    status = in_flight(history=[judged(R1, verdict="Rejected")])
    more = docmodel(evaluation={"maxQuestions": 50})
    # The report was scored under other settings, so it does not cover today's evaluation.
    result = run(status, dm=more, artifacts=RevisionArtifacts(dataset=True, adapter=True))
    assert list(result.actions) == [StartStep("evaluate", R1)]


def test_judged_revision_that_comes_back_keeps_its_verdict() -> None:
    status = serving_status(R1)
    status.history.insert(0, judged(R2, verdict="Rejected", metrics=None))
    back = run(
        status, source=SourceCheck(listing(DM, "e2")), servers={R1: ready_server(R1)}, traffic=R1
    )
    assert back.actions == ()
    assert back.status.candidate is not None and back.status.candidate.verdict == "Rejected"
    assert cond(back, "Promoted") == ("False", "PreviouslyRejected")


@pytest.mark.parametrize(
    ("spec", "status", "generation", "at", "due"),
    [
        ({}, DocModelStatus(), GEN, T0, True),
        ({}, in_flight(), GEN, T0 + timedelta(minutes=9), False),
        ({}, in_flight(), GEN, T0 + timedelta(minutes=10), True),
        ({}, in_flight(), GEN + 1, T0, True),
        (
            {"retraining": {"onSourceChange": False}},
            in_flight(),
            GEN,
            T0 + timedelta(days=9),
            False,
        ),
        (
            {"retraining": {"onSourceChange": False, "schedule": "0 13 * * *"}},
            in_flight(),
            GEN,
            T0 + timedelta(minutes=59),
            False,
        ),
        (
            {"retraining": {"onSourceChange": False, "schedule": "0 13 * * *"}},
            in_flight(),
            GEN,
            T0 + timedelta(minutes=60),
            True,
        ),
    ],
    ids=["never", "before poll", "poll", "new generation", "no polling", "before cron", "cron"],
)
def test_source_check_due(
    spec: dict[str, Any], status: DocModelStatus, generation: int, at: datetime, due: bool
) -> None:
    assert source_check_due(docmodel(**spec).spec, status, generation, at) is due


def test_unchanged_source_gives_the_same_revision_and_nothing_to_do() -> None:
    status = serving_status(R1)
    result = run(
        status,
        at=T0 + timedelta(minutes=10),
        source=SourceCheck(listing(DM, "e1")),
        artifacts=ALL,
        servers={R1: ready_server(R1)},
        traffic=R1,
    )
    assert result.actions == ()
    assert result.status.source_checked_at == T0 + timedelta(minutes=10)
    assert result.requeue_after == 600


def test_source_that_cannot_be_listed_is_retried_and_named() -> None:
    check = SourceCheck(error_reason="AccessDenied", error_message="bucket=docs prefix=: denied")
    result = run(DocModelStatus(), source=check)
    assert result.actions == ()
    assert cond(result, "DataReady") == ("False", "AccessDenied")
    failure = result.status.last_failure
    assert failure is not None and failure.stage == "source" and failure.revision is None
    assert result.status.phase == "Pending"
    assert source_check_due(DM.spec, result.status, GEN, T0 + timedelta(seconds=30))
    fixed = run(result.status, at=T0 + timedelta(seconds=30), source=SourceCheck(listing(DM)))
    assert fixed.status.last_failure is None
    assert list(fixed.actions) == [StartStep("ingest", R1)]


def test_history_is_trimmed_to_the_limit() -> None:
    small = docmodel(historyLimit=2)
    status = in_flight(history=[judged("a" * 10), judged("b" * 10)])
    result = run(status, dm=small, artifacts=ALL)
    assert [h.revision for h in result.status.history] == [R1, "a" * 10]


def test_recreate_strategy_removes_the_old_server_first_and_restores_it_on_failure() -> None:
    recreate = docmodel(serving={"strategy": "Recreate"})
    status = serving_status(R1)
    status.source_digest = listing(DM, "e2").digest
    status.revision = R2
    status.history.insert(0, judged(R2))
    old = {R1: ready_server(R1, dm=recreate)}
    first = run(status, dm=recreate, artifacts=ALL, servers=old, traffic=R1)
    assert list(first.actions) == [RemoveServer(R1, "Recreate"), Deploy(R2)]

    starting = {R2: ServerState(ready=False, created_at=T0)}
    waiting = run(first.status, dm=recreate, artifacts=ALL, servers=starting, traffic=R1)
    assert waiting.actions == ()
    assert cond(waiting, "Ready") == ("False", "Recreating")

    late = T0 + timedelta(seconds=recreate.spec.serving.progress_deadline_seconds)
    failed = run(first.status, dm=recreate, at=late, artifacts=ALL, servers=starting, traffic=R1)
    assert list(failed.actions) == [RemoveServer(R2, "RolloutFailed"), Deploy(R1)]


def test_missing_secret_is_named_and_nothing_starts() -> None:
    result = run(in_flight(), missing_secrets=("docmodel-store",))
    assert result.actions == ()
    status, reason = cond(result, "DataReady")
    assert (status, reason) == ("False", "SecretNotFound")
    message = get_condition(result.status.conditions, "DataReady").message  # type: ignore[union-attr]
    assert "docmodel-store" in message and "ml" in message
    assert result.requeue_after == 30


# --------------------------------------------------------------------------------------------
# Children the cluster refuses
# --------------------------------------------------------------------------------------------


QUOTA = 'pods "handbook-x-train-abcde" is forbidden: exceeded quota: zero, requested: pods=1'


def test_refused_step_shows_the_api_servers_reason_and_is_tried_again_after_the_delay() -> None:
    refusal = Refusal("Forbidden", QUOTA, T0)
    soon = run(in_flight(), artifacts=ALL_DATA, refused={"train": refusal})
    assert cond(soon, "Trained") == ("False", "Forbidden")
    trained = get_condition(soon.status.conditions, "Trained")
    assert trained is not None and "the cluster refused the train step" in trained.message
    assert "exceeded quota" in trained.message
    assert soon.actions == ()  # not tried again at once
    assert soon.requeue_after == Policy().refusal_retry_seconds
    assert ("Warning", "Forbidden") in [(e.type, e.reason) for e in soon.events]
    # Once the retry is due, the step is started again.
    due = run(
        soon.status,
        at=T0 + timedelta(seconds=Policy().refusal_retry_seconds),
        artifacts=ALL_DATA,
        refused={"train": refusal},
    )
    assert list(due.actions) == [StartStep("train", R1)]


def test_refused_pod_of_a_job_shows_at_once_not_after_the_pending_warning() -> None:
    job = JobState("Pending", reason="Forbidden", message=QUOTA, since=T0, refused=True)
    result = run(in_flight(), at=T0 + timedelta(seconds=3), jobs={"train": job}, artifacts=ALL_DATA)
    assert cond(result, "Trained") == ("False", "Forbidden")
    assert result.actions == () and result.requeue_after == Policy().refusal_retry_seconds


def test_job_awaiting_its_pod_is_looked_at_again_within_seconds() -> None:
    job = JobState("Pending", reason="NoPod", since=T0, awaiting_pod=True)
    result = run(in_flight(), jobs={"train": job}, artifacts=ALL_DATA)
    assert cond(result, "Trained") == ("Unknown", "Running")
    assert result.requeue_after == POD_LOOK_AGAIN_SECONDS


def test_refused_server_keeps_traffic_and_says_why() -> None:
    refusal = Refusal("Forbidden", QUOTA, T0)
    status = serving_status(R1)
    status.source_digest = listing(DM, "e2").digest
    status.revision = R2
    status.history.insert(0, judged(R2))
    # The Deployment itself refused: not created again before the retry.
    result = run(
        status,
        artifacts=ALL,
        servers={R1: ready_server(R1)},
        traffic=R1,
        refused={f"server/{R2}": refusal},
    )
    assert cond(result, "RolledOut") == ("False", "Forbidden")
    assert Deploy(R2) not in result.actions
    assert result.status.serving is not None and result.status.serving.revision == R1
    # Its pods refused (the ReplicaSet's FailedCreate): said at once, the deadline still holds.
    pods_refused = ServerState(ready=False, created_at=T0, refused=refusal)
    result = run(
        status,
        at=T0 + timedelta(seconds=5),
        artifacts=ALL,
        servers={R1: ready_server(R1), R2: pods_refused},
        traffic=R1,
    )
    assert cond(result, "RolledOut") == ("False", "Forbidden")
    assert result.status.phase == "RollingOut" and result.actions == ()
