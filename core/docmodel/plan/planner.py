"""The planner: one pass over a DocModel's lifecycle, from spec, status and what was observed
to the new status, the actions and the events."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Literal

from docmodel.api import (
    CandidateStatus,
    DocModel,
    DocModelStatus,
    HistoryEntry,
    LastFailure,
    Phase,
    ServingStatus,
)
from docmodel.artifacts import RevisionLayout
from docmodel.builders import STEPS, Step, serving_digest
from docmodel.failures import FailureClass, backoff_seconds, classify
from docmodel.gate import decide_report
from docmodel.plan.actions import (
    Action,
    DeleteJobs,
    Deploy,
    Plan,
    Policy,
    RemoveServer,
    StartStep,
    SwitchTraffic,
)
from docmodel.plan.observed import (
    POD_LOOK_AGAIN_SECONDS,
    QUEUED_LOOK_AGAIN_SECONDS,
    JobState,
    Observed,
)
from docmodel.plan.schedule import judgement_key, next_source_check, target_revision
from docmodel.plan.verdicts import judged_candidate, restored_candidate
from docmodel.report import EvalReport
from docmodel.status import (
    DATA_READY,
    EVALUATED,
    PROMOTED,
    READY,
    REVISION_CONDITIONS,
    ROLLED_OUT,
    TRAINED,
    ConditionStatus,
    Event,
    condition_events,
    history_entry,
    record_history,
    set_condition,
)

STEP_PHASE: dict[Step, Phase] = {
    "ingest": "Ingesting",
    "train": "Training",
    "evaluate": "Evaluating",
}


STEP_CONDITION = {"ingest": DATA_READY, "train": TRAINED, "evaluate": EVALUATED}


STEP_DONE = {
    "ingest": ("DatasetPublished", "the dataset of revision {r} is published"),
    "train": ("AdapterTrained", "the adapter of revision {r} is trained"),
    "evaluate": ("ReportReady", "revision {r} is evaluated"),
}


class _Planner:
    """One planning pass; `plan()` below is the entry point."""

    def __init__(
        self,
        dm: DocModel,
        generation: int | None,
        status: DocModelStatus,
        observed: Observed,
        store_uri: str,
        policy: Policy,
    ):
        self.dm = dm
        self.spec = dm.spec
        self.generation = generation
        self.before = status
        self.status = status.model_copy(deep=True)
        self.obs = observed
        self.now = observed.now
        self.store_uri = store_uri
        self.policy = policy
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.timers: list[float] = []
        self.phase: Phase | None = None
        self.permanent = False
        self.rolling_out: str | None = None  # a promoted revision whose server is coming up

    # -- small helpers ------------------------------------------------------------------------

    def cond(self, type_: str, status: ConditionStatus, reason: str, message: str) -> None:
        self.status.conditions = set_condition(
            self.status.conditions,
            type_,  # type: ignore[arg-type]
            status,
            reason,
            message,
            self.generation,
            self.now,
        )

    def wake_at(self, when: datetime) -> None:
        self.timers.append(max(1.0, (when - self.now).total_seconds()))

    def layout(self, revision: str) -> RevisionLayout:
        return RevisionLayout(self.dm.metadata.namespace, self.dm.metadata.name, revision)

    @property
    def serving(self) -> str | None:
        return self.status.serving.revision if self.status.serving else None

    # -- the pass -----------------------------------------------------------------------------

    def run(self) -> Plan:
        source_ok = self.check_source()
        target = target_revision(self.spec, self.before, self.obs.source)
        if target is not None:
            self.switch_to(target)
            if source_ok:
                self.pipeline(target)
        self.maintain_serving()
        self.finish()
        events = condition_events(self.before.conditions, self.status.conditions)
        due = next_source_check(self.spec, self.status)
        if due is not None:
            self.wake_at(due)
        return Plan(
            status=self.status,
            actions=tuple(self.actions),
            events=tuple([*self.events, *events]),
            requeue_after=min(self.timers) if self.timers else None,
            permanent=self.permanent,
        )

    def check_source(self) -> bool:
        """Record a listing; False when it failed (no new step starts until it works)."""
        check = self.obs.source
        if check is None:
            failure = self.status.last_failure
            return not (failure is not None and failure.stage == "source")
        self.status.source_checked_at = self.now
        if check.resolved is not None:
            self.status.source_digest = check.resolved.digest
            if self.status.last_failure and self.status.last_failure.stage == "source":
                self.status.last_failure = None
            return True
        previous = self.status.last_failure
        attempts = previous.attempts + 1 if previous and previous.stage == "source" else 1
        retry_at = self.now + timedelta(seconds=backoff_seconds(attempts))
        reason = check.error_reason or "SourceUnavailable"
        self.status.last_failure = LastFailure(
            revision=self.status.revision,
            stage="source",
            reason=reason,
            message=check.error_message,
            time=self.now,
            attempts=attempts,
            retry_at=retry_at,
        )
        self.cond(DATA_READY, "False", reason, f"{check.error_message} (retrying at {retry_at})")
        self.phase = "Pending"
        return False

    def switch_to(self, target: str) -> None:
        """Make `target` the revision worked on; supersede one still in flight."""
        current = self.status.revision
        for revision in sorted(self.obs.job_revisions - {target}):
            in_flight = revision == current and history_entry(self.status, revision) is None
            reason = "Superseded" if in_flight else "Replaced"
            self.actions.append(DeleteJobs(revision, reason))
        if current == target:
            return
        if current is not None and history_entry(self.status, current) is None:
            failure = self.status.last_failure
            why = ""
            if failure is not None and failure.revision == current:
                why = f"; it had failed at {failure.stage}: {failure.reason}"
            self.status.history = record_history(
                self.status.history,
                HistoryEntry(
                    revision=current,
                    source_digest=None,
                    reason=f"superseded by revision {target} before a verdict{why}",
                    rollout="Superseded",
                    completed_at=self.now,
                ),
                self.spec.history_limit,
            )
            self.events.append(
                Event("Normal", "Superseded", f"revision {current} superseded by {target}")
            )
        self.status.revision = target
        self.status.candidate = CandidateStatus(revision=target)
        failure = self.status.last_failure
        if failure is not None and failure.stage != "source" and failure.revision != target:
            self.status.last_failure = None
        for type_ in REVISION_CONDITIONS:
            self.cond(type_, "Unknown", "NewRevision", f"revision {target} started")

    # -- one revision's steps and verdict -----------------------------------------------------

    def judged(self, revision: str) -> HistoryEntry | None:
        entry = history_entry(self.status, revision)
        if entry is None or entry.verdict is None:
            return None
        if revision == self.serving or entry.judged_with == judgement_key(self.spec):
            return entry
        return None

    def pipeline(self, revision: str) -> None:
        entry = self.judged(revision)
        if entry is None:
            for step in STEPS:
                if not self.step(step, revision):
                    return
            report = self.obs.artifacts.report
            assert report is not None  # step("evaluate") is done only with a report
            self.record_verdict(revision, report)
        elif self.status.candidate is None or self.status.candidate.verdict is None:
            self.restore_verdict(entry)
        self.rollout(revision)

    def restore_verdict(self, entry: HistoryEntry) -> None:
        """A revision judged before (the docs went back to it): its verdict stands."""
        for step in STEPS:
            reason, message = STEP_DONE[step]
            self.cond(STEP_CONDITION[step], "True", reason, message.format(r=entry.revision))
        self.status.candidate = restored_candidate(entry, self.spec.evaluation.metric)
        promoted = entry.verdict == "Promoted"
        self.cond(
            PROMOTED,
            "True" if promoted else "False",
            "PreviouslyPromoted" if promoted else "PreviouslyRejected",
            entry.reason or "",
        )

    def step_done(self, step: Step) -> bool:
        art = self.obs.artifacts
        return {"ingest": art.dataset, "train": art.adapter, "evaluate": art.report is not None}[
            step
        ]

    def step(self, step: Step, revision: str) -> bool:
        """Advance one step; True when it is done (its artifact is published)."""
        condition = STEP_CONDITION[step]
        if self.step_done(step):
            reason, message = STEP_DONE[step]
            self.cond(condition, "True", reason, message.format(r=revision))
            return True
        self.phase = STEP_PHASE[step]
        job = self.obs.jobs.get(step)
        if job is not None and job.phase == "Succeeded":
            # Finished, yet no complete artifact: treat it as a failure worth retrying.
            job = JobState(
                "Failed",
                reason="ArtifactMissing",
                message=f"the {step} step finished without publishing its artifact",
                since=job.since,
            )
        if job is not None and job.phase == "Failed":
            self.step_failed(step, revision, job)
            return False
        if job is not None:  # Pending or Running
            self.step_running(step, revision, job)
            return False
        failure = self.status.last_failure
        if failure is not None and failure.revision == revision and failure.stage == step:
            if failure.retry_at is None:
                self.failed_for_good(failure)
                return False
            if self.now < failure.retry_at:
                self.wake_at(failure.retry_at)
                return False
        if self.spec.suspend:
            return False
        if self.obs.missing_secrets:
            names = ", ".join(self.obs.missing_secrets)
            self.cond(
                condition,
                "False",
                "SecretNotFound",
                f"the {step} step of revision {revision} needs Secret {names} in namespace "
                f"{self.dm.metadata.namespace}, which does not exist",
            )
            self.timers.append(30.0)
            return False
        if self.refused(step, condition, f"the {step} step of revision {revision}"):
            return False
        serving = self.serving if step == "evaluate" and self.serving != revision else None
        self.actions.append(StartStep(step, revision, serving))
        self.cond(
            condition, "Unknown", "Started", f"the {step} step of revision {revision} started"
        )
        return False

    def refused(self, key: str, condition: str, what: str) -> bool:
        """Whether a child for `key` was refused recently: then the condition says so with
        the API server's reason, and the pass looks again once the retry is due."""
        refusal = self.obs.refused.get(key)
        if refusal is None:
            return False
        retry = refusal.at + timedelta(seconds=self.policy.refusal_retry_seconds)
        if self.now >= retry:
            return False
        self.cond(
            condition, "False", refusal.reason, f"the cluster refused {what}: {refusal.message}"
        )
        self.wake_at(retry)
        return True

    def step_running(self, step: Step, revision: str, job: JobState) -> None:
        condition = STEP_CONDITION[step]
        if job.refused:
            self.cond(
                condition,
                "False",
                job.reason or "Forbidden",
                f"the cluster refused the {step} pod of revision {revision}: {job.message}",
            )
            self.timers.append(self.policy.refusal_retry_seconds)
            return
        if job.queued:
            self.cond(
                condition,
                "False",
                "Queued",
                f"the {step} step of revision {revision} is queued: {job.message}",
            )
            self.timers.append(QUEUED_LOOK_AGAIN_SECONDS)
            return
        if job.awaiting_pod:
            self.timers.append(POD_LOOK_AGAIN_SECONDS)
        if job.phase == "Pending" and job.since is not None:
            waited = (self.now - job.since).total_seconds()
            if waited >= self.policy.pending_warning_seconds:
                self.cond(
                    condition,
                    "False",
                    job.reason or "Pending",
                    f"the {step} pod of revision {revision} has waited {int(waited)}s to start: "
                    f"{job.message or 'no reason given'}",
                )
                return
            self.wake_at(job.since + timedelta(seconds=self.policy.pending_warning_seconds))
        self.cond(
            condition, "Unknown", "Running", f"the {step} step of revision {revision} is running"
        )

    def step_failed(self, step: Step, revision: str, job: JobState) -> None:
        previous = self.status.last_failure
        same = previous is not None and previous.revision == revision and previous.stage == step
        if same and previous is not None and (job.since is None or job.since <= previous.time):
            failure = previous  # already recorded
        else:
            kind = classify(job.exit_code, job.reason)
            attempts = previous.attempts + 1 if same and previous is not None else 1
            retry_at = None
            if kind.failure_class.retried:
                retry_at = self.now + timedelta(seconds=backoff_seconds(attempts))
            failure = LastFailure(
                revision=revision,
                stage=step,
                reason=kind.reason,
                message=job.message or kind.summary,
                exit_code=job.exit_code,
                log_tail=list(job.log_tail)[-50:],
                time=self.now,
                attempts=attempts,
                retry_at=retry_at,
            )
            self.status.last_failure = failure
        if failure.retry_at is not None:
            self.actions.append(DeleteJobs(revision, "Retry"))
            self.cond(
                STEP_CONDITION[step],
                "False",
                failure.reason,
                f"the {step} step failed ({failure.message}); retrying at {failure.retry_at}",
            )
            self.wake_at(failure.retry_at)
        else:
            self.failed_for_good(failure)

    def failed_for_good(self, failure: LastFailure) -> None:
        step: Step = failure.stage  # type: ignore[assignment]
        kind = classify(failure.exit_code, failure.reason)
        hint = (
            "; changed documents give a new revision"
            if kind.failure_class is FailureClass.NO_DATA
            else "; a change to the spec or the documents starts a new revision"
        )
        self.cond(
            STEP_CONDITION[step],
            "False",
            failure.reason,
            f"the {step} step of revision {failure.revision} failed: {failure.message}{hint}",
        )
        self.phase = "Failed"
        self.permanent = True

    def record_verdict(self, revision: str, report: EvalReport) -> None:
        verdict = decide_report(report, self.spec.evaluation)
        layout = self.layout(revision)
        self.status.candidate = judged_candidate(
            revision,
            report,
            verdict,
            self.spec.evaluation.metric,
            adapter_uri=layout.uri(self.store_uri, "adapter"),
            report_uri=layout.uri(self.store_uri, "eval", "report.json"),
        )
        self.status.history = record_history(
            self.status.history,
            self.status.candidate.history_entry(
                source_digest=self.status.source_digest,
                completed_at=report.created_at,
                judged_with=judgement_key(self.spec),
            ),
            self.spec.history_limit,
        )
        self.cond(
            PROMOTED, "True" if verdict.promoted else "False", verdict.reason, verdict.message
        )

    # -- rollout ------------------------------------------------------------------------------

    def rollout(self, revision: str) -> None:
        """Move traffic to a promoted `revision` once its server is ready."""
        entry = self.judged(revision)
        if entry is None or entry.verdict != "Promoted" or revision == self.serving:
            return
        if entry.rollout is not None or self.spec.suspend:
            return
        server = self.obs.servers.get(revision)
        deadline = self.spec.serving.progress_deadline_seconds
        if server is None:
            if self.refused(f"server/{revision}", ROLLED_OUT, f"the server of revision {revision}"):
                self.phase = "RollingOut"
                return
            serving = self.serving
            if (
                self.spec.serving.strategy == "Recreate"
                and serving is not None
                and serving in self.obs.servers
            ):
                # No room for two copies, as the user chose: the old server goes first.
                self.actions.append(RemoveServer(serving, "Recreate"))
            self.actions.append(Deploy(revision))
            self.rolling_out = revision
            self.phase = "RollingOut"
            self.cond(ROLLED_OUT, "Unknown", "Progressing", f"deploying revision {revision}")
            self.timers.append(float(deadline))
            return
        if server.ready:
            self.actions.append(SwitchTraffic(revision))
            self.status.serving = ServingStatus(
                revision=revision,
                endpoint=server.endpoint,
                model_name=self.dm.metadata.name,
                since=self.now,
            )
            self.set_rollout(entry, "RolledOut")
            self.cond(ROLLED_OUT, "True", "RolledOut", f"traffic moved to revision {revision}")
            return
        ends = server.created_at + timedelta(seconds=deadline)
        if server.failed or self.now >= ends:
            self.actions.append(RemoveServer(revision, "RolloutFailed"))
            self.set_rollout(entry, "RolloutFailed")
            kept = self.serving or "none"
            self.cond(
                ROLLED_OUT,
                "False",
                "RolloutFailed",
                f"revision {revision} was not ready within progressDeadlineSeconds={deadline} "
                f"({server.message or 'no reason given'}); traffic stays on revision {kept}",
            )
            return
        self.phase = "RollingOut"
        self.rolling_out = revision
        if server.refused is not None:
            # Not given up before the deadline: a raised quota lets the pods through.
            self.cond(
                ROLLED_OUT,
                "False",
                server.refused.reason,
                f"the cluster refused the server pods of revision {revision}: "
                f"{server.refused.message}; traffic stays on revision {self.serving or 'none'}",
            )
        else:
            self.cond(ROLLED_OUT, "Unknown", "Progressing", f"waiting for revision {revision}")
        self.wake_at(ends)

    def set_rollout(
        self, entry: HistoryEntry, outcome: Literal["RolledOut", "RolloutFailed"]
    ) -> None:
        updated = entry.model_copy(update={"rollout": outcome})
        self.status.history = [
            updated if h.revision == entry.revision else h for h in self.status.history
        ]

    def maintain_serving(self) -> None:
        """Keep the serving revision's server and the Service as built; retire old servers."""
        serving = self.serving
        candidate = self.rolling_out
        if serving is not None:
            server = self.obs.servers.get(serving)
            stale = server is None or server.serving_digest != serving_digest(self.dm)
            # While a candidate rolls out, a missing serving server is not rebuilt only to be
            # replaced; should the rollout fail, the next pass rebuilds it.
            rolling = candidate is not None and server is None
            if (
                stale
                and not rolling
                and Deploy(serving) not in self.actions
                and not self.refused(
                    f"server/{serving}", READY, f"the server of revision {serving}"
                )
            ):
                self.actions.append(Deploy(serving))
            if (
                self.obs.traffic != serving
                and SwitchTraffic(serving) not in self.actions
                and not self.refused("traffic", READY, "the Service")
            ):
                self.actions.append(SwitchTraffic(serving))
            if server is None and rolling:
                self.cond(
                    READY,
                    "False",
                    "Recreating",
                    f"revision {serving} was removed to make room for revision {candidate} "
                    "(serving.strategy Recreate)",
                )
            elif server is not None and server.ready:
                endpoint = self.status.serving.endpoint if self.status.serving else None
                self.cond(
                    READY,
                    "True",
                    "Serving",
                    f"revision {serving} serves model {self.dm.metadata.name!r}"
                    + (f" at {endpoint}" if endpoint else ""),
                )
            else:
                detail = server.message if server is not None else "its server is starting"
                self.cond(READY, "False", "ServerNotReady", f"revision {serving}: {detail}")
        else:
            self.cond(
                READY,
                "False",
                "NoRevisionPromoted",
                "no revision has been promoted yet: nothing serves",
            )
        since = self.status.serving.since if self.status.serving else None
        removing = {a.revision for a in self.actions if isinstance(a, RemoveServer)}
        for revision in sorted(self.obs.servers):
            if revision in (serving, candidate) or revision in removing:
                continue
            if since is not None and self.now < since + timedelta(
                seconds=self.policy.cleanup_delay_seconds
            ):
                self.wake_at(since + timedelta(seconds=self.policy.cleanup_delay_seconds))
                continue
            self.actions.append(RemoveServer(revision, "Replaced"))

    def finish(self) -> None:
        if self.spec.suspend:
            phase: Phase = "Suspended"
        elif self.phase is not None:
            phase = self.phase
        elif self.serving is not None:
            phase = "Ready"
        elif self.status.candidate is not None and self.status.candidate.verdict == "Rejected":
            phase = "Rejected"
        else:
            phase = "Pending"
        self.status.phase = phase
        self.status.observed_generation = self.generation


def plan(
    dm: DocModel,
    generation: int | None,
    status: DocModelStatus,
    observed: Observed,
    store_uri: str,
    policy: Policy | None = None,
) -> Plan:
    """Decide the next actions and the new status of one DocModel. Pure: no I/O, no clock."""
    return _Planner(dm, generation, status, observed, store_uri, policy or Policy()).run()
