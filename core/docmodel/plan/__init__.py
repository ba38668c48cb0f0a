"""The lifecycle planner: (spec, status, what was observed) -> (new status, next actions).

One pure function decides every step of a DocModel's lifecycle; the operator executes its
actions as Kubernetes objects, local mode as local processes, so the two cannot drift. Both go
through the same pass (`reconcile_pass`, given the executor), until the plan has no actions
left (local mode) or until the next event or requeue (the operator):

    due = source_check_due(dm.spec, status, generation, now)
    check = executor.list_source(dm) if due else None
    observed = executor.observe(dm, status, check, now)    # the target's artifacts and Jobs,
    result = plan(dm, generation, status, observed, ...)   #   the servers, where traffic goes
    <executor.act on result.actions; plan again if the platform refused one>
    <the executor writes result.status and emits result.events>

The stages of one revision: ingest -> train -> evaluate (each a step whose artifact's manifest
marks it done) -> the gate (docmodel.gate, on the report) -> rollout (blue-green: a server per
revision; traffic moves once the new server is ready; the old one goes after a delay; past the
progress deadline traffic stays and the candidate's server is removed). A new revision (changed
docs or training-relevant spec) supersedes one still in flight; a judged revision is not judged
again unless the evaluation settings or the gate's policy change.

One module per part: `observed` (what an executor hands in), `actions` (what it is asked to do,
and the plan), `schedule` (source checks, the target revision), `verdicts` (a candidate's status from
its report or its history), `planner` (the decisions) and `reconcile` (one pass, given the
executor).
Import from `docmodel.plan`: every public name is here.
"""

from docmodel.plan.actions import (
    Action,
    DeleteJobs,
    Deploy,
    Plan,
    Policy,
    RemoveServer,
    StartStep,
    SwitchTraffic,
    refusal_key,
)
from docmodel.plan.observed import (
    POD_LOOK_AGAIN_SECONDS,
    QUEUED_LOOK_AGAIN_SECONDS,
    JobState,
    Observed,
    Refusal,
    ServerState,
)
from docmodel.plan.planner import STEP_CONDITION, STEP_DONE, STEP_PHASE, plan
from docmodel.plan.reconcile import MAX_PLANS, Executor, Pass, Refused, reconcile_pass
from docmodel.plan.schedule import (
    judgement_key,
    next_source_check,
    source_check_due,
    target_revision,
)

__all__ = [
    "MAX_PLANS",
    "POD_LOOK_AGAIN_SECONDS",
    "QUEUED_LOOK_AGAIN_SECONDS",
    "STEP_CONDITION",
    "STEP_DONE",
    "STEP_PHASE",
    "Action",
    "DeleteJobs",
    "Deploy",
    "Executor",
    "JobState",
    "Observed",
    "Pass",
    "Plan",
    "Policy",
    "Refusal",
    "Refused",
    "RemoveServer",
    "ServerState",
    "StartStep",
    "SwitchTraffic",
    "judgement_key",
    "next_source_check",
    "plan",
    "reconcile_pass",
    "refusal_key",
    "source_check_due",
    "target_revision",
]
