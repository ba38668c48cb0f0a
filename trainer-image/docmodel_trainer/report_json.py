"""The evaluation report (`docmodel.report.EvalReport`) from the systems' answers, and the line
evaluate logs its verdict in. Pure: no I/O, no model."""

from __future__ import annotations

from docmodel.api import CandidateKind
from docmodel.dataset import Chunk, QAPair
from docmodel.gate import Decision
from docmodel.report import (
    DecodingSettings,
    Diagnostics,
    EvalReport,
    GateMetric,
    QuestionResult,
    Scores,
    SystemName,
)
from docmodel_trainer import answer_quality, generation


def build_report(
    *,
    revision: str,
    base_model: str,
    adapter_uri: str,
    serving_adapter_uri: str | None,
    retriever: str,
    top_k: int,
    decoding: DecodingSettings,
    kinds: dict[SystemName, CandidateKind] | None = None,
    pairs: list[QAPair],
    answers: dict[SystemName, list[str]],
    retrieved: list[list[Chunk]],
    gate_metric: GateMetric,
    resamples: int,
    seed: int,
    confidence: float = 0.95,
    stats: dict[SystemName, list[generation.AnswerStats]] | None = None,
    trimmed: dict[SystemName, int] | None = None,
) -> EvalReport:
    """Score every answer and assemble the report (pure: no I/O, no model); `gate_metric` is
    the metric the verdict is decided on (spec.evaluation.metric), recorded in the report."""
    stats = stats or {}
    per_system: dict[SystemName, list[Scores]] = {
        system: [answer_quality.score(a, p.answer) for a, p in zip(texts, pairs, strict=True)]
        for system, texts in answers.items()
    }
    questions = [
        QuestionResult(
            id=p.id,
            question=p.question,
            reference=p.answer,
            source=p.source,
            chunk_id=p.chunk_id,
            answers={s: answers[s][i] for s in answers},
            scores={s: per_system[s][i] for s in per_system},
            retrieved=[c.source for c in retrieved[i]],
            retrieved_chunks=[c.id for c in retrieved[i]],
            prompt_tokens={s: v[i].prompt_tokens for s, v in stats.items()},
            answer_tokens={s: v[i].answer_tokens for s, v in stats.items()},
            answer_words={s: answer_quality.answer_words(answers[s][i]) for s in answers},
            document_trained=p.document_trained,
        )
        for i, p in enumerate(pairs)
    ]
    differences = {
        f"candidate-{other}": answer_quality.compare(
            per_system["candidate"],
            per_system[other],
            resamples=resamples,
            seed=seed,
            confidence=confidence,
        )
        for other in ("baseline", "serving", "base")
        if other in per_system
    }
    return EvalReport(
        revision=revision,
        base_model=base_model,
        adapter_uri=adapter_uri,
        serving_adapter_uri=serving_adapter_uri,
        retriever=retriever,
        top_k=top_k,
        kinds=kinds or {},
        decoding=decoding,
        questions=questions,
        gate_metric=gate_metric,
        aggregate={s: answer_quality.aggregate(v) for s, v in per_system.items()},
        mean_answer_words={s: answer_quality.mean_answer_words(v) for s, v in answers.items()},
        differences=differences,
        bootstrap_seed=seed,
        confidence=confidence,
        costs={s: answer_quality.cost(v, (trimmed or {}).get(s, 0)) for s, v in stats.items() if v},
        diagnostics=Diagnostics(**answer_quality.retrieval_recall(pairs, retrieved)),
    )


def verdict_line(report: EvalReport, verdict: Decision, metric: GateMetric) -> str:
    """The verdict as evaluate logs it: the gate's metric per system and the interval of
    candidate - baseline on it, then gold recall and answer words (candidate/baseline), which
    tell a win on substance from one on answer style."""
    diff = report.differences.get("candidate-baseline", {}).get(metric)
    scores = " ".join(f"{s}={report.aggregate[s].get(metric):.4f}" for s in report.aggregate)
    recall = "/".join(
        "n/a" if (r := report.aggregate[s].gold_recall) is None else f"{r:.4f}"
        for s in ("candidate", "baseline")
    )
    words = "/".join(
        f"{report.mean_answer_words[s]:.1f}" if s in report.mean_answer_words else "n/a"
        for s in ("candidate", "baseline")
    )
    return (
        f"Evaluated revision={report.revision} questions={len(report.questions)} "
        f"gate_metric={metric} {scores} "
        f"difference={diff.mean if diff else 0.0:+.4f} "
        f"ci=[{diff.ci_low if diff else 0.0:+.4f},{diff.ci_high if diff else 0.0:+.4f}] "
        f"verdict={verdict.name} reason={verdict.reason} "
        f"gold_recall(candidate/baseline)={recall} answer_words(candidate/baseline)={words}"
    )
