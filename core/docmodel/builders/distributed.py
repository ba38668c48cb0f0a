"""Distributed training (`spec.training.distributed` with more than one process): the training
engine's resource that runs the train step under torchrun, in place of a Job.

Two engines, whichever the cluster serves (docs/distributed.md):
- Kubeflow's training operator: a `kubeflow.org/v1` PyTorchJob, one Master pod and
  `nodes - 1` Worker pods, each running `processesPerNode` processes;
- Kubeflow Trainer: a `trainer.kubeflow.org/v1alpha1` TrainJob on the `torch-distributed`
  ClusterTrainingRuntime, `nodes` pods of `processesPerNode` processes.

Both run the same pod as the train Job would (image, environment, resources, scheduling, the
restricted security context, the work volumes), under `torchrun`, which takes the rendezvous
(the master's address and port, this node's rank) from the `PET_*` variables the engine sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from docmodel.api import DocModel
from docmodel.builders.children import Owner, child_metadata, job_name
from docmodel.builders.pods import PodDefaults, StoreConfig
from docmodel.builders.steps import queue_labels, step_command, step_labels, step_pod


@dataclass(frozen=True)
class Engine:
    """A training engine's resource as the API serves it."""

    kind: str
    group: str
    version: str
    plural: str
    installs: str  # what to install when the cluster serves neither

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


PYTORCHJOB = Engine(
    "PyTorchJob",
    "kubeflow.org",
    "v1",
    "pytorchjobs",
    "Kubeflow's training operator (PyTorchJob, kubeflow.org/v1)",
)
TRAINJOB = Engine(
    "TrainJob",
    "trainer.kubeflow.org",
    "v1alpha1",
    "trainjobs",
    "Kubeflow Trainer (TrainJob, trainer.kubeflow.org/v1alpha1, with its torch-distributed "
    "ClusterTrainingRuntime)",
)
# In order of preference: the first the cluster serves runs distributed training.
ENGINES = (PYTORCHJOB, TRAINJOB)

# The container the training operator injects the rendezvous environment into.
PYTORCH_CONTAINER = "pytorch"
# The Trainer runtime's trainer container and replicated job.
TRAINJOB_NODE = "node"
TRAINJOB_RUNTIME = "torch-distributed"


def is_distributed(dm: DocModel) -> bool:
    """Whether the train step runs on a training engine (more than one process)."""
    return dm.spec.training.distributed.world_size > 1


def pick_engine(served: frozenset[str]) -> Engine | None:
    """The engine to use among those whose kind the cluster serves (`served`: kinds)."""
    return next((engine for engine in ENGINES if engine.kind in served), None)


def no_engine_message(dm: DocModel) -> str:
    """Why distributed training cannot start on a cluster that serves no engine."""
    dist = dm.spec.training.distributed
    options = " or ".join(engine.installs for engine in ENGINES)
    return (
        f"spec.training.distributed asks for {dist.nodes} node(s) x {dist.processes_per_node} "
        f"process(es); this cluster serves no training engine: install {options}, or set "
        "nodes and processesPerNode to 1 to train in a Job"
    )


def torchrun(dm: DocModel) -> list[str]:
    """The launcher: torchrun with the run's shape; the rendezvous (master address and port,
    node rank) comes from the engine's PET_* variables."""
    dist = dm.spec.training.distributed
    return [
        "torchrun",
        f"--nnodes={dist.nodes}",
        f"--nproc-per-node={dist.processes_per_node}",
        "--no-python",
    ]


def train_pod(
    dm: DocModel,
    revision: str,
    store: StoreConfig,
    trainer_image: str,
    defaults: PodDefaults | None,
    container: str,
) -> dict[str, Any]:
    """The train Job's pod with its one container named `container`, under torchrun."""
    command = step_command(dm, "train", revision, store)
    return step_pod(
        dm,
        command,
        trainer_image,
        defaults=defaults,
        container_name=container,
        launcher=torchrun(dm),
    )


