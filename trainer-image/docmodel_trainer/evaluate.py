"""Score the candidate adapter against the RAG baseline (and the serving revision) on held-out QA.

    docmodel-trainer evaluate --docmodel dm.yaml --store ./artifacts --revision <rev>
    docmodel-trainer evaluate --docmodel dm.yaml --store ./artifacts --revision <rev> \\
        --serving-revision <older-rev>                    # also score what serves now

Reads   <store>/<ns>/<name>/rev-<rev>/dataset/{chunks,eval}.jsonl, .../adapter/
Writes  <store>/<ns>/<name>/rev-<rev>/eval/   report.json (docmodel.report.EvalReport),
        report.html (side-by-side answers, score chart, the gate's verdict), manifest.json

Systems, all the same base model and the same greedy decoding (spec.evaluation.maxNewTokens):
  candidate  base + this revision's adapter, in its kind: the bare question (closed-book), or
             the baseline's very prompt (a retrieval candidate: same passages, same top-k)
  baseline   base alone, the question after the top-k passages from chunks.jsonl, ranked by
             the spec's retriever (BM25, Dense or Hybrid) over the dataset's passage index
  base       base alone, the bare question (closed-book: how guessable the questions are;
             a diagnostic, never gating)
  serving    base + the serving adapter, in its own kind (a retrieval revision retrieves from
             its own passage index), with --serving-revision/-adapter
Every prompt is built by the core's prompt builder (`docmodel.retrieval`), as in training and
serving. At most spec.evaluation.maxQuestions held-out questions (eval.jsonl, in file order,
with every question about a document a retrieval candidate was not trained on kept in
proportion): questions never trained on, about documents that were (and, for a retrieval
candidate, about the documents kept out). Every prompt fits the model's context (its own,
capped by serving.maxModelLen) with room for the answer: the baseline's passages are trimmed to
that budget with the model's tokenizer, best passage first, and the report counts trimmed
prompts per system. Scores: exact match, token F1, ROUGE-L (the gate's metric is one of them,
recorded as gate_metric) and gold recall (never gating); seeded paired bootstrap intervals
(spec.evaluation.confidence) of candidate minus every other system. Also in the report: each
system's answer length in normalised words, prompt and answer tokens and latency (p50/p99),
retrieval recall@k of the baseline, recall@1/3/5 of the gold passage for every retriever the
passage index supports (BM25 always; Dense and Hybrid when the passages were embedded), and
the dataset's leakage figures. The exit code does not
depend on the verdict: the operator applies the gate (`docmodel.gate`); the verdict is recorded
in the report for people.

An existing report of the revision stands (the command does nothing) when it scored the same
candidate adapter and the same serving adapter (or none when none is asked for) under the same
settings, command-line overrides included; otherwise, or with --force, the revision is
evaluated again and the report replaced.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from docmodel.api import CandidateKind, DocModelSpec, EvaluationSpec
from docmodel.artifacts import (
    Manifest,
    RevisionLayout,
    publish_dir,
    read_manifest,
    software_versions,
)
from docmodel.dataset import CHUNKS, EVAL, Chunk, QAPair, read_jsonl
from docmodel.digests import evaluation_digest
from docmodel.gate import Decision, decide_report
from docmodel.modelfacts import PEFT_DEFAULT_RANK, adapter_facts, vllm_max_lora_rank
from docmodel.report import DecodingSettings, EvalReport, SystemName
from docmodel.retrieval import (
    ChatTemplateTokens,
    RetrievalIndex,
    fit_context_messages,
    question_messages,
    read_index,
    read_vectors,
)
from docmodel.revision import report_covers
from docmodel.search import (
    RETRIEVERS,
    EmbeddingMismatch,
    PassageIndex,
    check_embedding,
    needs_embeddings,
    open_retriever,
    recall_at,
)
from docmodel.stats import DEFAULT_RESAMPLES
from docmodel_trainer import fetch, generation, modeling, passage_index, report_html
from docmodel_trainer.common import (
    EXIT_BAD_INPUT,
    EXIT_NO_DATA,
    EXIT_OK,
    JobContext,
    JobError,
    add_job_arguments,
    job_context,
)
from docmodel_trainer.report_json import build_report, verdict_line

log = logging.getLogger("docmodel.trainer.evaluate")

PACKAGES = ("torch", "transformers", "peft", "bm25s", "vllm", "bitsandbytes")


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
    group.add_argument("--retriever", choices=list(RETRIEVERS))
    group.add_argument("--engine", choices=["auto", "vllm", "transformers"], default="auto")
    group.add_argument("--batch-size", type=int, help="prompts per generate call (transformers)")
    group.add_argument("--bootstrap-resamples", type=int, default=DEFAULT_RESAMPLES)
    group.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    group.add_argument("--force", action="store_true", help="evaluate even if a report exists")


def resolve_policy(args: argparse.Namespace, spec: DocModelSpec) -> EvaluationSpec:
    """spec.evaluation with the command line's overrides; bad values are refused, never taken
    as "use the spec" (`--top-k 0` is an error)."""
    for flag in ("max_questions", "max_new_tokens", "top_k"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise JobError(
                f"--{flag.replace('_', '-')} must be positive (got {value})", "BadArgs", 2
            )
    updates = {
        k: v
        for k, v in {
            "max_questions": args.max_questions,
            "max_new_tokens": args.max_new_tokens,
        }.items()
        if v is not None
    }
    baseline = {
        k: v for k, v in {"top_k": args.top_k, "retriever": args.retriever}.items() if v is not None
    }
    if baseline:
        updates["baseline"] = spec.evaluation.baseline.model_copy(update=baseline)
    policy = spec.evaluation.model_copy(update=updates)
    if args.engine == "vllm" and not generation.vllm_available():
        raise JobError("engine vllm needs CUDA and the vllm package", "EngineUnavailable", 2)
    return policy


@dataclass(frozen=True)
class EvaluationInputs:
    """The revision's held-out questions and passages, and the adapters to score."""

    dataset_uri: str
    dataset_manifest: Manifest
    dataset_digest: str
    pairs: list[QAPair]  # the held-out questions, capped by spec.evaluation.maxQuestions
    chunks: list[Chunk]
    index: PassageIndex
    vectors: np.ndarray | None
    baseline_retriever: Any
    adapters: dict[str, Path]  # system -> adapter directory: the candidate's, the serving one's
    kinds: dict[SystemName, CandidateKind]


