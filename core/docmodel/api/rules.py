"""Cross-field rules: each a CEL expression for the API server (`x-kubernetes-validations`) and
its Python twin for local mode and the jobs; and the validators CEL cannot express."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from docmodel.api.base import MIN_POLL_SECONDS, ApiModel, duration_seconds
from docmodel.api.evaluation import EvaluationSpec
from docmodel.api.inputs import ChunkingSpec, DatasetSpec
from docmodel.api.pod import Toleration
from docmodel.api.serving import NetworkPeer
from docmodel.api.spec import DocModelSpec, RetrainingSpec
from docmodel.api.training import TrainingSpec


@dataclass(frozen=True)
class Rule:
    """A rule that spans fields: one CEL expression and its Python twin.

    The API server also checks every `default: {}` against the rules of its object, before
    any field inside is defaulted, so each CEL rule is guarded with `has()` for the fields it
    reads: an absent field takes its default, which satisfies the rule.
    """

    on: type[ApiModel]  # the model whose schema carries the rule
    cel: str
    field_path: str  # relative to `on`, as the API server reports it (".teacher")
    message: str
    check: Callable[[Any], bool]


# Room in a prompt beside the passages, in tokens (the same approximate tokens as
# `chunking.maxTokens`): the chat template's headers and a system line, and a question.
CHAT_TEMPLATE_TOKENS = 64


QUESTION_TOKENS = 64


def _cel_or_default(path: str) -> str:
    """`self.<path>` in CEL, or the field's default where any part of the path is absent."""
    parts = path.split(".")
    model: type[BaseModel] = DocModelSpec
    default: Any = None
    for part in parts:
        name = next(n for n, f in model.model_fields.items() if (f.alias or n) == part)
        info = model.model_fields[name]
        default = info.get_default(call_default_factory=True)
        if isinstance(default, BaseModel):
            model = type(default)
    guards = " && ".join(f"has(self.{'.'.join(parts[: i + 1])})" for i in range(len(parts)))
    return f"({guards} ? self.{path} : {default})"


def _prompt_fits(spec: DocModelSpec) -> bool:
    passages = spec.evaluation.baseline.top_k * spec.dataset.chunking.max_tokens
    room = CHAT_TEMPLATE_TOKENS + QUESTION_TOKENS + spec.evaluation.max_new_tokens
    return passages + room <= spec.serving.max_model_len


RULES: list[Rule] = [
    Rule(
        on=DatasetSpec,
        cel="!has(self.generator) || self.generator != 'teacher' || has(self.teacher)",
        field_path=".teacher",
        message="teacher is required when generator is teacher",
        check=lambda d: d.generator != "teacher" or d.teacher is not None,
    ),
    Rule(
        on=ChunkingSpec,
        cel="!has(self.overlapTokens) || !has(self.maxTokens) || self.overlapTokens < self.maxTokens",
        field_path=".overlapTokens",
        message="overlapTokens must be smaller than maxTokens",
        check=lambda c: c.overlap_tokens < c.max_tokens,
    ),
    Rule(
        on=TrainingSpec,
        cel=(
            "!has(self.method) || self.method != 'qlora' || !has(self.resources) "
            "|| !has(self.resources.gpu) || self.resources.gpu >= 1"
        ),
        field_path=".resources.gpu",
        message="method qlora needs at least one GPU (resources.gpu >= 1); use method lora "
        "to train without a GPU",
        check=lambda t: t.method != "qlora" or t.resources.gpu >= 1,
    ),
    Rule(
        on=RetrainingSpec,
        cel=f"!has(self.pollInterval) || duration(self.pollInterval) >= duration('{MIN_POLL_SECONDS}s')",
        field_path=".pollInterval",
        message=f"pollInterval must be at least {MIN_POLL_SECONDS}s (each poll lists the whole "
        "source)",
        check=lambda r: duration_seconds(r.poll_interval) >= MIN_POLL_SECONDS,
    ),
    Rule(
        on=DocModelSpec,
        cel=(
            f"{_cel_or_default('evaluation.baseline.topK')} "
            f"* {_cel_or_default('dataset.chunking.maxTokens')} "
            f"+ {CHAT_TEMPLATE_TOKENS + QUESTION_TOKENS} "
            f"+ {_cel_or_default('evaluation.maxNewTokens')} "
            f"<= {_cel_or_default('serving.maxModelLen')}"
        ),
        field_path=".serving.maxModelLen",
        message="the baseline's prompt does not fit serving.maxModelLen: evaluation.baseline.topK "
        "x dataset.chunking.maxTokens + "
        f"{CHAT_TEMPLATE_TOKENS + QUESTION_TOKENS} (chat template and question) + "
        "evaluation.maxNewTokens must be at most serving.maxModelLen; raise maxModelLen or "
        "lower topK or chunking.maxTokens",
        check=_prompt_fits,
    ),
    Rule(
        on=EvaluationSpec,
        cel="!has(self.minQuestions) || self.minQuestions <= "
        f"(has(self.maxQuestions) ? self.maxQuestions : {EvaluationSpec.model_fields['max_questions'].default})",
        field_path=".minQuestions",
        message="minQuestions must be at most maxQuestions (minQuestions defaults to 30): "
        "lower minQuestions or raise maxQuestions",
        check=lambda e: e.min_questions <= e.max_questions,
    ),
    Rule(
        on=DocModelSpec,
        cel=(
            f"{_cel_or_default('dataset.chunking.maxTokens')} + {CHAT_TEMPLATE_TOKENS} "
            f"<= {_cel_or_default('training.maxSeqLength')}"
        ),
        field_path=".training.maxSeqLength",
        message="a passage does not fit training.maxSeqLength: dataset.chunking.maxTokens + "
        f"{CHAT_TEMPLATE_TOKENS} (title and headings in front of it) must be at most "
        "training.maxSeqLength; raise maxSeqLength or lower chunking.maxTokens",
        check=lambda s: (
            s.dataset.chunking.max_tokens + CHAT_TEMPLATE_TOKENS <= s.training.max_seq_length
        ),
    ),
    Rule(
        on=NetworkPeer,
        cel="has(self.namespaceSelector) || has(self.podSelector)",
        field_path=".podSelector",
        message="a peer needs namespaceSelector, podSelector or both",
        check=lambda p: p.namespace_selector is not None or p.pod_selector is not None,
    ),
    Rule(
        on=Toleration,
        cel="!has(self.operator) || self.operator != 'Exists' || !has(self.value)",
        field_path=".value",
        message="value must be empty when operator is Exists",
        check=lambda t: t.operator != "Exists" or t.value is None,
    ),
]


# Python validators that have no CEL twin, because CEL cannot express them; for each, what it
# checks. The operator parses every spec with these models and refuses one that fails with
# `Ready=False`, reason `InvalidSpec`, naming the field, before any Job starts. A test finds
# every validator on the models and fails when one is neither here nor a `Rule`.
PYTHON_ONLY: dict[tuple[str, str], str] = {
    ("RetrainingSpec", "_valid_cron"): "cron values (croniter) beyond each field's range, "
    "which the schema's pattern checks",
}


def _rules_for(model: type[ApiModel]) -> list[Rule]:
    return [rule for rule in RULES if rule.on is model]
