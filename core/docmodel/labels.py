"""The labels and annotations DocModel writes on the objects it creates, and the selectors
that find them again: the one vocabulary the builders, the operator's observer, cache, watches
and API calls, and the CRD share.

Every child carries `app.kubernetes.io/{name,instance,component,managed-by}` (instance: the
DocModel's name); revision-bound children add `docmodel.dev/revision`, step Jobs and their
pods `docmodel.dev/step`.
"""

from __future__ import annotations

from collections.abc import Mapping

PREFIX = "docmodel.dev/"

NAME = "app.kubernetes.io/name"
INSTANCE = "app.kubernetes.io/instance"
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by"
PART_OF = "app.kubernetes.io/part-of"

REVISION = f"{PREFIX}revision"
STEP = f"{PREFIX}step"
SERVING_DIGEST = f"{PREFIX}serving-digest"  # annotation of a server Deployment

# Kueue's: the LocalQueue a Job or PyTorchJob waits in (spec.training.queueName).
QUEUE_NAME = "kueue.x-k8s.io/queue-name"
# Kubeflow's training operator labels the pods of a PyTorchJob with its name.
TRAINING_JOB_NAME = "training.kubeflow.org/job-name"

APP_NAME = "docmodel"
OPERATOR = "docmodel-operator"  # the value of MANAGED_BY on every child
SERVER = "server"  # the COMPONENT of the servers, their Service and policy


def child_labels(name: str, component: str, revision: str | None = None) -> dict[str, str]:
    """The labels of a child of DocModel `name` (and of its pods)."""
    out = {NAME: APP_NAME, INSTANCE: name, COMPONENT: component, MANAGED_BY: OPERATOR}
    if revision:
        out[REVISION] = revision
    return out


def own_pods(name: str) -> dict[str, str]:
    """The labels every pod the operator makes for DocModel `name` carries."""
    return {INSTANCE: name, MANAGED_BY: OPERATOR}


def server_pods(name: str, revision: str) -> dict[str, str]:
    """The labels that select the server pods of one revision (the Service's selector)."""
    return {INSTANCE: name, COMPONENT: SERVER, REVISION: revision}


def selector(labels: Mapping[str, str]) -> str:
    """A label selector string matching every label of `labels`."""
    return ",".join(f"{key}={value}" for key, value in labels.items())


def owned(labels: Mapping[str, str]) -> str | None:
    """The DocModel an object belongs to, read from its labels; None for anything else."""
    if labels.get(MANAGED_BY) != OPERATOR:
        return None
    return labels.get(INSTANCE) or None