@dataclass(frozen=True)
class Retrieved:
    """The passages the prompts are built from, and the recall diagnostics."""

    baseline: list[list[Chunk]]  # per question: the baseline's (and a retrieval candidate's)
    serving: list[list[Chunk]] | None  # a retrieval serving revision's own
    recall: dict[str, dict[str, float | None]]  # retriever -> recall@1/3/5


@dataclass(frozen=True)
class Answered:
    """Every system's answers, with what producing them took."""

    answers: dict[SystemName, list[str]]
    stats: dict[SystemName, list[generation.AnswerStats]]
    trimmed: dict[SystemName, int]  # prompts whose passages were trimmed to fit
    context_tokens: int
    decoding: DecodingSettings
    timings: dict[str, float]  # load_s, then answer_<system>_s per system


def run(args: argparse.Namespace) -> int:
    ctx = job_context(args)
    spec = ctx.docmodel.spec
    policy = resolve_policy(args, spec)
    modeling.quiet_progress_bars()
    layout = ctx.layout()
    adapter_uri = args.adapter or layout.uri(ctx.store_uri, "adapter")
    serving_uri = args.serving_adapter or (
        ctx.layout(args.serving_revision).uri(ctx.store_uri, "adapter")
        if args.serving_revision
        else None
    )
    if not args.force and _report_stands(ctx, layout, adapter_uri, serving_uri, policy):
        return EXIT_OK
    started = time.monotonic()
    inputs = read_inputs(ctx, layout, policy, adapter_uri, serving_uri)
    timings = {"fetch_s": time.monotonic() - started}
    t0 = time.monotonic()
    retrieved = retrieve_passages(ctx, inputs, policy)
    timings["retrieve_s"] = time.monotonic() - t0
    answered = answer_questions(
        ctx, inputs, retrieved, policy, engine=args.engine, batch_size=args.batch_size
    )
    timings.update(answered.timings)
    report = assemble_report(
        ctx,
        layout,
        policy,
        inputs,
        retrieved,
        answered,
        adapter_uri=adapter_uri,
        serving_uri=serving_uri,
        resamples=args.bootstrap_resamples,
        seed=args.seed,
    )
    timings["total_s"] = time.monotonic() - started
    report.timings = {k: round(v, 3) for k, v in timings.items()}
    verdict = decide_report(report, policy)
    _publish(ctx, layout, report, verdict, policy, inputs.dataset_digest, adapter_uri, serving_uri)
    return EXIT_OK


