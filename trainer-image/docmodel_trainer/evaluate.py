"""Score the candidate adapter against the RAG baseline (and the serving revision) on held-out QA.

    docmodel-trainer evaluate --docmodel dm.yaml --store ./artifacts --revision <rev>
    docmodel-trainer evaluate --docmodel dm.yaml --store ./artifacts --revision <rev> \\
        --serving-revision <older-rev>                    # also score what serves now

Reads   <store>/<ns>/<name>/rev-<rev>/dataset/{chunks,eval}.jsonl, .../adapter/
Writes  <store>/<ns>/<name>/rev-<rev>/eval/   report.json (docmodel.report.EvalReport),
        report.html (side-by-side answers, score chart, the gate's verdict), manifest.json

Systems, all the same base model and the same greedy decoding (spec.evaluation.maxNewTokens):
  candidate  base + this revision's adapter, the bare question (as trained)
  baseline   base alone, the question after the top-k BM25 passages from chunks.jsonl
  serving    base + the serving adapter, the bare question (with --serving-revision/-adapter)
At most spec.evaluation.maxQuestions held-out questions (eval.jsonl, in file order). Scores:
exact match, token F1, ROUGE-L; paired bootstrap 95% CIs of candidate - baseline and
candidate - serving with a fixed seed. The exit code does not depend on the verdict: the
operator applies the gate; the verdict is recorded in the report for people.

An existing report of the revision stands (the command does nothing) when it scored the same
candidate adapter and the same serving adapter, or none when none is asked for; otherwise, or
with --force, the revision is evaluated again and the report replaced.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Iterable
from pathlib import Path

from docmodel.artifacts import (
    Manifest,
    evaluation_digest,
    publish_dir,
    read_manifest,
    software_versions,
)
from docmodel.dataset import CHUNKS, EVAL, Chunk, QAPair, read_jsonl
from docmodel.gate import decide_report
from docmodel.report import DecodingSettings, EvalReport, QuestionResult, Scores, SystemName
from docmodel.revision import report_covers
from docmodel_trainer import fetch, generation, metrics, modeling, report_html
from docmodel_trainer.common import (
    EXIT_BAD_INPUT,
    EXIT_NO_DATA,
    EXIT_OK,
    JobError,
    add_job_arguments,
    job_context,
)
from docmodel_trainer.retrieval import BM25Retriever, question_messages, rag_messages

log = logging.getLogger("docmodel.trainer.evaluate")

PACKAGES = ("torch", "transformers", "peft", "bm25s", "vllm", "bitsandbytes")
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_job_arguments(parser)
    group = parser.add_argument_group("evaluation (override spec.evaluation)")
    group.add_argument("--adapter", help="candidate adapter URI (default: this revision's)")
    serving = group.add_mutually_exclusive_group()
    serving.add_argument("--serving-revision", help="revision serving now (its adapter is scored)")
    serving.add_argument("--serving-adapter", help="URI of the adapter serving now")
    group.add_argument("--max-questions", type=int)
    group.add_argument("--max-new-tokens", type=int)
    group.add_argument("--top-k", type=int)
    group.add_argument("--retriever", choices=["bm25", "embedding"])
    group.add_argument("--engine", choices=["auto", "vllm", "transformers"], default="auto")
    group.add_argument("--batch-size", type=int, help="prompts per generate call (transformers)")
    group.add_argument("--bootstrap-resamples", type=int, default=2000)
    group.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    group.add_argument("--force", action="store_true", help="evaluate even if a report exists")


def run(args: argparse.Namespace) -> int:
    # -- setup: settings, rejected up front when they cannot work ------------------------------
    ctx = job_context(args)
    spec = ctx.docmodel.spec
    policy = spec.evaluation.model_copy(
        update={
            k: v
            for k, v in {
                "max_questions": args.max_questions,
                "max_new_tokens": args.max_new_tokens,
            }.items()
            if v is not None
        }
    )
    retriever_name = args.retriever or policy.baseline.retriever
    top_k = args.top_k or policy.baseline.top_k
    if retriever_name == "embedding":
        raise JobError(
            "retriever embedding is not available in this trainer image (no sentence-embedding "
            "library or model is bundled, and evaluation runs offline); use retriever bm25",
            "RetrieverUnavailable",
            EXIT_BAD_INPUT,
        )
    if args.engine == "vllm" and not generation.vllm_available():
        raise JobError("engine vllm needs CUDA and the vllm package", "EngineUnavailable", 2)
    if policy.max_questions < 1 or policy.max_new_tokens < 1 or top_k < 1:
        raise JobError("max-questions, max-new-tokens and top-k must be positive", "BadArgs", 2)
    modeling.quiet_progress_bars()
    layout = ctx.layout()
    adapter_uri = args.adapter or layout.uri(ctx.store_uri, "adapter")
    serving_uri = args.serving_adapter or (
        ctx.layout(args.serving_revision).uri(ctx.store_uri, "adapter")
        if args.serving_revision
        else None
    )
    existing = None if args.force else read_manifest(ctx.store, layout, "eval")
    if existing is not None:
        if report_covers(
            existing,
            adapter_uri=adapter_uri,
            serving_uri=serving_uri,
            evaluation=evaluation_digest(ctx.docmodel.spec),
        ):
            log.info(
                "Found report uri=%s; skipped (use --force)", layout.uri(ctx.store_uri, "eval")
            )
            return EXIT_OK
        log.info(
            "Found report of other adapters or settings uri=%s scored_adapter=%s scored_serving=%s "
            "adapter=%s serving=%s; evaluating again",
            layout.uri(ctx.store_uri, "eval"),
            existing.inputs.get("adapter"),
            existing.inputs.get("serving_adapter") or "none",
            adapter_uri,
            serving_uri or "none",
        )
    timings: dict[str, float] = {}
    started = time.monotonic()

    # -- inputs --------------------------------------------------------------------------------
    data_dir, _, dataset_digest = fetch.fetch_dataset(ctx.store, layout, ctx.workdir / "dataset")
    chunks = list(read_jsonl(data_dir / CHUNKS, Chunk))
    pairs = list(read_jsonl(data_dir / EVAL, QAPair))[: policy.max_questions]
    dataset_uri = layout.uri(ctx.store_uri, "dataset")
    if not pairs:
        raise JobError(f"dataset at {dataset_uri} has no eval pairs", "NoEvalData", EXIT_NO_DATA)
    if not chunks:
        raise JobError(f"dataset at {dataset_uri} has no chunks", "NoChunks", EXIT_NO_DATA)
    adapters = {"candidate": fetch.fetch_adapter(adapter_uri, ctx.workdir / "candidate")[0]}
    if serving_uri:
        adapters["serving"] = fetch.fetch_adapter(serving_uri, ctx.workdir / "serving")[0]
    timings["fetch_s"] = time.monotonic() - started

    # -- retrieval for the baseline ------------------------------------------------------------
    t0 = time.monotonic()
    questions = [p.question for p in pairs]
    retrieved = BM25Retriever(chunks).retrieve(questions, top_k)
    timings["retrieve_s"] = time.monotonic() - t0

    # -- answers: one base model, adapters switched per system ---------------------------------
    t0 = time.monotonic()
    quantize = spec.training.method == "qlora" and modeling.has_cuda()
    base_path = modeling.resolve_base_model(spec.base_model, ctx.workdir)
    answerer = generation.open_answerer(
        base_path,
        adapters,
        max_new_tokens=policy.max_new_tokens,
        quantize_4bit=quantize,
        engine=args.engine,
        batch_size=args.batch_size,
        max_lora_rank=lora_rank(adapters.values()),
    )
    timings["load_s"] = time.monotonic() - t0
    plain = [question_messages(q) for q in questions]
    answers: dict[SystemName, list[str]] = {}
    for system, adapter, prompts in (
        ("candidate", "candidate", plain),
        ("baseline", None, [rag_messages(q, r) for q, r in zip(questions, retrieved, strict=True)]),
        ("serving", "serving", plain),
    ):
        if system == "serving" and "serving" not in adapters:
            continue
        t0 = time.monotonic()
        answers[system] = answerer.answer(adapter, prompts)
        timings[f"answer_{system}_s"] = time.monotonic() - t0

    # -- scores, report, verdict ---------------------------------------------------------------
    report = build_report(
        revision=layout.revision,
        base_model=spec.base_model.name,
        adapter_uri=adapter_uri,
        serving_adapter_uri=serving_uri,
        retriever=retriever_name,
        top_k=top_k,
        decoding=DecodingSettings(
            max_new_tokens=policy.max_new_tokens,
            engine=answerer.engine,
            batch_size=answerer.batch_size,
        ),
        pairs=pairs,
        answers=answers,
        retrieved=[[c.source for c in r] for r in retrieved],
        resamples=args.bootstrap_resamples,
        seed=args.seed,
    )
    timings["total_s"] = time.monotonic() - started
    report.timings = {k: round(v, 3) for k, v in timings.items()}
    verdict = decide_report(report, policy)

    out = ctx.workdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
    (out / "report.html").write_text(report_html.render(report, verdict))
    manifest = Manifest(
        kind="eval",
        revision=layout.revision,
        inputs={
            "dataset": dataset_digest,
            "adapter": adapter_uri,
            "base_model": spec.base_model.name,
            "evaluation": evaluation_digest(spec),
            # Absent when no serving adapter was scored (see `report_covers`).
            **({"serving_adapter": serving_uri} if serving_uri else {}),
        },
        spec={"evaluation": policy.model_dump(mode="json", by_alias=True)},
        versions=software_versions(PACKAGES),
        metrics={s: v.model_dump() for s, v in report.aggregate.items()},
        details={"verdict": verdict.name, "reason": verdict.reason, "message": verdict.message},
    )
    uri = publish_dir(out, ctx.store, layout, manifest)
    m = policy.metric
    log.info(
        "Evaluated revision=%s questions=%d metric=%s candidate=%.4f baseline=%.4f%s verdict=%s "
        "uri=%s",
        layout.revision,
        len(pairs),
        m,
        report.aggregate["candidate"].get(m),
        report.aggregate["baseline"].get(m),
        f" serving={report.aggregate['serving'].get(m):.4f}"
        if "serving" in report.aggregate
        else "",
        verdict.name,
        uri,
    )
    return EXIT_OK


def build_report(
    *,
    revision: str,
    base_model: str,
    adapter_uri: str,
    serving_adapter_uri: str | None,
    retriever: str,
    top_k: int,
    decoding: DecodingSettings,
    pairs: list[QAPair],
    answers: dict[SystemName, list[str]],
    retrieved: list[list[str]],
    resamples: int,
    seed: int,
) -> EvalReport:
    """Score every answer and assemble the report (pure: no I/O, no model)."""
    per_system: dict[SystemName, list[Scores]] = {
        system: [metrics.score(a, p.answer) for a, p in zip(texts, pairs, strict=True)]
        for system, texts in answers.items()
    }
    questions = [
        QuestionResult(
            id=p.id,
            question=p.question,
            reference=p.answer,
            source=p.source,
            answers={s: answers[s][i] for s in answers},
            scores={s: per_system[s][i] for s in per_system},
            retrieved=retrieved[i],
        )
        for i, p in enumerate(pairs)
    ]
    differences = {
        f"candidate-{other}": metrics.compare(
            per_system["candidate"], per_system[other], resamples=resamples, seed=seed
        )
        for other in ("baseline", "serving")
        if other in per_system
    }
    return EvalReport(
        revision=revision,
        base_model=base_model,
        adapter_uri=adapter_uri,
        serving_adapter_uri=serving_adapter_uri,
        retriever=retriever,
        top_k=top_k,
        decoding=decoding,
        questions=questions,
        aggregate={s: metrics.aggregate(v) for s, v in per_system.items()},
        differences=differences,
    )


def lora_rank(adapter_dirs: Iterable[Path]) -> int:
    """The smallest rank vLLM accepts that fits every adapter."""
    ranks = [
        int(json.loads((Path(d) / "adapter_config.json").read_text()).get("r", 16))
        for d in adapter_dirs
    ]
    need = max(ranks, default=16)
    return next((r for r in VLLM_LORA_RANKS if r >= need), need)
