"""Building the evaluation report (pure) and rendering it as self-contained HTML."""

from __future__ import annotations

import re
from typing import get_args

import pytest

from docmodel.api import EvaluationSpec
from docmodel.dataset import Chunk, QAPair
from docmodel.gate import decide_report
from docmodel.report import GATE_METRICS, METRICS, DecodingSettings, EvalReport, GateMetric
from docmodel_trainer.report_html import render, score_chart
from docmodel_trainer.report_json import build_report, verdict_line

CHUNK = Chunk(id="c1", source="ops.md", text="The port is 8101.")
PAIRS = [
    QAPair(
        id="q1",
        question="Which port?",
        answer="Port 8101.",
        source="ops.md",
        chunk_id="c1",
        generator="provided",
    ),
    QAPair(
        id="q2",
        question="How long <kept>?",
        answer="Seven years.",
        source="data.md",
        generator="provided",
    ),
]


def make_report(with_serving: bool = True, gate_metric: GateMetric = "token_f1") -> EvalReport:
    answers = {
        "candidate": ["port 8101", "seven years"],
        "baseline": ["8101", "<script>alert(1)</script>"],
    }
    if with_serving:
        answers["serving"] = ["port 8101", "ten years"]
    return build_report(
        revision="abc123",
        base_model="tiny",
        adapter_uri="s3://bucket/adapter",
        serving_adapter_uri="s3://bucket/old" if with_serving else None,
        retriever="BM25",
        top_k=4,
        decoding=DecodingSettings(max_new_tokens=32, engine="transformers", batch_size=8),
        pairs=PAIRS,
        answers=answers,
        retrieved=[[CHUNK], []],
        gate_metric=gate_metric,
        resamples=200,
        seed=0,
    )


def test_build_report_scores_every_system() -> None:
    report = make_report()
    EvalReport.model_validate_json(report.model_dump_json())  # round-trips the schema
    assert set(report.aggregate) == {"candidate", "baseline", "serving"}
    assert report.aggregate["candidate"].exact_match == 1.0
    assert report.aggregate["baseline"].token_f1 == pytest.approx((2 / 3 + 0) / 2)
    assert report.aggregate["serving"].exact_match == 0.5
    assert set(report.differences) == {"candidate-baseline", "candidate-serving"}
    diff = report.differences["candidate-baseline"]["exact_match"]
    assert diff.mean == 1.0 and diff.ci_low <= diff.mean <= diff.ci_high
    q1 = report.questions[0]
    assert q1.answers["baseline"] == "8101" and q1.retrieved == ["ops.md"]
    assert q1.retrieved_chunks == ["c1"] and q1.chunk_id == "c1"
    # Recall counts questions with a known passage: q1 only, and its passage was retrieved.
    assert report.diagnostics.retrieval_recall_at_k == 1.0
    assert report.diagnostics.questions_with_passage == 1
    assert report.diagnostics.retrieval_document_recall_at_k == 0.5


def test_report_gives_gold_recall_and_answer_words_per_system() -> None:
    report = make_report()
    # References "port 8101", "seven years". Baseline: "8101" recalls half of the first, and
    # "<script>alert(1)</script>" normalises to one word that recalls nothing.
    recall = {s: v.gold_recall for s, v in report.aggregate.items()}
    assert recall == pytest.approx({"candidate": 1.0, "baseline": 0.25, "serving": 0.75})
    assert report.mean_answer_words == pytest.approx(
        {"candidate": 2.0, "baseline": 1.0, "serving": 2.0}
    )
    q1 = report.questions[0]
    assert q1.answer_words == {"candidate": 2, "baseline": 1, "serving": 2}
    assert q1.scores["baseline"].gold_recall == 0.5
    assert set(report.differences["candidate-baseline"]) == set(METRICS)
    diff = report.differences["candidate-baseline"]["gold_recall"]
    assert diff.mean == pytest.approx(0.75) and diff.ci_low <= diff.mean <= diff.ci_high
    # One system's aggregate, as a reader of report.json sees it.
    wire = report.model_dump(mode="json")
    assert wire["aggregate"]["baseline"] == pytest.approx(
        {"exact_match": 0.0, "token_f1": 1 / 3, "rouge_l": 1 / 3, "gold_recall": 0.25}
    )
    assert wire["mean_answer_words"]["baseline"] == 1.0