def read_inputs(
    ctx: JobContext,
    layout: RevisionLayout,
    policy: EvaluationSpec,
    adapter_uri: str,
    serving_uri: str | None,
) -> EvaluationInputs:
    """Fetch the revision's dataset and the adapters to score; a dataset without held-out
    questions or passages is an error, and so is one not indexed for the baseline's retriever."""
    spec = ctx.docmodel.spec
    data_dir, dataset_manifest, dataset_digest = fetch.fetch_dataset(
        ctx.store, layout, ctx.workdir / "dataset"
    )
    chunks = list(read_jsonl(data_dir / CHUNKS, Chunk))
    pairs = cap_questions(list(read_jsonl(data_dir / EVAL, QAPair)), policy.max_questions)
    dataset_uri = layout.uri(ctx.store_uri, "dataset")
    if not pairs:
        raise JobError(f"dataset at {dataset_uri} has no eval pairs", "NoEvalData", EXIT_NO_DATA)
    if not chunks:
        raise JobError(f"dataset at {dataset_uri} has no chunks", "NoChunks", EXIT_NO_DATA)
    # The baseline's retriever first: a dataset indexed for another retriever fails fast.
    index, vectors = passage_index.read(data_dir, chunks, dataset_uri)
    baseline_retriever = passage_index.retriever(
        policy.baseline.retriever, spec, ctx.workdir, chunks, index, vectors, dataset_uri
    )
    adapters = {"candidate": fetch.fetch_adapter(adapter_uri, ctx.workdir / "candidate")[0]}
    if serving_uri:
        adapters["serving"] = fetch.fetch_adapter(serving_uri, ctx.workdir / "serving")[0]
    kinds: dict[SystemName, CandidateKind] = {"candidate": adapter_kind(adapters["candidate"])}
    if "serving" in adapters:
        kinds["serving"] = adapter_kind(adapters["serving"])
    return EvaluationInputs(
        dataset_uri,
        dataset_manifest,
        dataset_digest,
        pairs,
        chunks,
        index,
        vectors,
        baseline_retriever,
        adapters,
        kinds,
    )


def retrieve_passages(
    ctx: JobContext, inputs: EvaluationInputs, policy: EvaluationSpec
) -> Retrieved:
    """The baseline's passages (a retrieval candidate's too), a retrieval serving revision's,
    and every retriever's recall of the gold passage."""
    spec = ctx.docmodel.spec
    questions = [p.question for p in inputs.pairs]
    retrieved = inputs.baseline_retriever.retrieve(questions, policy.baseline.top_k)
    recall = retriever_recall(
        spec, ctx, inputs.chunks, inputs.index, inputs.vectors, inputs.pairs, inputs.dataset_uri
    )
    serving_retrieved = None
    if inputs.kinds.get("serving") == "Retrieval":
        serving_retrieved = serving_retrieval(spec, ctx, inputs.adapters["serving"], questions)
    return Retrieved(retrieved, serving_retrieved, recall)


