"""The evaluation protocol on the demo corpus, side by side in one run.

    .venv/bin/python bench/eval_protocol.py [--out bench/results/eval_protocol.json]
        [--base-model NAME_OR_PATH] [--epochs N] [--teacher-endpoint URL --teacher-model NAME]

One dataset (the demo's DocModel and documents, `examples/local`, ingested once: the same
held-out questions for every row), then one candidate per training mix, each trained with the
demo's settings and evaluated by `docmodel-trainer evaluate` against the RAG baseline and the
base model closed-book on those questions:

  qa_only        the training questions alone (`--no-documents`): what fine-tuning on
                 question/answer pairs teaches about questions it never saw
  qa_documents   the training questions first, then the questions mixed with every passage
                 as plain text (the default protocol)
  qa_documents_rewrites   as above plus the teacher's rewrites of each passage; run only with
                 a teacher endpoint (`--teacher-endpoint`), since rewrites come from a model
  retrieval      a retrieval candidate (`training.candidate.kind: Retrieval`): RAFT examples
                 from the baseline retriever's top-k mixed with the closed-book data, judged
                 with the retrieved passages in its prompt, like the baseline

The dataset is ingested as a retrieval candidate's, so every row answers the same questions,
including those about the documents a retrieval candidate keeps out of training (no row trains
on those documents); each row also gives the scores on that subset.

The gate's baseline retrieves with the spec's retriever (the default, Hybrid). The result also
gives recall@1/3/5 of the gold passage per retriever on the held-out questions (BM25, Dense,
Hybrid: the report's `recall_by_retriever`), and the retrieval row evaluated again with the
baseline (and the candidate, which reads the baseline's passages) on each other retriever:
`by_retriever`, the baseline's score with each.

Each row gives every system's scores (gold recall among them) and mean answer length in
normalised words, the intervals of candidate - baseline on the gating metric and on gold
recall (a token-F1 win from shorter answers shows as no gold-recall win), the verdict the gate
gives it, `documents_trained_fraction` and `eval_questions_seen_in_training` (counted from the
batches the trainer actually built), and the dataset's `eval_items_dropped_for_leakage`.
The base model defaults to the demo's (SmolLM2-135M-Instruct from the demo-model extra).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from docmodel.api import parse_spec
from docmodel.gate import decide_report
from docmodel.report import EvalReport

from benchlib import cpu_model, write_result

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "local"
WORK = Path("/tmp/docmodel-bench/eval-protocol")


def trainer(*args: str) -> None:
    cmd = [sys.executable, "-m", "docmodel_trainer.cli", *args]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(args[:1])}")
    print(f"  {args[0]}: {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/eval_protocol.json")
    parser.add_argument("--base-model", help="model id or directory (default: the demo's)")
    parser.add_argument("--epochs", type=int, help="mixed passes (default: the demo's)")
    parser.add_argument("--teacher-endpoint")
    parser.add_argument("--teacher-model")
    args = parser.parse_args()

    manifest = yaml.safe_load((DEMO / "docmodel.yaml").read_text())
    base = args.base_model or manifest["spec"]["baseModel"]["name"]
    manifest["spec"]["baseModel"] = {"name": str(base)}
    print("base model", file=sys.stderr)
    trainer("base-model", str(base))  # converted once into the model cache, timed apart
    if args.epochs:
        manifest["spec"]["training"]["epochs"] = args.epochs
    variants: dict[str, tuple[str, ...]] = {
        "qa_only": ("--no-documents",),
        "qa_documents": (),
        "retrieval": (),
    }
    if args.teacher_endpoint:
        manifest["spec"]["dataset"] = {
            **manifest["spec"]["dataset"],
            "generator": "teacher",
            "teacher": {
                "endpoint": args.teacher_endpoint,
                "model": args.teacher_model or "teacher",
            },
        }
        variants = {"qa_only": ("--no-documents",), "qa_documents_rewrites": (), "retrieval": ()}
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    store = WORK / "store"
    docmodels = {}
    for kind in ("ClosedBook", "Retrieval"):
        manifest["spec"]["training"]["candidate"] = {"kind": kind}
        # Closed-book candidates learn the documents from their text (the protocol's default);
        # the demo's retrieval candidate reads them in its prompt instead.
        manifest["spec"]["training"]["trainOnDocuments"] = kind == "ClosedBook"
        docmodels[kind] = WORK / f"docmodel-{kind.lower()}.yaml"
        docmodels[kind].write_text(yaml.safe_dump(manifest))
    spec = parse_spec(manifest["spec"])
    # Ingested as a retrieval candidate's dataset: the same questions for every row.
    job = ["--docmodel", str(docmodels["Retrieval"]), "--store", str(store)]
    print("ingest (once, shared by every row)", file=sys.stderr)
    trainer(
        "ingest",
        *job,
        "--source-dir",
        str(DEMO / "docs"),
        "--revision-file",
        str(WORK / "rev"),
        "--workdir",
        str(WORK / "w-ingest"),
    )
    revision = (WORK / "rev").read_text().strip()
    rev_dir = store / manifest["metadata"]["namespace"] / manifest["metadata"]["name"]
    rev_dir = rev_dir / f"rev-{revision}"
    dataset = json.loads((rev_dir / "dataset" / "manifest.json").read_text())

    rows: dict[str, Any] = {}
    for name, flags in variants.items():
        print(f"{name}", file=sys.stderr)
        started = time.monotonic()
        kind = "Retrieval" if name == "retrieval" else "ClosedBook"
        row_job = ["--docmodel", str(docmodels[kind]), "--store", str(store)]
        trainer(
            "train",
            *row_job,
            "--revision",
            revision,
            "--workdir",
            str(WORK / f"w-{name}"),
            "--force",
            *flags,
        )
        train_s = time.monotonic() - started
        shutil.rmtree(rev_dir / "eval", ignore_errors=True)
        trainer("evaluate", *row_job, "--revision", revision, "--workdir", str(WORK / f"e-{name}"))
        report = EvalReport.model_validate_json((rev_dir / "eval" / "report.json").read_text())
        adapter = json.loads((rev_dir / "adapter" / "manifest.json").read_text())
        seen = adapter["details"]["seen"]
        verdict = decide_report(report, spec.evaluation)
        metric = spec.evaluation.metric
        diff = report.differences["candidate-baseline"][metric]
        recall = report.differences["candidate-baseline"]["gold_recall"]
        rows[name] = {
            "scores": {s: v.model_dump() for s, v in report.aggregate.items()},
            "interval_candidate_minus_baseline": {
                "metric": metric,
                "mean": diff.mean,
                "low": diff.ci_low,
                "high": diff.ci_high,
                "confidence": diff.confidence,
            },
            "interval_candidate_minus_baseline_gold_recall": {
                "mean": recall.mean,
                "low": recall.ci_low,
                "high": recall.ci_high,
                "confidence": recall.confidence,
            },
            "mean_answer_words": report.mean_answer_words,
            "verdict": verdict.name,
            "verdict_reason": verdict.reason,
            "verdict_message": verdict.message,
            "documents_trained_fraction": seen["documents_trained_fraction"],
            "eval_questions_seen_in_training": seen["eval_questions_seen_in_training"],
            "eval_questions_in_document_text": seen["eval_questions_in_document_text"],
            "passages_trained": seen["passages_trained"],
            "passages_total": seen["passages_total"],
            "mix": adapter["details"]["mix"]["phases"],
            "train_steps": adapter["metrics"]["steps"],
            "final_loss": adapter["metrics"]["final_loss"],
            "train_s": round(train_s, 1),
            "costs": {s: c.model_dump() for s, c in report.costs.items()},
            "retrieval_recall_at_k": report.diagnostics.retrieval_recall_at_k,
            "kind": report.kinds.get("candidate"),
            "untrained_documents": _subset(report, metric),
        }
    # The retrieval row again with each other retriever (its adapter is the last trained).
    by_retriever: dict[str, Any] = {}
    gate_retriever = spec.evaluation.baseline.retriever
    for retriever in ("BM25", "Dense", "Hybrid"):
        if retriever == gate_retriever:
            scored = report
        else:
            print(f"retrieval row, baseline with {retriever}", file=sys.stderr)
            shutil.rmtree(rev_dir / "eval", ignore_errors=True)
            trainer(
                "evaluate",
                *row_job,
                "--revision",
                revision,
                "--retriever",
                retriever,
                "--workdir",
                str(WORK / f"e-retriever-{retriever.lower()}"),
            )
            scored = EvalReport.model_validate_json((rev_dir / "eval" / "report.json").read_text())
        by_retriever[retriever] = {
            "baseline": scored.aggregate["baseline"].model_dump(),
            "candidate": scored.aggregate["candidate"].model_dump(),
            "retrieval_recall_at_k": scored.diagnostics.retrieval_recall_at_k,
            "verdict": decide_report(
                scored,
                spec.evaluation.model_copy(
                    update={
                        "baseline": spec.evaluation.baseline.model_copy(
                            update={"retriever": retriever}
                        )
                    }
                ),
            ).message,
        }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {len(__import__('os').sched_getaffinity(0))} cores, CPU only",
        "base_model": str(base),
        "corpus": "examples/local/docs",
        "generator": spec.dataset.generator,
        "metric": spec.evaluation.metric,
        "eval_questions": len(report.questions),
        "eval_grouping": dataset["details"]["eval_grouping"],
        "eval_items_dropped_for_leakage": dataset["details"]["eval_items_dropped_for_leakage"],
        "leakage": {k: v for k, v in dataset["details"]["leakage"].items() if k != "dropped"},
        "rewrites": (
            "run"
            if args.teacher_endpoint
            else "not run: rewrites need a teacher model "
            "(--teacher-endpoint); the demo's extractive generator writes none"
        ),
        "gate_retriever": gate_retriever,
        "top_k": spec.evaluation.baseline.top_k,
        "recall_by_retriever": report.diagnostics.recall_by_retriever,
        "by_retriever": by_retriever,
        "rows": rows,
    }
    write_result(args.out, result, ("date", "eval_questions", "eval_items_dropped_for_leakage"))
    for name, row in rows.items():
        iv = row["interval_candidate_minus_baseline"]
        s, w = row["scores"], row["mean_answer_words"]
        print(
            f"{name}: candidate={s['candidate'][iv['metric']]:.4f} "
            f"baseline={s['baseline'][iv['metric']]:.4f} base={s['base'][iv['metric']]:.4f} "
            f"diff={iv['mean']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}] {row['verdict']} "
            f"gold_recall={s['candidate']['gold_recall']:.4f}/{s['baseline']['gold_recall']:.4f} "
            f"words={w['candidate']:.1f}/{w['baseline']:.1f} "
            f"documents_trained={row['documents_trained_fraction']:.2f} "
            f"eval_seen={row['eval_questions_seen_in_training']}"
        )
    for retriever, row in by_retriever.items():
        print(
            f"baseline with {retriever}: {row['baseline'][spec.evaluation.metric]:.4f} "
            f"(candidate {row['candidate'][spec.evaluation.metric]:.4f}) "
            f"recall@k {row['retrieval_recall_at_k']}"
        )
    return 0


def _subset(report: EvalReport, metric: str) -> dict[str, Any]:
    """Mean scores on the questions about documents kept out of training."""
    questions = [q for q in report.questions if not q.document_trained]
    if not questions:
        return {"questions": 0}
    return {
        "questions": len(questions),
        **{
            system: round(sum(q.scores[system].get(metric) for q in questions) / len(questions), 4)
            for system in report.aggregate
        },
    }


if __name__ == "__main__":
    raise SystemExit(main())