def test_report_names_the_gate_metric() -> None:
    report = make_report(gate_metric="rouge_l")
    assert report.gate_metric == "rouge_l"
    assert EvalReport.model_validate_json(report.model_dump_json()).gate_metric == "rouge_l"
    policy = EvaluationSpec(metric="rouge_l", min_improvement=0.02, min_questions=1)
    verdict = decide_report(report, policy)
    line = verdict_line(report, verdict, policy.metric)
    assert "gate_metric=rouge_l" in line and f"verdict={verdict.name}" in line
    assert "candidate=1.0000 baseline=0.3333 serving=0.7500" in line
    assert "gold_recall(candidate/baseline)=1.0000/0.2500" in line
    assert "answer_words(candidate/baseline)=2.0/1.0" in line
    html = render(report, verdict)
    assert "Decided on <strong>ROUGE-L</strong>" in html
    assert "<th>ROUGE-L (gate)</th>" in html and "<th>Token F1</th>" in html
    assert "<th>Gold recall</th>" in html and "<th>mean answer words</th>" in html


def test_gate_metrics_are_the_specs_choices() -> None:
    """Gold recall is reported, never selectable for gating: the spec's enum is unchanged."""
    spec_metric = EvaluationSpec.model_fields["metric"].annotation
    assert get_args(GateMetric) == GATE_METRICS == get_args(spec_metric)
    assert "gold_recall" in METRICS and "gold_recall" not in GATE_METRICS


def test_report_before_gold_recall_parses_with_defaults() -> None:
    """A report written before gold recall, answer words and the gate metric still reads."""
    wire = make_report().model_dump(mode="json")
    del wire["gate_metric"], wire["mean_answer_words"]
    for scores in [*wire["aggregate"].values()] + [
        s for q in wire["questions"] for s in q["scores"].values()
    ]:
        del scores["gold_recall"]
    for q in wire["questions"]:
        del q["answer_words"]
    wire["differences"] = {
        k: {m: d for m, d in v.items() if m != "gold_recall"}
        for k, v in wire["differences"].items()
    }
    old = EvalReport.model_validate(wire)
    assert old.gate_metric is None and old.mean_answer_words == {}
    assert old.aggregate["candidate"].gold_recall is None
    policy = EvaluationSpec(metric="token_f1", min_improvement=0.02)
    verdict = decide_report(old, policy)
    html = render(old, verdict)
    assert "Decided on" not in html and "n/a" in html
    assert "answer_words(candidate/baseline)=n/a/n/a" in verdict_line(old, verdict, "token_f1")


def test_without_serving_there_is_one_comparison() -> None:
    report = make_report(with_serving=False)
    assert set(report.aggregate) == {"candidate", "baseline"}
    assert list(report.differences) == ["candidate-baseline"]


def test_html_is_self_contained_escaped_and_shows_the_verdict() -> None:
    report = make_report()
    verdict = decide_report(report, EvaluationSpec(metric="token_f1", min_improvement=0.02))
    html = render(report, verdict)
    assert html.startswith("<!DOCTYPE html>")
    assert "<svg" in html and "<script" not in html and "&lt;script&gt;" in html
    assert "How long &lt;kept&gt;?" in html
    assert f'class="verdict {verdict.name}"' in html and verdict.reason in html
    assert not re.search(r'(src|href)="(https?:)?//', html)  # no external assets
    for system in ("candidate", "baseline", "serving"):
        assert f"<th>{system}</th>" in html
    assert "Retrieval recall@4" in html and "Diagnostics (never gating)" in html


def test_chart_has_a_bar_per_metric_and_system() -> None:
    svg = score_chart(make_report())
    assert svg.count("<rect") == 4 * 3 + 3  # bars + legend swatches
    assert "Gold recall" in svg
