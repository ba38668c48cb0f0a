"""Each step's command (a Job's container, or a local process in local mode), its scheduling
and its Job."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from docmodel import labels
from docmodel.api import DocModel, ResourcesSpec, Toleration
from docmodel.builders.children import STEP_SUFFIX, Owner, Step, child_metadata, job_name
from docmodel.builders.pods import (
    INGEST_RESOURCES,
    JOB_WORKDIR,
    STEP_FILES_GIB,
    TRAINER_PROGRAM,
    EnvVar,
    PodDefaults,
    StoreConfig,
    container_resources,
    ephemeral_storage,
    manifest_json,
    restricted_pod,
    secret_env,
    source_env,
)
from docmodel.failures import EXIT_CODES


@dataclass(frozen=True)
class StepCommand:
    """What one step runs: `docmodel-trainer <args>` with `env`."""

    step: Step
    args: list[str]
    env: list[EnvVar] = field(default_factory=list)

    def literal_env(self) -> dict[str, str]:
        """The variables with literal values (Secret keys and pod fields left out)."""
        return {e.name: e.value or "" for e in self.env if e.literal}


def step_command(
    dm: DocModel,
    step: Step,
    revision: str,
    store: StoreConfig,
    *,
    workdir: str | None = None,
    serving_revision: str | None = None,
    source_dir: str | None = None,
) -> StepCommand:
    """The trainer command of `step` for `revision` (evaluation also scores `serving_revision`).

    The workdir defaults to a directory of the DocModel, revision and step under the Job's
    volume, so that pods sharing a host path (a node without emptyDir) never resume from each
    other's checkpoints. `source_dir` reads the documents from a directory instead of the
    DocModel's bucket (local mode's `--docs`).
    """
    if workdir is None:
        meta = dm.metadata
        workdir = f"{JOB_WORKDIR}/{meta.namespace}/{meta.name}/{revision}/{step}"
    args = [step, "--store", store.uri, "--revision", revision, "--workdir", workdir]
    if step == "ingest" and source_dir is not None:
        args += ["--source-dir", source_dir]
    if step == "evaluate" and serving_revision and serving_revision != revision:
        args += ["--serving-revision", serving_revision]
    env = [EnvVar("DOCMODEL_MANIFEST", manifest_json(dm)), *store.env(), *source_env(dm)]
    teacher = dm.spec.dataset.teacher
    if step == "ingest" and teacher is not None and teacher.secret_ref is not None:
        env.append(
            secret_env("DOCMODEL_TEACHER_API_KEY", teacher.secret_ref.name, teacher.secret_ref.key)
        )
    return StepCommand(step, args, env)


@dataclass(frozen=True)
class Scheduling:
    resources: ResourcesSpec
    node_selector: dict[str, str]
    tolerations: list[Toleration]
    priority_class_name: str | None = None

    def apply(self, pod: dict[str, Any], defaults: PodDefaults) -> None:
        if self.node_selector or self.tolerations:
            selector: Mapping[str, str] = self.node_selector
            tolerations: list[Any] = [
                t.model_dump(by_alias=True, exclude_none=True) for t in self.tolerations
            ]
        else:
            selector, tolerations = defaults.node_selector, [dict(t) for t in defaults.tolerations]
        if selector:
            pod["nodeSelector"] = dict(selector)
        if tolerations:
            pod["tolerations"] = tolerations
        if self.priority_class_name:
            pod["priorityClassName"] = self.priority_class_name


def step_scheduling(dm: DocModel, step: Step) -> Scheduling:
    """Where a step's pod runs: ingest needs no GPU; evaluation takes training's settings
    where its own are unset."""
    training, evaluation = dm.spec.training, dm.spec.evaluation
    if step == "ingest":
        return Scheduling(INGEST_RESOURCES, {}, [])
    if step == "train":
        return Scheduling(
            training.resources,
            training.node_selector,
            training.tolerations,
            training.priority_class_name,
        )
    return Scheduling(
        evaluation.resources or training.resources,
        training.node_selector if evaluation.node_selector is None else evaluation.node_selector,
        training.tolerations if evaluation.tolerations is None else evaluation.tolerations,
        training.priority_class_name,
    )


def pod_failure_policy(container: str) -> dict[str, Any]:
    """Fail the Job on the first pod whose exit code says retrying cannot help; a pod evicted
    by a disruption (node drain, preemption) does not count against `backoffLimit`."""
    at_once = sorted(code for code, m in EXIT_CODES.items() if m.fails_job_at_once)
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {"containerName": container, "operator": "In", "values": at_once},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        ]
    }


def queue_labels(dm: DocModel, step: Step) -> dict[str, str]:
    """Kueue's queue label for the training and evaluation workloads when
    `spec.training.queueName` is set (ingest needs no GPU and never waits in the queue)."""
    queue = dm.spec.training.queue_name
    if queue is None or step == "ingest":
        return {}
    return {labels.QUEUE_NAME: queue}


def step_pod(
    dm: DocModel,
    command: StepCommand,
    trainer_image: str,
    *,
    defaults: PodDefaults | None = None,
    container_name: str | None = None,
    launcher: list[str] | None = None,
) -> dict[str, Any]:
    """The restricted pod spec that runs `command`: `docmodel-trainer <args>`, or `launcher`
    followed by the trainer (torchrun for distributed training)."""
    spec = dm.spec
    scheduling = step_scheduling(dm, command.step)
    if launcher:
        argv = [launcher[0]], [*launcher[1:], TRAINER_PROGRAM, *command.args]
    else:
        argv = [TRAINER_PROGRAM], command.args
    container = {
        "name": container_name or command.step,
        "image": spec.training.image or trainer_image,
        "command": argv[0],
        "args": argv[1],
        "env": [e.to_k8s() for e in command.env],
        "resources": container_resources(
            scheduling.resources, ephemeral_storage(spec.base_model.name, STEP_FILES_GIB)
        ),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod = restricted_pod(
        {"restartPolicy": "Never", "containers": [container]}, JOB_WORKDIR, spec.security
    )
    scheduling.apply(pod, defaults or PodDefaults())
    return pod


def step_labels(dm: DocModel, step: Step, revision: str) -> dict[str, str]:
    """The labels of a step's Job (or PyTorchJob) and its pods."""
    return {**labels.child_labels(dm.metadata.name, STEP_SUFFIX[step], revision), labels.STEP: step}


def build_job(
    dm: DocModel,
    owner: Owner,
    step: Step,
    revision: str,
    store: StoreConfig,
    trainer_image: str,
    *,
    serving_revision: str | None = None,
    defaults: PodDefaults | None = None,
) -> dict[str, Any]:
    """The Job that runs `step` for `revision`. With a Kueue queue it is created suspended:
    Kueue starts it once the queue admits it."""
    training = dm.spec.training
    name = job_name(dm, step, revision, serving_revision)
    lbls = step_labels(dm, step, revision)
    command = step_command(dm, step, revision, store, serving_revision=serving_revision)
    pod = step_pod(dm, command, trainer_image, defaults=defaults)
    queue = queue_labels(dm, step)
    job_spec: dict[str, Any] = {
        "backoffLimit": training.backoff_limit,
        "activeDeadlineSeconds": training.active_deadline_seconds,
        "podFailurePolicy": pod_failure_policy(step),
        "template": {"metadata": {"labels": lbls}, "spec": pod},
    }
    if queue:
        job_spec["suspend"] = True
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": child_metadata(owner, name, {**lbls, **queue}),
        "spec": job_spec,
    }
