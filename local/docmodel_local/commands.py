"""Local mode: the whole DocModel lifecycle on this machine, no cluster.

    docmodel local run                                  # embedded demo: SmolLM2, bundled docs
    docmodel local run --docmodel my.yaml --docs ./docs # your DocModel, docs from a directory
    docmodel local run --docmodel my.yaml               # docs from the DocModel's S3 source
    docmodel local run ... --keep-serving               # stay up and serve until Ctrl-C
    docmodel local serve [--revision REV]               # serve the promoted (or any trained) revision
    docmodel local status                               # every revision, its verdict and scores

Local mode is the operator's lifecycle with processes for Jobs and Deployments: the planner in
`docmodel.plan` decides every step, the builders in `docmodel.builders` give each step's command
and environment, and `docmodel_local.executor` carries them out (`docmodel-trainer ingest|train|
evaluate` against an artifact store directory or S3, `docmodel-server` on localhost with the
OpenAI-compatible API the cluster serves). The DocModel's status is recorded in
`<store>/<namespace>/<name>/local-state.json`, so a second run compares its candidate with the
serving revision too, exactly as the operator does. This module only reads the command line
and prints.

Without `--base-model`, the base model's name in the DocModel is used (the demo's is
SmolLM2-135M-Instruct, which the project's `demo-model` extra installs). It is resolved first,
as a step of its own (`docmodel-trainer base-model`: a packaged model is converted once into
the model cache), so the lifecycle's steps find it ready. The run ends with every system's
scores, a few held-out questions answered side by side and each stage's time; a run that finds
its revision already judged says which run that was.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from docmodel.api import DocModel, DocModelStatus, SpecError, parse_docmodel
from docmodel.artifacts import RevisionLayout, read_manifest
from docmodel.dataset import EVAL, QAPair
from docmodel.report import EvalReport
from docmodel.settings import LocalSettings
from docmodel.storage import ObjectStore, StorageError, open_store
from docmodel_local.executor import (
    LocalExecutor,
    LocalRunError,
    LocalServer,
    free_port,
    local_server_env,
    read_status,
    start_server,
    state_key,
)

log = logging.getLogger("docmodel.local")

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "examples" / "local"
DEFAULT_STORE = LocalSettings.from_env().local_store
SERVER_READY_SECONDS = 300.0


class BadInput(LocalRunError):
    """The DocModel, the documents directory or a flag is wrong (exit 2)."""


@dataclass
class Paths:
    docs: Path | None
    store: str
    workdir: Path


def _shared_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags `local run` and `local serve` both take."""
    parser.add_argument("--docmodel", type=Path, help="DocModel manifest (default: the demo's)")
    parser.add_argument("--store", default=None, help="artifact store directory or s3:// URI")
    parser.add_argument(
        "--base-model",
        default=None,
        help="a model id or directory that overrides the DocModel's spec.baseModel.name",
    )
    parser.add_argument("--port", type=int, default=0, help="serving port (default: a free one)")
    parser.add_argument("--question", default=None, help="question asked once the model serves")


def add_parser(sub: Any) -> None:
    local = sub.add_parser("local", help="run the lifecycle on this machine")
    local_sub = local.add_subparsers(dest="local_command", required=True, metavar="COMMAND")
    run = local_sub.add_parser(
        "run", help="ingest, train, evaluate, gate and serve", description=__doc__
    )
    _shared_arguments(run)
    run.add_argument("--docs", type=Path, help="directory of documents (default: the demo's)")
    run.add_argument("--keep-serving", action="store_true", help="serve until Ctrl-C")
    run.set_defaults(run=run_command)

    serve = local_sub.add_parser(
        "serve",
        help="serve the promoted revision (or, to inspect it, any trained one) on localhost",
    )
    _shared_arguments(serve)
    serve.add_argument(
        "--revision",
        default=None,
        help="a trained revision to inspect; it does not become the serving revision",
    )
    serve.add_argument(
        "--once", action="store_true", help="exit after answering the question (for scripts)"
    )
    serve.set_defaults(run=serve_command, docs=None)

    status = local_sub.add_parser(
        "status", help="list the revisions, their verdicts and scores, and what is serving"
    )
    status.add_argument("--docmodel", type=Path, help="DocModel manifest (default: the demo's)")
    status.add_argument("--store", default=None, help="artifact store directory or s3:// URI")
    status.set_defaults(run=status_command)


