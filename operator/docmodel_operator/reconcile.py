"""One reconcile of one DocModel: read it, observe the cluster and the store, ask the planner,
record the status and Events, carry the actions out. Level-triggered and idempotent: every
call starts from what is there, so a replayed event or a restart changes nothing that is done.

Runs in a worker thread of the work queue (`docmodel_operator.workqueue`), never on the event
loop; the queue hands a DocModel to one worker at a time.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException

from docmodel import gate
from docmodel.api import DocModel, DocModelStatus, SpecError, parse_docmodel
from docmodel.artifacts import open_artifact_store
from docmodel.builders import (
    ENGINES,
    Engine,
    Owner,
    StoreConfig,
    build_deployment,
    build_disruption_budget,
    build_job,
    build_server_policy,
    build_service,
    build_steps_policy,
    build_training,
    deployment_name,
    is_distributed,
    job_name,
    no_engine_message,
    pick_engine,
    service_endpoint,
    service_name,
)
from docmodel.digests import canonical_json, evaluation_digest
from docmodel.plan import (
    Action,
    DeleteJobs,
    Deploy,
    Observed,
    Plan,
    Policy,
    Refusal,
    Refused,
    RemoveServer,
    StartStep,
    SwitchTraffic,
    reconcile_pass,
    refusal_key,
    target_revision,
)
from docmodel.revision import (
    RevisionArtifacts,
    SourceCheck,
    check_source,
    observe_revision,
    open_source,
)
from docmodel.status import redact, set_condition
from docmodel.storage import ObjectStore
from docmodel_operator import metrics, observe
from docmodel_operator.cache import Cache
from docmodel_operator.kube import Kube
from docmodel_operator.settings import OperatorSettings

log = logging.getLogger("docmodel.operator")

SOURCE_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# The training engines the cluster serves are asked of API discovery at most this often.
ENGINES_TTL_SECONDS = 60.0
# The kinds of step children in the cache: Jobs, and the training engines' resources.
STEP_KINDS = ("jobs", "pytorchjobs", "trainjobs")


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Secrets:
    """The values of the Secrets a DocModel's pods use (to hide them in copied log lines), the
    source's credentials, and the names of those that do not exist."""

    values: tuple[str, ...] = ()
    source_env: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()


