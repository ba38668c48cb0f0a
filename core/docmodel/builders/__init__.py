"""Pure builders: child names, each step's command and environment, the Jobs, the server
Deployment, the Service, the NetworkPolicies and the servers' disruption budget.

The operator creates these objects; local mode runs the same commands as local processes
(`StepCommand.argv`) with the same environment (bar paths and Secret values, which a local
process takes from its own environment). Nothing here does I/O, so tests compare the objects
with expected ones.

Names are deterministic per DocModel, revision and step, so a replayed event or a restarted
operator finds the child it made before instead of making a second one:

    <name>-<revision>-ingest | -train | -eval-<settings>   Jobs
    <name>-<revision>                                       the revision's server Deployment
    <name>                                                  the Service app teams call
    <name>-server | <name>-steps                            NetworkPolicies
    <name>-<revision>                                       its PodDisruptionBudget (replicas > 1)

A DocModel's name has at most 40 characters and a revision 10, so every name fits the 63
characters of a label value.

One module per kind of child: `children` (names, ownership), `pods` (what every pod shares),
`steps` (commands and Jobs), `serving` (Deployment, Service, disruption budget) and `network`
(NetworkPolicies). Import from `docmodel.builders`: every public name is here.
"""

from docmodel.builders.children import (
    MAX_NAME,
    STEP_SUFFIX,
    STEPS,
    NameTooLong,
    Owner,
    Step,
    child_metadata,
    child_name,
    deployment_name,
    job_name,
    service_name,
    short_digest,
)
from docmodel.builders.distributed import (
    ENGINES,
    PYTORCHJOB,
    TRAINJOB,
    Engine,
    build_pytorchjob,
    build_training,
    build_trainjob,
    is_distributed,
    no_engine_message,
    pick_engine,
    torchrun,
)
from docmodel.builders.network import (
    STEP_COMPONENTS,
    build_server_policy,
    build_steps_policy,
    server_policy_name,
    steps_policy_name,
)
from docmodel.builders.pods import (
    EPHEMERAL_STORAGE,
    GPU_RESOURCE,
    INGEST_RESOURCES,
    JOB_WORKDIR,
    SERVER_FILES_GIB,
    SERVER_PROGRAM,
    SERVER_WORKDIR,
    STEP_FILES_GIB,
    TRAINER_PROGRAM,
    UNKNOWN_MODEL_STORAGE,
    EnvVar,
    PodDefaults,
    StoreConfig,
    container_resources,
    container_security_context,
    ephemeral_storage,
    manifest_json,
    model_parameters,
    pod_security_context,
    restricted_pod,
    secret_env,
    source_env,
)
from docmodel.builders.serving import (
    adapter_uri,
    build_deployment,
    build_disruption_budget,
    build_service,
    server_env,
    service_endpoint,
    serving_digest,
)
from docmodel.builders.steps import (
    Scheduling,
    StepCommand,
    build_job,
    pod_failure_policy,
    queue_labels,
    step_command,
    step_labels,
    step_pod,
    step_scheduling,
)

__all__ = [
    "ENGINES",
    "EPHEMERAL_STORAGE",
    "GPU_RESOURCE",
    "INGEST_RESOURCES",
    "JOB_WORKDIR",
    "MAX_NAME",
    "PYTORCHJOB",
    "SERVER_FILES_GIB",
    "SERVER_PROGRAM",
    "SERVER_WORKDIR",
    "STEPS",
    "STEP_COMPONENTS",
    "STEP_FILES_GIB",
    "STEP_SUFFIX",
    "TRAINER_PROGRAM",
    "TRAINJOB",
    "UNKNOWN_MODEL_STORAGE",
    "Engine",
    "EnvVar",
    "NameTooLong",
    "Owner",
    "PodDefaults",
    "Scheduling",
    "Step",
    "StepCommand",
    "StoreConfig",
    "adapter_uri",
    "build_deployment",
    "build_disruption_budget",
    "build_job",
    "build_pytorchjob",
    "build_server_policy",
    "build_service",
    "build_steps_policy",
    "build_training",
    "build_trainjob",
    "child_metadata",
    "child_name",
    "container_resources",
    "container_security_context",
    "deployment_name",
    "ephemeral_storage",
    "is_distributed",
    "job_name",
    "manifest_json",
    "model_parameters",
    "no_engine_message",
    "pick_engine",
    "pod_failure_policy",
    "pod_security_context",
    "queue_labels",
    "restricted_pod",
    "secret_env",
    "server_env",
    "server_policy_name",
    "service_endpoint",
    "service_name",
    "serving_digest",
    "short_digest",
    "source_env",
    "step_command",
    "step_labels",
    "step_pod",
    "step_scheduling",
    "steps_policy_name",
    "torchrun",
]