def _run_step(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    log.info("Started step=%s", name)
    started = time.monotonic()
    result = subprocess.run(argv, env=env, check=False)
    if result.returncode != 0:
        raise LocalRunError(f"step {name} failed with exit code {result.returncode}")
    log.info("Finished step=%s seconds=%.1f", name, time.monotonic() - started)


def _trainer(*args: str) -> list[str]:
    return [sys.executable, "-m", "docmodel_trainer.cli", *args]


def resolve_base_model(dm: DocModel) -> float:
    """Make the base model ready before any step runs, and time it: the trainer resolves it in
    the core's order (`docmodel.basemodel`) and converts a packaged model into the model cache
    once (the demo's SmolLM2 takes 20-60 s the first time, then nothing). Returns the
    seconds it took."""
    spec = dm.spec.base_model
    mirror = ["--mirror", spec.mirror] if spec.mirror else []
    if spec.mirror and dm.spec.source.endpoint:
        mirror += ["--mirror-endpoint", dm.spec.source.endpoint]
    argv = _trainer("base-model", spec.name, *mirror)
    log.info("Started step=base-model name=%s", spec.name)
    started = time.monotonic()
    result = subprocess.run(argv, check=False, stdout=subprocess.PIPE, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise LocalRunError(
            f"the base model {spec.name} could not be resolved (exit code {result.returncode}); "
            "its reason is logged above"
        )
    path = result.stdout.strip().splitlines()[-1]
    log.info("Finished step=base-model path=%s seconds=%.1f", path, seconds)
    return seconds


def _load_manifest(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise BadInput(f"cannot read the DocModel {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("spec"), dict):
        raise BadInput(f"{path} is not a DocModel: it has no spec mapping")
    return raw


def _prepare(args: argparse.Namespace) -> tuple[Paths, DocModel]:
    docmodel_path = args.docmodel or DEMO_DIR / "docmodel.yaml"
    docs = args.docs or (DEMO_DIR / "docs" if args.docmodel is None else None)
    if docs is not None and not docs.is_dir():
        raise BadInput(f"the documents directory {docs} does not exist")
    manifest = _load_manifest(docmodel_path)
    try:
        parse_docmodel(manifest)  # fail fast, naming the field, before any model is loaded
    except SpecError as exc:
        raise BadInput(f"{docmodel_path}: {exc}") from None
    if args.base_model:
        manifest["spec"].setdefault("baseModel", {})["name"] = args.base_model
    model = parse_docmodel(manifest)
    store = args.store or str(DEFAULT_STORE.expanduser())
    workdir = Path(tempfile.mkdtemp(prefix="docmodel-local-"))
    return Paths(docs, store, workdir), model


def _terminated(signum: int, _: Any) -> None:
    raise SystemExit(128 + signum)


def _guarded(action: str, body: Callable[[], int]) -> int:
    """Run a local command: errors become one log line and an exit code, never a traceback. A
    SIGTERM unwinds like Ctrl-C does, so the servers and Jobs this process started stop too."""
    signal.signal(signal.SIGTERM, _terminated)
    try:
        return body()
    except BadInput as exc:
        log.error("Rejected local %s: %s", action, exc)
        return 2
    except (LocalRunError, StorageError) as exc:
        log.error("Failed local %s: %s", action, exc)
        return 1


def status_command(args: argparse.Namespace) -> int:
    return _guarded("status", lambda: _status(args))


def _status(args: argparse.Namespace) -> int:
    """Print the DocModel's revisions as local mode recorded them (newest first)."""
    path = args.docmodel or DEMO_DIR / "docmodel.yaml"
    try:
        model = parse_docmodel(_load_manifest(path))
    except SpecError as exc:
        raise BadInput(f"{path}: {exc}") from None
    store_uri = args.store or str(DEFAULT_STORE.expanduser())
    ns, name = model.metadata.namespace, model.metadata.name
    status = read_status(open_store(store_uri), state_key(ns, name))
    out = sys.stdout.write
    serving = status.serving.revision if status.serving else None
    out(f"DocModel {ns}/{name} in {store_uri}: phase {status.phase or 'none yet'}")
    out(f", serving {serving}\n" if serving else ", nothing serving\n")
    if not status.history:
        out("No revision has been evaluated yet: run `docmodel local run`.\n")
        return 0
    metric = model.spec.evaluation.metric
    rows = [("REVISION", "VERDICT", f"CANDIDATE {metric}", f"BASELINE {metric}", "WHEN", "")]
    for entry in reversed(status.history):
        score = getattr(entry.metrics, metric, None) if entry.metrics else None
        base = getattr(entry.baseline_metrics, metric, None) if entry.baseline_metrics else None
        rows.append(
            (
                entry.revision,
                entry.verdict or "-",
                f"{score:.4f}" if score is not None else "-",
                f"{base:.4f}" if base is not None else "-",
                entry.completed_at.strftime("%Y-%m-%d %H:%M") if entry.completed_at else "-",
                "serving" if entry.revision == serving else (entry.rollout or ""),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() + "\n")
    for entry in reversed(status.history):
        if entry.reason:
            out(f"\n{entry.revision}: {entry.reason}\n")
            if entry.report_uri:
                out(f"  report: {entry.report_uri.removesuffix('.json')}.html\n")
    return 0


def run_command(args: argparse.Namespace) -> int:
    return _guarded("run", lambda: _run(args))


def serve_command(args: argparse.Namespace) -> int:
    return _guarded("serve", lambda: _serve_revision(args))


def _serve_revision(args: argparse.Namespace) -> int:
    """Serve the promoted revision, or any trained one to inspect it (never promoting it)."""
    paths, model = _prepare(args)
    try:
        store = open_store(paths.store)
        ns, name = model.metadata.namespace, model.metadata.name
        status = read_status(store, state_key(ns, name))
        if args.revision:
            layout = RevisionLayout(ns, name, args.revision)
            if not store.exists(layout.key("adapter", "manifest.json")):
                raise LocalRunError(
                    f"revision {args.revision} has no trained adapter at "
                    f"{layout.uri(paths.store, 'adapter')}"
                )
            revision = args.revision
        elif status.serving is not None and status.serving.revision:
            revision = status.serving.revision
        else:
            raise LocalRunError(
                f"no revision of {ns}/{name} has passed the gate in {paths.store}; "
                "run `docmodel local run` first, or pass --revision to inspect a candidate"
            )
        resolve_base_model(model)
        port = args.port or free_port()
        env = local_server_env(model, revision, store.uri, port, paths.workdir / "server")
        server = start_server(env, f"http://127.0.0.1:{port}", name, SERVER_READY_SECONDS)
        try:
            if not server.ready:
                raise LocalRunError(server.message)
            return _present_server(args, model, store, revision, server, keep=not args.once)
        finally:
            server.stop()
    finally:
        shutil.rmtree(paths.workdir, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    paths, model = _prepare(args)
    executor = None
    try:
        base_seconds = resolve_base_model(model)
        store = open_store(paths.store)
        executor = LocalExecutor(model, store, paths.workdir, paths.docs, args.port)
        log.info(
            "Started local run docmodel=%s/%s store=%s",
            model.metadata.namespace,
            model.metadata.name,
            paths.store,
        )
        status = executor.reconcile()
        code = _present_run(args, model, paths, status)
        if code == 0:
            _present_closing(model, store, status, executor, base_seconds, started)
        serving = status.serving.revision if status.serving else None
        server = executor.servers.get(serving) if serving else None
        if code != 0 or serving is None:
            return code
        if server is None or not server.ready:
            raise LocalRunError(f"the server of revision {serving} is not ready")
        return _present_server(args, model, store, serving, server, keep=args.keep_serving)
    finally:
        if executor is not None:
            executor.stop_all()
        shutil.rmtree(paths.workdir, ignore_errors=True)


def _present_run(
    args: argparse.Namespace, model: DocModel, paths: Paths, status: DocModelStatus
) -> int:
    """Print where the lifecycle ended: the verdict and report, or the failure."""
    out = sys.stdout.write
    failure = status.last_failure
    if status.phase == "Failed" and failure is not None:
        out(f"\nRevision {failure.revision}: Failed at {failure.stage} — {failure.reason}: ")
        out(f"{failure.message}\n")
        for line in failure.log_tail[-10:]:
            out(f"  | {line}\n")
        return 1
    candidate = status.candidate
    if candidate is None or candidate.verdict is None:
        reason = failure.message if failure is not None else "no verdict was reached"
        out(f"\nRevision {status.revision}: {status.phase} — {reason}\n")
        return 1
    out(f"\nRevision {candidate.revision}: {candidate.verdict} — {candidate.reason}\n")
    if candidate.report_uri:
        out(f"Report: {candidate.report_uri.removesuffix('.json')}.html\n")
    serving = status.serving.revision if status.serving else None
    if serving is None:
        out(
            "Nothing is serving: no revision has passed the gate yet. To try this candidate "
            f"anyway (it stays unpromoted): docmodel local serve --revision {candidate.revision}"
            + ("" if args.docmodel is None else f" --docmodel {args.docmodel}")
            + f" --store {paths.store}\n"
        )
    elif candidate.verdict != "Promoted" or serving != candidate.revision:
        out(f"Still serving revision {serving}.\n")
    return 0


SIDE_BY_SIDE = 3  # held-out questions printed with every system's answer


def _present_closing(
    model: DocModel,
    store: ObjectStore,
    status: DocModelStatus,
    executor: LocalExecutor,
    base_seconds: float,
    started: float,
) -> None:
    """The closing lines: whether anything was trained this time, every system's scores, a
    few held-out questions side by side, and where the time went."""
    candidate = status.candidate
    if candidate is None or candidate.revision is None:
        return
    out = sys.stdout.write
    layout = RevisionLayout(model.metadata.namespace, model.metadata.name, candidate.revision)
    if not executor.step_seconds:
        adapter = read_manifest(store, layout, "adapter")
        evaluated = read_manifest(store, layout, "eval")
        trained = (
            f"trained {adapter.created_at:%Y-%m-%d %H:%M} UTC by docmodel "
            f"{adapter.versions.get('docmodel', 'unknown')}"
            if adapter is not None
            else "trained earlier"
        )
        judged = f", judged {evaluated.created_at:%Y-%m-%d %H:%M} UTC" if evaluated else ""
        out(
            f"Reused revision {candidate.revision}: {trained}{judged}. The documents, settings "
            "and base model are unchanged, so no step ran; the verdict above is that run's.\n"
        )
    key = layout.key("eval", "report.json")
    if store.exists(key):
        report = EvalReport.model_validate_json(store.get_bytes(key))
        _present_report(report, model.spec.evaluation.metric)
    steps = [("base model", base_seconds)] + [
        (step, executor.step_seconds[step])
        for step in ("ingest", "train", "evaluate")
        if step in executor.step_seconds
    ]
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB
    out(
        "Stage times: "
        + ", ".join(f"{step} {seconds:.1f} s" for step, seconds in steps)
        + f"; total {time.monotonic() - started:.1f} s; peak RSS of a step {peak:.2f} GiB\n"
    )


def _present_report(report: EvalReport, metric: str) -> None:
    """Every system's scores on the held-out questions, then a few answers side by side."""
    out = sys.stdout.write
    systems = [s for s in ("candidate", "baseline", "base", "serving") if s in report.aggregate]
    label = {
        "candidate": f"candidate ({report.kinds.get('candidate', 'ClosedBook')})",
        "baseline": f"RAG baseline ({report.retriever} top-{report.top_k})",
        "base": "base model, closed-book",
        "serving": "serving revision",
    }
    out(f"\nScores on {len(report.questions)} held-out questions (gate metric: {metric}):\n")
    rows = [("SYSTEM", "TOKEN F1", "EXACT", "ROUGE-L", "GOLD RECALL", "MEAN WORDS")]
    for system in systems:
        scores = report.aggregate[system]
        words = report.mean_answer_words.get(system)
        rows.append(
            (
                label[system],
                f"{scores.token_f1:.4f}",
                f"{scores.exact_match:.4f}",
                f"{scores.rouge_l:.4f}",
                "-" if scores.gold_recall is None else f"{scores.gold_recall:.4f}",
                "-" if words is None else f"{words:.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        out("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n")
    for name, diff in report.differences.items():
        d = diff.get(metric)  # type: ignore[call-overload]
        if d is not None:
            out(
                f"  {name} {metric}: {d.mean:+.4f}, {d.confidence:.0%} interval "
                f"[{d.ci_low:+.4f}, {d.ci_high:+.4f}]\n"
            )
    out("\nHeld-out questions, answered side by side:\n")
    for q in report.questions[:SIDE_BY_SIDE]:
        out(f"  Q: {q.question}\n     reference: {q.reference}\n")
        for system in systems:
            out(f"     {system}: {' '.join(q.answers.get(system, '').split())}\n")


def _present_server(
    args: argparse.Namespace,
    model: DocModel,
    store: ObjectStore,
    revision: str,
    server: LocalServer,
    keep: bool,
) -> int:
    """Ask the served model one question, print how to call it, and serve on if asked to."""
    name = model.metadata.name
    layout = RevisionLayout(model.metadata.namespace, name, revision)
    question, reference = _sample_question(store, layout, args.question)
    out = sys.stdout.write
    out(f"Serving revision {revision} as model {name!r} at {server.url}/v1\n")
    try:
        answer = _ask(server.url, name, question)
        out(f"Q: {question}\nA: {answer}\n")
        if reference is not None:
            out(f"Reference answer (held out from training): {reference}\n")
        out(
            f"Try it with curl:\n  curl -s {server.url}/v1/chat/completions "
            "-H 'Content-Type: application/json' "
            f'-d \'{{"model": "{name}", "messages": '
            f'[{{"role": "user", "content": {json.dumps(question)}}}]}}\'\n'
            "or with the openai client:\n"
            f"  from openai import OpenAI\n"
            f'  client = OpenAI(base_url="{server.url}/v1", api_key="unused")\n'
            f"  reply = client.chat.completions.create(model={name!r}, "
            f'messages=[{{"role": "user", "content": {json.dumps(question)}}}])\n'
            "  print(reply.choices[0].message.content)\n"
        )
        if keep:
            out("Serving until Ctrl-C.\n")
            server.process.wait()
        return 0
    except KeyboardInterrupt:
        return 130


def _sample_question(
    store: ObjectStore, layout: RevisionLayout, given: str | None
) -> tuple[str, str | None]:
    """The question asked once serving: the given one, else the first held-out question."""
    if given:
        return given, None
    key = layout.key("dataset", EVAL)
    if store.exists(key):
        for line in store.get_bytes(key).decode().splitlines():
            if line.strip():
                pair = QAPair.model_validate_json(line)
                return pair.question, pair.answer
    return "What does this documentation cover?", None


def _ask(base: str, model: str, question: str) -> str:
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": question}],
            "max_tokens": 48,
            "temperature": 0,
        }
    ).encode()
    request = urllib.request.Request(
        f"{base}/v1/chat/completions", body, {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return str(json.load(response)["choices"][0]["message"]["content"]).strip()
