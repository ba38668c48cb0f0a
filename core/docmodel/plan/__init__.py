"""The lifecycle planner: (spec, status, what was observed) -> (new status, next actions).

One pure function decides every step of a DocModel's lifecycle; the operator executes its
actions as Kubernetes objects, local mode as local processes, so the two cannot drift. An
executor goes round this loop until the plan has no actions left (local mode) or the next event
or requeue (the operator):

    due = source_check_due(dm.spec, status, generation, now)
    check = revision.check_source(dm.spec, <the source>) if due else None
    target = target_revision(dm.spec, status, check)
    observed = Observed(now, check, <revision.observe_revision(target)>, <the target's Jobs>,
                        <servers by revision>, <the revision traffic goes to>)
    result = plan(dm, generation, status, observed, store_uri)
    <carry out result.actions, then write result.status and emit result.events>

The stages of one revision: ingest -> train -> evaluate (each a step whose artifact's manifest
marks it done) -> the gate (docmodel.gate, on the report) -> rollout (blue-green: a server per
revision; traffic moves once the new server is ready; the old one goes after a delay; past the
progress deadline traffic stays and the candidate's server is removed). A new revision (changed
docs or training-relevant spec) supersedes one still in flight; a judged revision is not judged
again unless the evaluation settings or the gate's policy change.

One module per part: `observed` (what an executor hands in), `actions` (what it is asked to do,
and the plan), `schedule` (source checks, the target revision), `verdicts` (a candidate's status from
its report or its history) and `planner` (the pass itself).
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
from docmodel.plan.observed import POD_LOOK_AGAIN_SECONDS, JobState, Observed, Refusal, ServerState
from docmodel.plan.planner import STEP_CONDITION, STEP_DONE, STEP_PHASE, plan
from docmodel.plan.schedule import (
    judgement_key,
    next_source_check,
    source_check_due,
    target_revision,
)

__all__ = [
    "POD_LOOK_AGAIN_SECONDS",
    "STEP_CONDITION",
    "STEP_DONE",
    "STEP_PHASE",
    "Action",
    "DeleteJobs",
    "Deploy",
    "JobState",
    "Observed",
    "Plan",
    "Policy",
    "Refusal",
    "RemoveServer",
    "ServerState",
    "StartStep",
    "SwitchTraffic",
    "judgement_key",
    "next_source_check",
    "plan",
    "refusal_key",
    "source_check_due",
    "target_revision",
]