class Reconciler:
    def __init__(
        self,
        settings: OperatorSettings,
        kube: Kube,
        cache: Cache,
        store: ObjectStore | None = None,
    ):
        self.settings = settings
        self.kube = kube
        self.cache = cache
        env = dict(os.environ)
        if settings.store_endpoint:
            env["DOCMODEL_STORE_ENDPOINT"] = settings.store_endpoint
        self.store = store or open_artifact_store(settings.store_uri, env)
        self.store_config = StoreConfig(
            self.store.uri, settings.store_endpoint, settings.store_secret or None
        )
        # The status each DocModel was last given, by generation: its own echo (the event of
        # that status patch) needs no reconcile.
        self._written: dict[tuple[str, str], tuple[int, DocModelStatus]] = {}
        # The NetworkPolicies this process applied (or removed), by namespace, DocModel and
        # policy name: their content, "" for removed.
        self._policies: dict[tuple[str, str, str], str] = {}
        # Children the API server refused, by DocModel and what they were for: the next
        # passes plan without them until their retry is due.
        self._refused: dict[tuple[str, str], tuple[int, dict[str, Refusal]]] = {}
        # What each DocModel's last read of the store found, by what it was read for: a
        # revision's artifacts never change once written, so what was found is not read
        # again, and an idle DocModel's polls read nothing from the store.
        self._found: dict[tuple[str, str], tuple[tuple[str, ...], RevisionArtifacts]] = {}
        self._engines: tuple[float, frozenset[str]] | None = None  # (when asked, kinds)

    # -- entry point --------------------------------------------------------------------------

    def reconcile(self, namespace: str, name: str) -> float | None:
        """One reconcile; return seconds until a timer is due (None: no timer)."""
        return self._timed(namespace, name)

    def forget(self, namespace: str, name: str) -> None:
        self._written.pop((namespace, name), None)
        self._refused.pop((namespace, name), None)
        for key in [k for k in self._policies if k[:2] == (namespace, name)]:
            del self._policies[key]
        self._forget_artifacts(namespace, name)

    def _forget_artifacts(self, namespace: str, name: str) -> None:
        self._found.pop((namespace, name), None)

    def _last_written(self, body: dict[str, Any]) -> tuple[int, DocModelStatus] | None:
        meta = body.get("metadata") or {}
        return self._written.get((meta.get("namespace", ""), meta.get("name", "")))

    @staticmethod
    def _shows(body: dict[str, Any], status: DocModelStatus) -> bool:
        try:
            return parse_status(body.get("status")) == status
        except ValueError:
            return False

    def is_echo(self, body: dict[str, Any]) -> bool:
        """Whether `body` is what this operator's last status patch made of the DocModel."""
        written = self._last_written(body)
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        return written is not None and written[0] == generation and self._shows(body, written[1])

    def _timed(self, namespace: str, name: str) -> float | None:
        started = time.monotonic()
        try:
            requeue = self._reconcile(namespace, name)
        except Exception:
            metrics.RECONCILE_ERRORS.labels(metrics.CONTROLLER).inc()
            metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, "error").inc()
            log.exception("Failed reconcile docmodel=%s/%s", namespace, name)
            return 10.0
        finally:
            metrics.RECONCILE_TIME.labels(metrics.CONTROLLER).observe(time.monotonic() - started)
        result = "requeue_after" if requeue is not None else "success"
        metrics.RECONCILE_TOTAL.labels(metrics.CONTROLLER, result).inc()
        return requeue

    # -- one pass -----------------------------------------------------------------------------

    def _reconcile(self, namespace: str, name: str) -> float | None:
        """One pass over the DocModel as the cache holds it."""
        body = self.cache.docmodel(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            return None  # gone (or not seen yet): owner references remove the children
        meta = body["metadata"]
        generation = int(meta.get("generation") or 0)
        status = parse_status(body.get("status"))
        written = self._last_written(body)
        if written is not None and status != written[1]:
            # The watch has not delivered the last status patch yet; this operator is the
            # status's only writer, so what it wrote is the status.
            status = written[1]
        try:
            dm = parse_docmodel({**body, "spec": body.get("spec") or {}})
        except SpecError as exc:
            self._invalid(body, status, generation, exc)
            return None
        key = (namespace, name)
        children = Children(self, Owner(name, namespace, meta["uid"]), self._secrets(dm))
        held = self._refused.get(key)
        # A new generation (a changed spec) tries every child again at once.
        refused = held[1] if held is not None and held[0] == generation else {}
        at = now()
        done = reconcile_pass(dm, generation, status, children, at, refused=refused)
        if done.refused:
            self._refused[key] = (generation, done.refused)
        else:
            self._refused.pop(key, None)
        self._record(body, status, done.plan, at)
        return done.plan.requeue_after

    def _invalid(
        self, body: dict[str, Any], status: DocModelStatus, generation: int, exc: SpecError
    ) -> None:
        """A spec the API server let through but the models refuse: say so, start nothing."""
        new = status.model_copy(deep=True)
        at = now()
        new.conditions = set_condition(
            new.conditions, "Ready", "False", "InvalidSpec", str(exc), generation, at
        )
        new.phase = "Failed"
        new.observed_generation = generation
        self._record(body, status, Plan(new, (), (), None, True), at)

    def _secrets(self, dm: DocModel) -> Secrets:
        spec = dm.spec
        wanted: dict[str, str | None] = {}  # secret name -> the key of interest (None: all)
        if self.settings.store_secret:
            wanted[self.settings.store_secret] = None
        if spec.source.secret_ref is not None:
            wanted[spec.source.secret_ref.name] = None
        for ref in (
            spec.base_model.token_secret_ref,
            spec.serving.api_key_secret_ref,
            spec.dataset.teacher.secret_ref if spec.dataset.teacher else None,
        ):
            if ref is not None:
                wanted.setdefault(ref.name, ref.key)
        values: list[str] = []
        missing: list[str] = []
        source_env: dict[str, str] = {}
        for secret_name in wanted:
            exists, data = self.cache.secret(dm.metadata.namespace, secret_name)
            if exists and data is None:  # of a type whose values the cache does not keep
                data = self.kube.secret_data(dm.metadata.namespace, secret_name)
            if data is None:
                missing.append(secret_name)
                continue
            values.extend(v for v in data.values() if v)
            if spec.source.secret_ref is not None and secret_name == spec.source.secret_ref.name:
                source_env = {k: data[k] for k in SOURCE_KEYS if data.get(k)}
        return Secrets(tuple(values), source_env, tuple(missing))

    def _list_source(self, dm: DocModel, secrets: Secrets) -> SourceCheck:
        spec = dm.spec
        env = dict(secrets.source_env)
        if spec.source.secret_ref is None:  # ambient credentials, as the pods have
            env = {k: v for k, v in os.environ.items() if k.startswith("AWS_")}
        check = check_source(spec, open_source(spec, env=env))
        metrics.SOURCE_CHECKS.labels("ok" if check.resolved is not None else "error").inc()
        return check

    def _observe(
        self,
        dm: DocModel,
        status: DocModelStatus,
        check: SourceCheck | None,
        secrets: Secrets,
        at: datetime,
    ) -> Observed:
        ns, name = dm.metadata.namespace, dm.metadata.name
        target = target_revision(dm.spec, status, check)
        serving = status.serving.revision if status.serving else None
        pods = self.cache.children("pods", ns, name)
        children = [job for kind in STEP_KINDS for job in self.cache.children(kind, ns, name)]
        jobs, revisions = observe.step_jobs(dm, children, pods, target, serving, secrets.values)
        for step, state in jobs.items():
            if state.queued and target is not None:  # Kueue's reason, from the Workload
                child = next(
                    c
                    for c in children
                    if c["metadata"].get("name") == job_name(dm, step, target, serving)
                )
                workloads = self.kube.workloads(ns, child["metadata"].get("uid", ""))
                jobs[step] = observe.queued_state(child, workloads) or state
                continue
            # A Job whose pod has not come for a while: its controller's Events say whether
            # the cluster refuses the pod (one LIST, only while a Job has no pod).
            waited = (at - state.since).total_seconds() if state.since is not None else 0.0
            if state.awaiting_pod and target is not None and waited >= observe.POD_GRACE_SECONDS:
                events = self.kube.job_events(ns, job_name(dm, step, target, serving))
                jobs[step] = observe.refused_job(state, events, secrets.values)
        if any(job.phase == "Failed" for job in jobs.values()):
            self._forget_artifacts(ns, name)  # a step may have failed for a missing artifact
        artifacts = self._artifacts(dm, target, serving)
        return Observed(
            now=at,
            source=check,
            artifacts=artifacts,
            jobs=jobs,
            job_revisions=revisions,
            servers=observe.servers(
                self.cache.children("deployments", ns, name), service_endpoint(dm), pods
            ),
            traffic=observe.traffic(self.cache.children("services", ns, name), service_name(name)),
            missing_secrets=secrets.missing,
        )

    def _artifacts(
        self, dm: DocModel, target: str | None, serving: str | None
    ) -> RevisionArtifacts:
        if target is None:
            return RevisionArtifacts()
        ns, name = dm.metadata.namespace, dm.metadata.name
        read_for = (target, serving or "", evaluation_digest(dm.spec))
        found = self._found.get((ns, name))
        known = found[1] if found is not None and found[0][0] == target else None
        if found is not None and found[0] == read_for and complete(found[1]):
            return found[1]  # complete: nothing left to look for
        artifacts = observe_revision(self.store, dm.spec, ns, name, target, serving, known)
        self._found[(ns, name)] = (read_for, artifacts)
        return artifacts

    def _record(
        self, body: dict[str, Any], before: DocModelStatus, result: Plan, at: datetime
    ) -> None:
        meta = body["metadata"]
        if result.status != before:
            key = (meta["namespace"], meta["name"])
            # Remembered before the patch is sent: its event may arrive before the reply.
            self._written[key] = (int(meta.get("generation") or 0), result.status)
            try:
                self.kube.patch_status(key[0], key[1], status_patch(result.status))
            except Exception:
                self._written.pop(key, None)
                raise
        for event in result.events:
            self.kube.event(body, event.type, event.reason, event.message, at)
            if event.reason in gate.REASONS:
                verdict = "Promoted" if event.type == "Normal" else "Rejected"
                metrics.GATE_DECISIONS.labels(verdict, event.reason).inc()
            elif event.reason in ("RolledOut", "RolloutFailed"):
                metrics.ROLLOUTS.labels(event.reason).inc()
        failure = result.status.last_failure
        if failure is not None and failure != before.last_failure:
            metrics.STEP_FAILURES.labels(failure.stage, failure.reason).inc()
            log.warning(
                "Failed step=%s docmodel=%s/%s revision=%s reason=%s exit_code=%s",
                failure.stage,
                meta["namespace"],
                meta["name"],
                failure.revision,
                failure.reason,
                failure.exit_code,
            )

    # -- actions ------------------------------------------------------------------------------

    def served_engines(self) -> frozenset[str]:
        """The training engines' kinds the cluster serves (API discovery, cached a minute)."""
        at = time.monotonic()
        if self._engines is None or at - self._engines[0] > ENGINES_TTL_SECONDS:
            self._engines = (at, self.kube.served_engines())
        return self._engines[1]

    def serving_engines(self) -> list[Engine]:
        served = self.served_engines()
        return [engine for engine in ENGINES if engine.kind in served]

    def _policy(self, dm: DocModel, policy: dict[str, Any]) -> None:
        """Apply a NetworkPolicy as built, or remove it when the spec turns policies off; once
        per content and operator process (a Job's creation does not wait for a second apply
        of the same policy; a restarted operator applies each once again)."""
        enabled = dm.spec.serving.network_policy.enabled
        meta = policy["metadata"]
        key = (meta["namespace"], dm.metadata.name, meta["name"])
        wanted = canonical_json(policy) if enabled else ""
        if self._policies.get(key) == wanted:
            return
        if enabled:
            self.kube.apply(policy)
        else:
            self.kube.delete("NetworkPolicy", meta["namespace"], meta["name"])
        self._policies[key] = wanted

    def _act(self, dm: DocModel, owner: Owner, action: Action, observed: Observed) -> None:
        ns, name = dm.metadata.namespace, dm.metadata.name
        where = f"docmodel={ns}/{name}"
        if isinstance(action, StartStep) and action.step == "train" and is_distributed(dm):
            self._policy(dm, build_steps_policy(dm, owner))
            engine = pick_engine(self.served_engines())
            if engine is None:
                raise Refused(Refusal("NoTrainingEngine", no_engine_message(dm), observed.now))
            training = build_training(
                engine,
                dm,
                owner,
                action.revision,
                self.store_config,
                self.settings.trainer_image,
                defaults=self.settings.pod_defaults,
            )
            if self.kube.create_training(engine, training):
                metrics.STEPS_STARTED.labels(action.step).inc()
                log.info(
                    "Created %s=%s %s step=train processes=%d",
                    engine.kind.lower(),
                    training["metadata"]["name"],
                    where,
                    dm.spec.training.distributed.world_size,
                )
        elif isinstance(action, StartStep):
            self._policy(dm, build_steps_policy(dm, owner))
            job = build_job(
                dm,
                owner,
                action.step,
                action.revision,
                self.store_config,
                self.settings.trainer_image,
                serving_revision=action.serving_revision,
                defaults=self.settings.pod_defaults,
            )
            if self.kube.create_job(job):
                metrics.STEPS_STARTED.labels(action.step).inc()
                log.info("Created job=%s %s step=%s", job["metadata"]["name"], where, action.step)
        elif isinstance(action, DeleteJobs):
            self.kube.delete_jobs(ns, name, action.revision, self.serving_engines())
            log.info("Deleted jobs %s revision=%s reason=%s", where, action.revision, action.reason)
        elif isinstance(action, Deploy):
            self._policy(dm, build_server_policy(dm, owner))
            self.kube.apply(
                build_deployment(
                    dm,
                    owner,
                    action.revision,
                    self.store_config,
                    self.settings.server_image,
                    self.settings.pod_defaults,
                )
            )
            budget = build_disruption_budget(dm, owner, action.revision)
            if budget is not None:
                self.kube.apply(budget)
            else:  # one replica (now): no budget, which would block every drain
                self.kube.delete("PodDisruptionBudget", ns, deployment_name(name, action.revision))
            log.info("Applied deployment=%s %s", deployment_name(name, action.revision), where)
        elif isinstance(action, SwitchTraffic):
            self.kube.apply(build_service(dm, owner, action.revision))
            log.info("Switched traffic %s revision=%s", where, action.revision)
        elif isinstance(action, RemoveServer):
            self.kube.delete("Deployment", ns, deployment_name(name, action.revision))
            self.kube.delete("PodDisruptionBudget", ns, deployment_name(name, action.revision))
            log.info(
                "Deleted deployment=%s %s reason=%s",
                deployment_name(name, action.revision),
                where,
                action.reason,
            )


@dataclass(frozen=True)
class Children:
    """The operator as one DocModel's executor in a pass (`docmodel.plan.reconcile_pass`): it
    observes the DocModel's children in the cache and the store, and acts by creating,
    applying and deleting them; a child the API server refuses is a `Refused`."""

    reconciler: Reconciler
    owner: Owner
    secrets: Secrets

    @property
    def store_uri(self) -> str:
        return self.reconciler.store.uri

    @property
    def policy(self) -> Policy:
        return self.reconciler.settings.policy

    def list_source(self, dm: DocModel) -> SourceCheck:
        return self.reconciler._list_source(dm, self.secrets)

    def observe(
        self, dm: DocModel, status: DocModelStatus, check: SourceCheck | None, now: datetime
    ) -> Observed:
        return self.reconciler._observe(dm, status, check, self.secrets, now)

    def order(self, actions: Sequence[Action]) -> Sequence[Action]:
        return actions  # the cluster runs them side by side

    def act(self, dm: DocModel, action: Action, observed: Observed) -> None:
        try:
            self.reconciler._act(dm, self.owner, action, observed)
        except ApiException as exc:
            if exc.status not in REFUSED_STATUSES:
                raise
            refusal = api_refusal(exc, observed.now, self.secrets)
            log.warning(
                "Refused child docmodel=%s/%s for=%s reason=%s",
                dm.metadata.namespace,
                dm.metadata.name,
                refusal_key(action),
                refusal.reason,
            )
            raise Refused(refusal) from None


# What the API server answers when it will not take an object as it is: a bad request, a
# refusal (admission, quota, RBAC), an invalid field. Anything else (a conflict, a timeout,
# a server error) is retried as an error.
REFUSED_STATUSES = (400, 403, 422)


def api_refusal(exc: ApiException, at: datetime, secrets: Secrets) -> Refusal:
    """The API server's reason and message from its Status answer."""
    reason, message = exc.reason or "Refused", str(exc.body or "")
    try:
        body = json.loads(exc.body or "")
        reason = body.get("reason") or reason
        message = body.get("message") or message
    except (TypeError, ValueError):
        pass
    return Refusal(reason, " ".join(redact([message], secrets.values)), at)


def parse_status(raw: dict[str, Any] | None) -> DocModelStatus:
    """The recorded status; fields this version does not know (another writer's) are ignored."""
    raw = dict(raw or {})
    known = {f.alias or n for n, f in DocModelStatus.model_fields.items()} | set(
        DocModelStatus.model_fields
    )
    return DocModelStatus.model_validate({k: v for k, v in raw.items() if k in known})


def status_patch(status: DocModelStatus) -> dict[str, Any]:
    """A merge patch that sets every field (unset ones to null, which removes them)."""
    return status.model_dump(mode="json", by_alias=True)


def complete(artifacts: RevisionArtifacts) -> bool:
    return artifacts.dataset and artifacts.adapter and artifacts.report is not None
