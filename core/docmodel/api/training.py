"""How the adapter is trained (`spec.training`): LoRA shape, candidate kind, schedule."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from docmodel.api.base import DEFAULT_TARGET_MODULES, DNS_SUBDOMAIN_PATTERN, ApiModel
from docmodel.api.pod import (
    ImageRef,
    LabelKey,
    LabelValue,
    ResourcesSpec,
    Toleration,
    node_selector_field,
)


class LoraSpec(ApiModel):
    """LoRA adapter shape."""

    r: int = Field(default=16, ge=1, le=256, description="Rank of the LoRA update matrices.")
    alpha: int = Field(default=32, ge=1, le=1024, description="LoRA scaling numerator (alpha/r).")
    dropout: float = Field(default=0.05, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        min_length=1,
        max_length=32,
        description="Names of the linear layers that get adapters.",
    )


CandidateKind = Literal["ClosedBook", "Retrieval"]


class CandidateSpec(ApiModel):
    """What kind of model is trained, evaluated and served."""

    kind: CandidateKind = Field(
        default="ClosedBook",
        description="`ClosedBook`: the adapter answers from its weights alone (the question "
        "is its whole prompt). `Retrieval`: the adapter answers with the same retrieved "
        "passages as the baseline (same retriever and evaluation.baseline.topK), is trained on "
        "retrieval examples (RAFT: the retriever's own top-k, the gold passage present with "
        "goldPassageProbability) mixed with the closed-book data, and is served with retrieval "
        "in front of it. A Retrieval candidate keeps max(2, 10%) of the documents out of "
        "training (they stay in the index) and is rejected when it reads them worse than the "
        "baseline.",
    )
    gold_passage_probability: float = Field(
        default=0.8,
        ge=0.0,
        le=1.0,
        description="Retrieval: the share of retrieval training examples whose passages include "
        "the one the answer comes from; the rest hold distractors only, so the model learns "
        "to answer from its weights when retrieval misses.",
    )


DistributedStrategy = Literal["DDP", "FSDP"]


class DistributedSpec(ApiModel):
    """Training spread over several processes (GPUs) and nodes by the cluster's training engine
    (Kubeflow's PyTorchJob or TrainJob); one process, the default, is a plain Job."""

    nodes: int = Field(default=1, ge=1, le=64, description="Pods (nodes) that train together.")
    processes_per_node: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Training processes per pod, one per GPU: set it to the GPUs each pod "
        "asks for (training.resources).",
    )
    strategy: DistributedStrategy = Field(
        default="DDP",
        description="`DDP`: every process holds the whole (4-bit) base model and trains the "
        "same adapter on its share of each batch. `FSDP`: the base model's weights are sharded "
        "over the processes (QLoRA with the 4-bit storage type matching the compute type, "
        "loaded once on CPU RAM), for bases that do not fit one GPU.",
    )

    @property
    def world_size(self) -> int:
        """Every training process of the run."""
        return self.nodes * self.processes_per_node


class TrainingSpec(ApiModel):
    """How the adapter is trained."""

    method: Literal["qlora", "lora"] = Field(
        default="qlora",
        description="`qlora`: 4-bit NF4 base weights with bf16 LoRA adapters (needs a GPU); "
        "`lora`: full-precision base weights.",
    )
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA adapter shape.")
    candidate: CandidateSpec = Field(
        default_factory=CandidateSpec,
        description="Closed-book or with retrieval: how the adapter is trained, judged and served.",
    )
    epochs: int = Field(
        default=3,
        ge=1,
        le=100,
        description="Passes over the mixed training set: training questions with the "
        "documents' passages (and rewrites).",
    )
    qa_first_epochs: int = Field(
        default=1,
        ge=0,
        le=100,
        description="Passes over the training questions alone before the mixed passes "
        "(questions first, then questions mixed with documents); 0 starts mixed.",
    )
    train_on_documents: bool = Field(
        default=True,
        description="Train on every passage of every document as plain text (loss on every "
        "token), so the model learns the documents and not only the training questions.",
    )
    learning_rate: float = Field(
        default=2e-4, gt=0.0, le=1.0, description="Peak learning rate (cosine schedule)."
    )
    max_seq_length: int = Field(
        default=2048, ge=128, le=131072, description="Longest training sequence in tokens."
    )
    packing: bool = Field(
        default=True,
        description="Pack several examples into one sequence (without attention across "
        "examples) so that padding is not trained on.",
    )
    batch_size: int = Field(
        default=2, ge=1, le=512, description="Sequences per device per optimizer micro-step."
    )
    gradient_accumulation_steps: int = Field(
        default=8, ge=1, le=1024, description="Micro-steps accumulated per optimizer step."
    )
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec, description="Compute resources of the training Job."
    )
    node_selector: dict[LabelKey, LabelValue] = node_selector_field(
        "Node labels the training pod must match."
    )
    tolerations: list[Toleration] = Field(
        default_factory=list, max_length=32, description="Tolerations of the training pod."
    )
    priority_class_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="PriorityClass of the training pod.",
    )
    backoff_limit: int = Field(
        default=2, ge=0, le=10, description="Retries of a failed training pod before the Job fails."
    )
    active_deadline_seconds: int = Field(
        default=86400, ge=60, le=7 * 86400, description="Wall-clock limit of the training Job."
    )
    image: ImageRef | None = Field(default=None, description="Trainer image override.")
    distributed: DistributedSpec = Field(
        default_factory=DistributedSpec,
        description="Training over several processes and nodes. More than one process makes "
        "the operator create the cluster's training engine's resource (a Kubeflow PyTorchJob, "
        "or a TrainJob) instead of a Job; local mode runs torchrun.",
    )
    queue_name: str | None = Field(
        default=None,
        pattern=DNS_SUBDOMAIN_PATTERN,
        max_length=253,
        description="Kueue LocalQueue (in the DocModel's namespace) that the training and "
        "evaluation workloads wait in for their quota: they are created suspended with the "
        "label kueue.x-k8s.io/queue-name and run once Kueue admits them.",
    )
