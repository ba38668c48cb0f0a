"""`report.html`: the evaluation report for people, one self-contained file.

The verdict and its reason on top, with the metric it was decided on (the gate decides on the
interval of candidate minus baseline on that metric, not on the point scores), a bar chart of
every system's scores (inline SVG), a table of the scores with each system's mean answer length
in words (gold recall and length tell a win on substance from one on answer style), the
bootstrap intervals of the differences, what answering cost each system, the diagnostics
(the base model closed-book, retrieval recall, leakage), then every question with each
system's answer side by side. No scripts, no external assets; every string from the data is HTML-escaped.
"""

from __future__ import annotations

from html import escape

from docmodel.gate import Decision
from docmodel.report import METRICS, EvalReport, MetricName, QuestionResult, SystemName

COLORS: dict[str, str] = {
    "candidate": "#2f6fb3",
    "baseline": "#c9792c",
    "serving": "#5b9a55",
    "base": "#8a8a8a",
}
LABELS = {
    "exact_match": "Exact match",
    "token_f1": "Token F1",
    "rouge_l": "ROUGE-L",
    "gold_recall": "Gold recall",
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
.verdict{padding:.8rem 1rem;border-radius:6px;font-weight:600}
.Promoted{background:#e3f4e1;border:1px solid #5b9a55}.Rejected{background:#fbe7e5;border:1px solid #c0463b}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{border:1px solid #ddd;padding:.4rem .5rem;vertical-align:top;text-align:left}
th{background:#f5f5f5}.num{text-align:right;font-variant-numeric:tabular-nums}
.meta{color:#555;font-size:.9rem}.score{color:#555;font-size:.8rem;display:block;margin-top:.3rem}
"""


def systems_of(report: EvalReport) -> list[SystemName]:
    order: list[SystemName] = ["candidate", "baseline", "serving", "base"]
    return [s for s in order if s in report.aggregate]


def score_chart(report: EvalReport, width: int = 560, height: int = 240) -> str:
    """Grouped bars: one group per metric, one bar per system, on a 0-1 axis."""
    systems = systems_of(report)
    left, bottom, top = 40, 40, 20
    plot_w, plot_h = width - left - 10, height - bottom - top
    group_w = plot_w / len(METRICS)
    bar_w = group_w * 0.7 / max(len(systems), 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="Scores per metric and system">'
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - 10}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{tick:.2f}</text>'
        )
    for g, metric in enumerate(METRICS):
        x0 = left + g * group_w + group_w * 0.15
        for i, system in enumerate(systems):
            if getattr(report.aggregate[system], metric) is None:
                continue
            value = report.aggregate[system].get(metric)
            h = plot_h * value
            x, y = x0 + i * bar_w, top + plot_h - h
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                f'fill="{COLORS[system]}"><title>{system} {metric} {value:.3f}</title></rect>'
                f'<text x="{x + (bar_w - 2) / 2:.1f}" y="{y - 3:.1f}" font-size="10" '
                f'text-anchor="middle">{value:.2f}</text>'
            )
        parts.append(
            f'<text x="{left + g * group_w + group_w / 2:.1f}" y="{height - bottom + 18}" '
            f'font-size="12" text-anchor="middle">{LABELS[metric]}</text>'
        )
    for i, system in enumerate(systems):
        x = left + i * 110
        parts.append(
            f'<rect x="{x}" y="{height - 14}" width="10" height="10" fill="{COLORS[system]}"/>'
            f'<text x="{x + 14}" y="{height - 5}" font-size="11">{system}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def label(report: EvalReport, metric: MetricName) -> str:
    """A metric's name, marked when the verdict was decided on it."""
    return LABELS[metric] + (" (gate)" if metric == report.gate_metric else "")


def _num(value: float | None, form: str) -> str:
    return f'<td class="num">{"n/a" if value is None else format(value, form)}</td>'


def render(report: EvalReport, verdict: Decision) -> str:
    """The whole page: header and verdict, then scores, differences, costs, diagnostics and
    answers."""
    systems = systems_of(report)
    header = "".join(f"<th>{s}</th>" for s in systems)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>DocModel evaluation · revision {escape(report.revision)}</title>
<style>{STYLE}</style></head><body>
<h1>Evaluation of revision {escape(report.revision)}</h1>
<p class="meta">Base model <code>{escape(report.base_model)}</code> · adapter
<code>{escape(report.adapter_uri)}</code>{_serving_note(report)} · baseline {escape(report.retriever)} top-{report.top_k}
· greedy, max {report.decoding.max_new_tokens} new tokens ({escape(report.decoding.engine)}, adapters {escape(report.decoding.adapter_weights)})
· {len(report.questions)} questions · {report.created_at:%Y-%m-%d %H:%M} UTC</p>
<p class="verdict {verdict.name}">{verdict.name} ({escape(verdict.reason)}): {escape(verdict.message)}</p>
{_gate_note(report)}
<h2>Scores</h2>
{score_chart(report)}
<table><tr><th>system</th>{"".join(f"<th>{label(report, m)}</th>" for m in METRICS)}
<th>mean answer words</th></tr>{_score_rows(report, systems)}</table>
<p class="meta">Gold recall (the share of the reference's words in the answer) never gates; extra
words never lower it. Read with the answers' length: a token-F1 lead from shorter answers shows as
no gold-recall lead, a gold-recall lead from longer answers as more words.</p>
<h2>Differences (paired bootstrap, {report.confidence:.0%} interval, seed {report.bootstrap_seed})</h2>
<table><tr><th>comparison</th><th>metric</th><th>mean</th><th>interval</th></tr>{_difference_rows(report)}</table>
<h2>Cost and latency (same batch settings for every system)</h2>
<table><tr><th>system</th><th>mean prompt tokens</th><th>mean answer tokens</th>
<th>p50 ms</th><th>p99 ms</th><th>prompts trimmed</th></tr>{_cost_rows(report)}</table>
<h2>Diagnostics (never gating)</h2>
<ul>{_diagnostics(report)}</ul>
<h2>Answers</h2>
<table><tr><th>question</th><th>reference</th>{header}</tr>{_answer_rows(report, systems)}</table>
</body></html>
"""


def _serving_note(report: EvalReport) -> str:
    """The serving adapter, in the header line; "" when none was scored."""
    return (
        f" · serving adapter <code>{escape(report.serving_adapter_uri)}</code>"
        if report.serving_adapter_uri
        else ""
    )


def _gate_note(report: EvalReport) -> str:
    """The metric the verdict was decided on; "" for a report that names none."""
    return (
        f'<p class="meta">Decided on <strong>{LABELS[report.gate_metric]}</strong> '
        f"(<code>spec.evaluation.metric: {report.gate_metric}</code>).</p>"
        if report.gate_metric
        else ""
    )


def _score_rows(report: EvalReport, systems: list[SystemName]) -> str:
    """One row per system: every metric, then the mean answer words."""
    rows = []
    for s in systems:
        cells = "".join(_num(getattr(report.aggregate[s], m), ".4f") for m in METRICS)
        words = _num(report.mean_answer_words.get(s), ".1f")
        rows.append(f"<tr><th>{s}</th>{cells}{words}</tr>")
    return "".join(rows)


def _difference_rows(report: EvalReport) -> str:
    """One row per comparison and metric: the mean difference and its interval."""
    diffs = []
    for name, per_metric in report.differences.items():
        for metric, d in per_metric.items():
            diffs.append(
                f"<tr><td>{escape(name)}</td><td>{label(report, metric)}</td>"
                f'<td class="num">{d.mean:+.4f}</td>'
                f'<td class="num">[{d.ci_low:+.4f}, {d.ci_high:+.4f}]</td></tr>'
            )
    return "".join(diffs)


def _cost_rows(report: EvalReport) -> str:
    """One row per system: prompt and answer tokens, latency, trimmed prompts."""
    return "".join(
        f"<tr><th>{s}</th><td class='num'>{c.mean_prompt_tokens:.0f}</td>"
        f"<td class='num'>{c.mean_answer_tokens:.1f}</td>"
        f"<td class='num'>{c.latency_p50_s * 1000:.0f}</td>"
        f"<td class='num'>{c.latency_p99_s * 1000:.0f}</td>"
        f"<td class='num'>{c.prompts_trimmed}</td></tr>"
        for s, c in report.costs.items()
    )


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def _diagnostics(report: EvalReport) -> str:
    """The list items of the diagnostics: the base model closed-book, retrieval recall, the
    context, and the leakage checks when the dataset recorded them."""
    diag = report.diagnostics
    leak = report.leakage
    diagnostics = (
        f"<li>Base model closed-book (no adapter, no passages) scores "
        f"{report.aggregate['base'].token_f1:.4f} token F1: how far the questions can be "
        "guessed without the documents.</li>"
        if "base" in report.aggregate
        else ""
    ) + (
        f"<li>Retrieval recall@{report.top_k}: the baseline was given the passage the answer came "
        f"from for {_percent(diag.retrieval_recall_at_k)} of {diag.questions_with_passage} questions, and a "
        f"passage of the right document for {_percent(diag.retrieval_document_recall_at_k)}.</li>"
        f"<li>Context: prompts fitted to {diag.context_tokens or 'n/a'} tokens with room for the "
        "answer; trimmed prompts are counted per system below.</li>"
    )
    if leak:
        diagnostics += (
            f"<li>Leakage checks: {leak.get('eval_items_checked', 0)} held-out items checked, "
            f"{leak.get('eval_items_dropped_for_leakage', 0)} dropped "
            f"({escape(str(leak.get('dropped_by_check', {})))}); thresholds: "
            f"{leak.get('ngram_n')}-gram overlap over {leak.get('ngram_threshold')}, TF-IDF "
            f"cosine at or over {leak.get('similarity_threshold')}; largest similarity kept "
            f"{leak.get('kept_max_similarity', 0):.3f}.</li>"
        )
    return diagnostics


def _answer_note(q: QuestionResult, s: SystemName) -> str:
    """The scores under one system's answer to one question."""
    sc = q.scores[s]
    recall = "" if sc.gold_recall is None else f" · recall {sc.gold_recall:.2f}"
    words = f" · {q.answer_words[s]} words" if s in q.answer_words else ""
    return (
        f"F1 {sc.token_f1:.2f} · EM {sc.exact_match:.0f} · ROUGE-L {sc.rouge_l:.2f}{recall}{words}"
    )


def _answer_rows(report: EvalReport, systems: list[SystemName]) -> str:
    """One row per question: the question (its source and what was retrieved), the reference,
    then every system's answer."""
    questions = []
    for q in report.questions:
        answers = "".join(
            f'<td>{escape(q.answers.get(s, ""))}<span class="score">{_answer_note(q, s)}</span></td>'
            if s in q.scores
            else "<td></td>"
            for s in systems
        )
        retrieved = escape(", ".join(q.retrieved)) or "none"
        questions.append(
            f"<tr><td>{escape(q.question)}<span class='score'>{escape(q.source)}"
            f" · retrieved: {retrieved}</span></td><td>{escape(q.reference)}</td>{answers}</tr>"
        )
    return "".join(questions)