def answer_questions(
    ctx: JobContext,
    inputs: EvaluationInputs,
    retrieved: Retrieved,
    policy: EvaluationSpec,
    *,
    engine: str,
    batch_size: int | None,
) -> Answered:
    """Every system's answers: one base model, adapters switched per system, every prompt
    fitted to the model's context."""
    spec = ctx.docmodel.spec
    adapters = inputs.adapters
    t0 = time.monotonic()
    base_path = modeling.resolve_base_model(spec.base_model, ctx.workdir, spec.source.endpoint)
    answerer = generation.open_answerer(
        base_path,
        adapters,
        max_new_tokens=policy.max_new_tokens,
        quantize_4bit=spec.training.method == "qlora" and modeling.has_cuda(),
        engine=engine,
        batch_size=batch_size,
        max_lora_rank=vllm_max_lora_rank(
            max((adapter_facts(d).rank for d in adapters.values()), default=PEFT_DEFAULT_RANK)
        ),
    )
    timings = {"load_s": time.monotonic() - t0}
    context = context_tokens(base_path, spec.serving.max_model_len)
    budget = context - policy.max_new_tokens
    questions = [p.question for p in inputs.pairs]
    prompts = system_prompts(
        answerer.tokenizer, questions, retrieved.baseline, budget, inputs.kinds, retrieved.serving
    )
    # One untimed answer first, so no system's latency carries the engine's warm-up.
    answerer.answer(None, prompts["base"][1][:1], label="warm-up")
    answers: dict[SystemName, list[str]] = {}
    stats: dict[SystemName, list[generation.AnswerStats]] = {}
    for system, (adapter, messages, _) in prompts.items():
        t0 = time.monotonic()
        answers[system] = answerer.answer(adapter, messages, label=system)
        stats[system] = answerer.stats
        timings[f"answer_{system}_s"] = time.monotonic() - t0
    decoding = DecodingSettings(
        max_new_tokens=policy.max_new_tokens,
        engine=answerer.engine,
        batch_size=answerer.batch_size,
        adapter_weights="vllm-lora" if answerer.engine == "vllm" else "merged",
    )
    trimmed = {s: sum(t) for s, (_, _, t) in prompts.items()}
    return Answered(answers, stats, trimmed, context, decoding, timings)


def assemble_report(
    ctx: JobContext,
    layout: RevisionLayout,
    policy: EvaluationSpec,
    inputs: EvaluationInputs,
    retrieved: Retrieved,
    answered: Answered,
    *,
    adapter_uri: str,
    serving_uri: str | None,
    resamples: int,
    seed: int,
) -> EvalReport:
    """Score every answer (`build_report`) and add the diagnostics: the context prompts were
    fitted to, every retriever's recall and the dataset's leakage figures."""
    spec = ctx.docmodel.spec
    report = build_report(
        revision=layout.revision,
        base_model=spec.base_model.name,
        adapter_uri=adapter_uri,
        serving_adapter_uri=serving_uri,
        retriever=policy.baseline.retriever,
        top_k=policy.baseline.top_k,
        kinds=inputs.kinds,
        decoding=answered.decoding,
        pairs=inputs.pairs,
        answers=answered.answers,
        retrieved=retrieved.baseline,
        gate_metric=policy.metric,
        resamples=resamples,
        seed=seed,
        confidence=policy.confidence,
        stats=answered.stats,
        trimmed=answered.trimmed,
    )
    report.diagnostics.context_tokens = answered.context_tokens
    report.diagnostics.recall_by_retriever = retrieved.recall
    report.leakage = dict(inputs.dataset_manifest.details.get("leakage") or {})
    return report


RECALL_AT = (1, 3, 5)