def build_pytorchjob(
    dm: DocModel,
    owner: Owner,
    revision: str,
    store: StoreConfig,
    trainer_image: str,
    *,
    defaults: PodDefaults | None = None,
) -> dict[str, Any]:
    """The PyTorchJob that trains `revision`: a Master and `nodes - 1` Workers.

    The restart policy is the training operator's `ExitCode`: a pod killed from outside (its
    container's exit code above 128: evicted, OOM-killed, preempted, its node lost) is restarted,
    up to `backoffLimit` times, and resumes from the last checkpoint every rank holds; a
    trainer that fails (torchrun exits 1 when any of its processes fails, killed or not) fails
    the PyTorchJob at once, with the trainer's last lines in the pod's termination message.
    """
    training = dm.spec.training
    dist = training.distributed
    lbls = step_labels(dm, "train", revision)
    pod = train_pod(dm, revision, store, trainer_image, defaults, PYTORCH_CONTAINER)
    del pod["restartPolicy"]  # the replica's restartPolicy decides

    def replica(count: int) -> dict[str, Any]:
        return {
            "replicas": count,
            "restartPolicy": "ExitCode",
            "template": {"metadata": {"labels": lbls}, "spec": pod},
        }

    replicas = {"Master": replica(1)}
    if dist.nodes > 1:
        replicas["Worker"] = replica(dist.nodes - 1)
    queue = queue_labels(dm, "train")
    run_policy: dict[str, Any] = {
        "cleanPodPolicy": "None",  # the pods' logs and exit codes stay for the status
        "backoffLimit": training.backoff_limit,
        "activeDeadlineSeconds": training.active_deadline_seconds,
    }
    if queue:
        run_policy["suspend"] = True
    return {
        "apiVersion": PYTORCHJOB.api_version,
        "kind": PYTORCHJOB.kind,
        "metadata": child_metadata(owner, job_name(dm, "train", revision), {**lbls, **queue}),
        "spec": {
            "nprocPerNode": str(dist.processes_per_node),
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": replicas,
        },
    }


def build_trainjob(
    dm: DocModel,
    owner: Owner,
    revision: str,
    store: StoreConfig,
    trainer_image: str,
    *,
    defaults: PodDefaults | None = None,
) -> dict[str, Any]:
    """The TrainJob that trains `revision` on the `torch-distributed` runtime.

    A TrainJob sets the trainer's image, command, environment and resources; scheduling and
    the work volumes go in `podSpecOverrides`. The pods' security context is the runtime's
    (the ClusterTrainingRuntime's pod template: docs/distributed.md shows a restricted one).
    """
    dist = dm.spec.training.distributed
    lbls = step_labels(dm, "train", revision)
    pod = train_pod(dm, revision, store, trainer_image, defaults, TRAINJOB_NODE)
    container = pod["containers"][0]
    override: dict[str, Any] = {
        "targetJobs": [{"name": TRAINJOB_NODE}],
        "volumes": pod["volumes"],
        "containers": [{"name": TRAINJOB_NODE, "volumeMounts": container["volumeMounts"]}],
    }
    for key in ("nodeSelector", "tolerations"):
        if key in pod:
            override[key] = pod[key]
    queue = queue_labels(dm, "train")
    spec: dict[str, Any] = {
        "runtimeRef": {
            "apiGroup": TRAINJOB.group,
            "kind": "ClusterTrainingRuntime",
            "name": TRAINJOB_RUNTIME,
        },
        "labels": lbls,
        "trainer": {
            "image": container["image"],
            "command": container["command"],
            "args": container["args"],
            "env": container["env"],
            "numNodes": dist.nodes,
            "numProcPerNode": dist.processes_per_node,
            "resourcesPerNode": container["resources"],
        },
        "podSpecOverrides": [override],
    }
    if queue:
        spec["suspend"] = True
    return {
        "apiVersion": TRAINJOB.api_version,
        "kind": TRAINJOB.kind,
        "metadata": child_metadata(owner, job_name(dm, "train", revision), {**lbls, **queue}),
        "spec": spec,
    }


def build_training(
    engine: Engine,
    dm: DocModel,
    owner: Owner,
    revision: str,
    store: StoreConfig,
    trainer_image: str,
    *,
    defaults: PodDefaults | None = None,
) -> dict[str, Any]:
    """The `engine`'s resource for the train step of `revision`."""
    build = build_pytorchjob if engine is PYTORCHJOB else build_trainjob
    return build(dm, owner, revision, store, trainer_image, defaults=defaults)
