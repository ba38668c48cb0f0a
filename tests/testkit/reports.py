"""Evaluation reports for tests and benchmarks that play the evaluate step's part: every
question gets the same scores, so the gate's bound equals the aggregate difference."""

from __future__ import annotations

from datetime import datetime

from docmodel.report import DecodingSettings, EvalReport, QuestionResult, Scores, SystemName


def uniform_scores(value: float) -> Scores:
    return Scores(exact_match=value, token_f1=value, rouge_l=value)


def uniform_report(
    aggregate: dict[SystemName, Scores],
    *,
    questions: int,
    revision: str,
    base_model: str,
    adapter_uri: str,
    created_at: datetime | None = None,
) -> EvalReport:
    """A report of `questions` questions, each scored as `aggregate` (by candidate name)."""
    results = [
        QuestionResult(
            id=f"q{i}",
            question=f"Question {i}?",
            reference="r",
            source="guide.md",
            answers=dict.fromkeys(aggregate, "a"),
            scores=aggregate,
        )
        for i in range(questions)
    ]
    extra = {} if created_at is None else {"created_at": created_at}
    return EvalReport(
        revision=revision,
        base_model=base_model,
        adapter_uri=adapter_uri,
        retriever="BM25",
        top_k=4,
        decoding=DecodingSettings(max_new_tokens=8, engine="transformers"),
        questions=results,
        aggregate=aggregate,
        **extra,
    )