def retriever_recall(
    spec: DocModelSpec,
    ctx: JobContext,
    chunks: list[Chunk],
    index: PassageIndex,
    vectors: Any,
    pairs: list[QAPair],
    where: str,
) -> dict[str, dict[str, float | None]]:
    """Recall@1/3/5 of the gold passage on the held-out questions, for every retriever the
    passage index supports (a diagnostic: which retriever the baseline would do best with)."""
    questions = [p.question for p in pairs]
    gold = [p.chunk_id for p in pairs]
    out: dict[str, dict[str, float | None]] = {}
    for kind in RETRIEVERS:
        if needs_embeddings(kind) and vectors is None:
            continue
        retriever = passage_index.retriever(kind, spec, ctx.workdir, chunks, index, vectors, where)
        ranked = [[c.id for c in row] for row in retriever.retrieve(questions, max(RECALL_AT))]
        out[kind] = recall_at(ranked, gold, RECALL_AT)
    log.info(
        "Measured retrieval recall questions=%d %s",
        sum(1 for g in gold if g),
        " ".join(
            f"{kind}@{k}={v:.3f}"
            for kind, row in out.items()
            for k, v in row.items()
            if v is not None
        ),
    )
    return out


def serving_retrieval(
    spec: DocModelSpec, ctx: JobContext, adapter_dir: Path, questions: list[str]
) -> list[list[Chunk]]:
    """What a retrieval serving revision retrieves, from its own index, with its own
    retriever and embedding model."""
    found = read_index(adapter_dir)
    assert found is not None
    index, passages = found
    try:
        vectors = read_vectors(adapter_dir, index)
    except ValueError as exc:
        raise JobError(f"serving adapter: {exc}", "BadPassageIndex", EXIT_BAD_INPUT) from None
    encoder = None
    if index.embedding is not None:
        encoder = passage_index.load_encoder(
            serving_embedding_model(spec, index), ctx.workdir, spec.source.endpoint
        )
        try:
            check_embedding(index.embedding, encoder.info)
        except EmbeddingMismatch as exc:
            raise JobError(f"serving adapter: {exc}", "EmbeddingMismatch", EXIT_BAD_INPUT) from None
    return open_retriever(index.retriever, passages, vectors, encoder).retrieve(
        questions, index.top_k
    )


def serving_embedding_model(spec: DocModelSpec, index: RetrievalIndex) -> Any:
    """The embedding model a serving revision's passages were embedded with (the spec's
    mirror applies when the spec names the same model)."""
    assert index.embedding is not None
    model = spec.evaluation.baseline.embedding_model
    if model.name == index.embedding.name:
        return model
    return model.model_copy(update={"name": index.embedding.name, "mirror": None})


def _report_stands(
    ctx: JobContext,
    layout: RevisionLayout,
    adapter_uri: str,
    serving_uri: str | None,
    policy: EvaluationSpec,
) -> bool:
    """Whether the stored report scored these adapters under these settings (after overrides)."""
    existing = read_manifest(ctx.store, layout, "eval")
    if existing is None:
        return False
    if report_covers(
        existing,
        adapter_uri=adapter_uri,
        serving_uri=serving_uri,
        evaluation=evaluation_digest(policy),
    ):
        log.info("Found report uri=%s; skipped (use --force)", layout.uri(ctx.store_uri, "eval"))
        return True
    log.info(
        "Found report of other adapters or settings uri=%s scored_adapter=%s scored_serving=%s "
        "adapter=%s serving=%s; evaluating again",
        layout.uri(ctx.store_uri, "eval"),
        existing.inputs.get("adapter"),
        existing.inputs.get("serving_adapter") or "none",
        adapter_uri,
        serving_uri or "none",
    )
    return False


def context_tokens(base_path: str, max_model_len: int) -> int:
    """The context every prompt must fit: the model's own, capped by serving.maxModelLen."""
    config = (
        json.loads((Path(base_path) / "config.json").read_text())
        if Path(base_path, "config.json").is_file()
        else {}
    )
    own = config.get("max_position_embeddings")
    return min(max_model_len, own) if isinstance(own, int) and own > 0 else max_model_len


