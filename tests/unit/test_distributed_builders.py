"""Distributed training and queues in the core and the operator, without a cluster: the
training engines' resources the builders make, Kueue's label on the step Jobs, how the operator
reads a PyTorchJob and a queued Job, and what the planner says of them."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

import pytest

from docmodel import labels
from docmodel.api import SpecError, parse_docmodel
from docmodel.builders import (
    PYTORCHJOB,
    TRAINJOB,
    Owner,
    StoreConfig,
    build_job,
    build_pytorchjob,
    build_trainjob,
    is_distributed,
    job_name,
    no_engine_message,
    pick_engine,
)
from docmodel.digests import spec_digest
from docmodel.plan import JobState, Observed, Refusal, StartStep, plan
from docmodel.status import get_condition
from docmodel_operator.observe import job_state, queued_state, step_jobs

T0 = datetime(2026, 12, 1, tzinfo=UTC)
OWNER = Owner("handbook", "ml", "uid-1")
STORE = StoreConfig("s3://artifacts/docmodel", "http://minio:9000", "docmodel-store")
BASE = {
    "apiVersion": "docmodel.dev/v1alpha1",
    "kind": "DocModel",
    "metadata": {"name": "handbook", "namespace": "ml"},
    "spec": {"source": {"bucket": "docs"}, "training": {"resources": {"gpu": 2}}},
}


def docmodel(**training: Any) -> Any:
    raw = copy.deepcopy(BASE)
    raw["spec"]["training"].update(training)
    return parse_docmodel(raw)


TWO_BY_TWO = docmodel(distributed={"nodes": 2, "processesPerNode": 2}, queueName="gpu-team")


def test_one_process_is_a_plain_job_with_the_revision_it_always_had() -> None:
    single = docmodel()
    explicit = docmodel(distributed={"nodes": 1, "processesPerNode": 1, "strategy": "FSDP"})
    assert not is_distributed(single) and not is_distributed(explicit)
    assert spec_digest(single.spec) == spec_digest(explicit.spec)
    # More processes multiply the global batch: another model, another revision.
    assert spec_digest(TWO_BY_TWO.spec) != spec_digest(single.spec)
    assert TWO_BY_TWO.spec.training.distributed.world_size == 4
    # The queue decides where a revision waits, not what it is.
    assert spec_digest(docmodel(queueName="q").spec) == spec_digest(single.spec)


@pytest.mark.parametrize(
    "distributed",
    [{"nodes": 0}, {"processesPerNode": 17}, {"strategy": "ZeRO"}, {"nodes": 65}],
)
def test_distributed_shape_out_of_range_is_refused(distributed: dict[str, Any]) -> None:
    with pytest.raises(SpecError):
        docmodel(distributed=distributed)


def test_pytorchjob_runs_the_train_pod_under_torchrun_on_master_and_workers() -> None:
    obj = build_pytorchjob(TWO_BY_TWO, OWNER, "r1", STORE, "trainer:1")
    assert (obj["apiVersion"], obj["kind"]) == ("kubeflow.org/v1", "PyTorchJob")
    meta = obj["metadata"]
    assert meta["name"] == job_name(TWO_BY_TWO, "train", "r1")
    assert meta["ownerReferences"][0]["uid"] == "uid-1"
    assert meta["labels"][labels.QUEUE_NAME] == "gpu-team"
    assert meta["labels"][labels.STEP] == "train"
    spec = obj["spec"]
    assert spec["nprocPerNode"] == "2"
    assert spec["runPolicy"] == {
        "cleanPodPolicy": "None",
        "backoffLimit": 2,
        "activeDeadlineSeconds": 86400,
        "suspend": True,  # Kueue starts it once the queue admits it
    }
    replicas = spec["pytorchReplicaSpecs"]
    assert {k: v["replicas"] for k, v in replicas.items()} == {"Master": 1, "Worker": 1}
    train_job = build_job(TWO_BY_TWO, OWNER, "train", "r1", STORE, "trainer:1")
    job_pod = train_job["spec"]["template"]["spec"]
    for replica in replicas.values():
        assert replica["restartPolicy"] == "ExitCode"
        pod = replica["template"]["spec"]
        assert "restartPolicy" not in pod
        assert replica["template"]["metadata"]["labels"][labels.INSTANCE] == "handbook"
        (container,) = pod["containers"]
        (job_container,) = job_pod["containers"]
        assert container["name"] == "pytorch"  # where the operator puts the rendezvous env
        assert container["command"] == ["torchrun"]
        assert container["args"][:3] == ["--nnodes=2", "--nproc-per-node=2", "--no-python"]
        assert container["args"][3:] == job_container["command"] + job_container["args"]
        # The same restricted pod as the Job's: security, volumes, resources, environment.
        for key in ("env", "resources", "securityContext", "volumeMounts", "image"):
            assert container[key] == job_container[key], key
        for key in ("securityContext", "volumes"):
            assert pod[key] == job_pod[key], key


def test_one_node_several_processes_is_a_master_alone() -> None:
    dm = docmodel(distributed={"nodes": 1, "processesPerNode": 4})
    obj = build_pytorchjob(dm, OWNER, "r1", STORE, "trainer:1")
    assert list(obj["spec"]["pytorchReplicaSpecs"]) == ["Master"]
    assert "suspend" not in obj["spec"]["runPolicy"]
    assert labels.QUEUE_NAME not in obj["metadata"]["labels"]


def test_trainjob_sets_the_trainer_and_overrides_on_the_torch_runtime() -> None:
    obj = build_trainjob(TWO_BY_TWO, OWNER, "r1", STORE, "trainer:1")
    assert (obj["apiVersion"], obj["kind"]) == ("trainer.kubeflow.org/v1alpha1", "TrainJob")
    spec = obj["spec"]
    assert spec["runtimeRef"]["name"] == "torch-distributed"
    assert spec["suspend"] is True
    trainer = spec["trainer"]
    assert (trainer["numNodes"], trainer["numProcPerNode"]) == (2, 2)
    assert trainer["command"] == ["torchrun"] and "docmodel-trainer" in trainer["args"]
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    (override,) = spec["podSpecOverrides"]
    assert override["targetJobs"] == [{"name": "node"}]
    mounts = override["containers"][0]["volumeMounts"]
    assert {m["name"] for m in mounts} == {v["name"] for v in override["volumes"]}


def test_queue_label_and_suspend_go_on_train_and_evaluate_jobs_only() -> None:
    dm = docmodel(queueName="gpu-team")
    for step, queued in (("ingest", False), ("train", True), ("evaluate", True)):
        obj = build_job(dm, OWNER, step, "r1", STORE, "trainer:1")
        assert (labels.QUEUE_NAME in obj["metadata"]["labels"]) is queued, step
        assert obj["spec"].get("suspend", False) is queued, step
        # Kueue reads the Job's label; the pods carry only the DocModel's own.
        assert labels.QUEUE_NAME not in obj["spec"]["template"]["metadata"]["labels"]
    plain = build_job(docmodel(), OWNER, "train", "r1", STORE, "trainer:1")
    assert "suspend" not in plain["spec"]


def test_engine_choice_prefers_pytorchjob_and_names_what_to_install() -> None:
    assert pick_engine(frozenset({"PyTorchJob", "TrainJob"})) is PYTORCHJOB
    assert pick_engine(frozenset({"TrainJob"})) is TRAINJOB
    assert pick_engine(frozenset()) is None
    message = no_engine_message(TWO_BY_TWO)
    assert "2 node(s) x 2 process(es)" in message
    assert "PyTorchJob, kubeflow.org/v1" in message and "TrainJob" in message


# -- the operator reads them -------------------------------------------------------------------


def engine_obj(name: str, conditions: list[dict[str, Any]], **meta: Any) -> dict[str, Any]:
    return {
        "kind": "PyTorchJob",
        "metadata": {"name": name, "creationTimestamp": "2026-12-01T00:00:00Z", **meta},
        "spec": {"runPolicy": {}},
        "status": {"conditions": conditions},
    }


def condition(type_: str, **extra: Any) -> dict[str, Any]:
    return {"type": type_, "status": "True", "lastTransitionTime": "2026-12-01T00:05:00Z", **extra}


def test_pytorchjob_conditions_are_the_steps_states() -> None:
    name = job_name(TWO_BY_TWO, "train", "r1")
    done = job_state(engine_obj(name, [condition("Running"), condition("Succeeded")]), [])
    assert done.phase == "Succeeded"
    master = {
        "metadata": {"name": f"{name}-master-0", "labels": {labels.TRAINING_JOB_NAME: name}},
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "state": {
                        "terminated": {
                            "exitCode": 1,
                            "finishedAt": "2026-12-01T00:04:00Z",
                            "message": "Traceback\nValueError: bad dataset",
                        }
                    }
                }
            ],
        },
    }
    failed = job_state(
        engine_obj(name, [condition("Failed", reason="PyTorchJobFailed", message="master failed")]),
        [master],
    )
    assert (failed.phase, failed.exit_code, failed.reason) == ("Failed", 1, "PyTorchJobFailed")
    assert failed.log_tail[-1] == "ValueError: bad dataset"
    waiting = job_state(engine_obj(name, [condition("Created")]), [])
    assert waiting.phase == "Pending" and not waiting.awaiting_pod  # no Events to read
    running = job_state(engine_obj(name, [condition("Running")]), [dict(master, status={})])
    assert running.phase == "Running"


def test_a_suspended_queued_job_is_queued_with_kueues_reason() -> None:
    dm = docmodel(queueName="gpu-team")
    obj = build_job(dm, OWNER, "train", "r1", STORE, "trainer:1")
    obj["metadata"]["creationTimestamp"] = "2026-12-01T00:00:00Z"
    workload = {
        "status": {
            "conditions": [
                {
                    "type": "QuotaReserved",
                    "status": "False",
                    "reason": "Pending",
                    "message": "couldn't assign flavors to pod set main: insufficient unused "
                    "quota for cpu in flavor default, 2 more needed",
                }
            ]
        }
    }
    state = queued_state(obj, [workload])
    assert state is not None and state.queued and state.phase == "Pending"
    assert state.message.startswith("waiting for quota in Kueue LocalQueue gpu-team: ")
    assert "insufficient unused quota for cpu" in state.message
    # Admitted (Kueue unsuspended it): an ordinary Job again.
    obj["spec"]["suspend"] = False
    assert queued_state(obj, [workload]) is None
    states, _ = step_jobs(dm, [obj], [], "r1", None)
    assert not states["train"].queued
    obj["spec"]["suspend"] = True
    states, _ = step_jobs(dm, [obj], [], "r1", None)
    assert states["train"].queued and states["train"].reason == "Queued"


# -- the planner says it -----------------------------------------------------------------------


def test_planner_shows_a_queued_step_at_once_and_looks_again() -> None:
    from docmodel.api import DocModelStatus

    dm = docmodel(queueName="gpu-team")
    queued = JobState(
        "Pending",
        reason="Queued",
        message="waiting for quota in Kueue LocalQueue gpu-team",
        since=T0,
        queued=True,
    )
    from docmodel.revision import RevisionArtifacts, resolve_source
    from docmodel.storage import ObjectInfo

    source = resolve_source(dm.spec, [ObjectInfo("guide.md", "e1", 100)])
    status = DocModelStatus(
        revision=source.revision,
        source_digest=source.digest,
        source_checked_at=T0,
        observed_generation=1,
    )
    result = plan(
        dm,
        1,
        status,
        Observed(
            now=T0,
            artifacts=RevisionArtifacts(dataset=True),
            jobs={"train": queued},
        ),
        "s3://artifacts/docmodel",
    )
    cond = get_condition(result.status.conditions, "Trained")
    assert cond is not None and (cond.status, cond.reason) == ("False", "Queued")
    assert "queued: waiting for quota in Kueue LocalQueue gpu-team" in cond.message
    assert not any(isinstance(a, StartStep) for a in result.actions)
    assert result.requeue_after is not None and result.requeue_after <= 30


def test_no_engine_is_a_refusal_that_names_what_to_install() -> None:
    refusal = Refusal("NoTrainingEngine", no_engine_message(TWO_BY_TWO), T0)
    assert "install Kubeflow's training operator" in refusal.message


def test_local_mode_runs_distributed_training_under_torchrun_on_this_machine() -> None:
    import sys

    from docmodel.builders import step_command
    from docmodel_local.executor import trainer_argv

    command = step_command(TWO_BY_TWO, "train", "r1", STORE, workdir="/w")
    assert trainer_argv(command) == [sys.executable, "-m", "docmodel_trainer.cli", *command.args]
    argv = trainer_argv(command, TWO_BY_TWO.spec.training.distributed.world_size)
    assert argv[:6] == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nnodes=1",
        "--nproc-per-node=4",
    ]
    assert argv[6:] == ["-m", "docmodel_trainer.cli", *command.args]
