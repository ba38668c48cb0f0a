"""Building the evaluation report (pure) and rendering it as self-contained HTML."""

from __future__ import annotations

import re

import pytest

from docmodel.api import EvaluationSpec
from docmodel.dataset import Chunk, QAPair
from docmodel.gate import decide_report
from docmodel.report import DecodingSettings, EvalReport
from docmodel_trainer.evaluate import build_report
from docmodel_trainer.report_html import render, score_chart

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


def make_report(with_serving: bool = True) -> EvalReport:
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
        retriever="bm25",
        top_k=4,
        decoding=DecodingSettings(max_new_tokens=32, engine="transformers", batch_size=8),
        pairs=PAIRS,
        answers=answers,
        retrieved=[[CHUNK], []],
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
    assert svg.count("<rect") == 3 * 3 + 3  # bars + legend swatches