Prompts = dict[SystemName, tuple[str | None, list[list[dict[str, str]]], list[bool]]]


def adapter_kind(adapter_dir: Path) -> CandidateKind:
    """An adapter's kind: Retrieval when it carries a passage index (`docmodel.retrieval`)."""
    return "Retrieval" if read_index(adapter_dir) is not None else "ClosedBook"


def cap_questions(pairs: list[QAPair], most: int) -> list[QAPair]:
    """At most `most` questions in file order, with the questions about documents kept out of
    training (a retrieval candidate's guard) kept in proportion, not cut off the end."""
    if len(pairs) <= most:
        return pairs
    unseen = [p for p in pairs if not p.document_trained]
    keep_unseen = round(most * len(unseen) / len(pairs)) if unseen else 0
    keep = {id(p) for p in unseen[:keep_unseen]}
    keep |= {id(p) for p in [p for p in pairs if p.document_trained][: most - keep_unseen]}
    return [p for p in pairs if id(p) in keep]


def system_prompts(
    tokenizer: Any,
    questions: list[str],
    retrieved: list[list[Chunk]],
    budget: int,
    kinds: dict[SystemName, CandidateKind],
    serving_retrieved: list[list[Chunk]] | None = None,
) -> Prompts:
    """Each system's (adapter, prompts, trimmed flags), all from the core's prompt builder: the
    passages are trimmed to `budget` tokens of the model's tokenizer; closed-book prompts are
    counted too. `kinds` holds the candidate's (and the serving revision's) kind."""
    counter = ChatTemplateTokens(tokenizer)

    def with_context(hits: list[list[Chunk]]) -> tuple[list[list[dict[str, str]]], list[bool]]:
        fitted = [
            fit_context_messages(counter, q, r, budget)
            for q, r in zip(questions, hits, strict=True)
        ]
        return [m for m, _ in fitted], [t for _, t in fitted]

    rag = with_context(retrieved)
    plain = [question_messages(q) for q in questions]
    closed = (plain, [counter.prompt_tokens(m) > budget for m in plain])
    out: Prompts = {
        "candidate": ("candidate", *(rag if kinds["candidate"] == "Retrieval" else closed)),
        "baseline": (None, *rag),
        "base": (None, *closed),
    }
    if "serving" in kinds:
        own = with_context(serving_retrieved) if serving_retrieved is not None else closed
        out["serving"] = ("serving", *own)
    return out


def _publish(
    ctx: JobContext,
    layout: RevisionLayout,
    report: EvalReport,
    verdict: Decision,
    policy: EvaluationSpec,
    dataset_digest: str,
    adapter_uri: str,
    serving_uri: str | None,
) -> None:
    out = ctx.workdir / "eval"
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(report.model_dump_json(indent=2) + "\n")
    (out / "report.html").write_text(report_html.render(report, verdict))
    spec = ctx.docmodel.spec
    manifest = Manifest(
        kind="eval",
        revision=layout.revision,
        inputs={
            "dataset": dataset_digest,
            "adapter": adapter_uri,
            "base_model": spec.base_model.name,
            "evaluation": evaluation_digest(policy),
            # Absent when no serving adapter was scored (see `report_covers`).
            **({"serving_adapter": serving_uri} if serving_uri else {}),
        },
        spec={"evaluation": policy.model_dump(mode="json", by_alias=True)},
        versions=software_versions(PACKAGES),
        metrics={s: v.model_dump() for s, v in report.aggregate.items()},
        details={"verdict": verdict.name, "reason": verdict.reason, "message": verdict.message},
    )
    uri = publish_dir(out, ctx.store, layout, manifest)
    log.info("%s uri=%s", verdict_line(report, verdict, policy.metric), uri)
