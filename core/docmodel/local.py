"""Local mode: the whole DocModel lifecycle on this machine, no cluster.

    docmodel local run                                  # embedded demo: tiny model, bundled docs
    docmodel local run --docmodel my.yaml --docs ./docs # your DocModel, docs from a directory
    docmodel local run --docmodel my.yaml               # docs from the DocModel's S3 source
    docmodel local run ... --keep-serving               # stay up and serve until Ctrl-C
    docmodel local serve [--revision REV]               # serve the promoted (or any trained) revision

The trainer commands run as local processes (`docmodel-trainer ingest|train|evaluate`) against
an artifact store directory (or S3), the pure gate decides, and a promoted revision is served on
localhost by `docmodel-server` with the same OpenAI-compatible API the cluster serves. What is
serving is remembered in `<store>/<namespace>/<name>/local-state.json`, so a second run compares
its candidate with the serving revision too, exactly as the operator does.

Without `--base-model`, the base model's name in the DocModel is used; `--base-model tiny`
(the demo's default) builds a tiny random Llama so the lifecycle runs on a CPU in minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from docmodel.api import SpecError, parse_docmodel
from docmodel.artifacts import RevisionLayout
from docmodel.dataset import EVAL, QAPair
from docmodel.gate import decide_report
from docmodel.report import EvalReport
from docmodel.storage import ObjectStore, StorageError, open_store, read_json, write_json

log = logging.getLogger("docmodel.local")

ROOT = Path(__file__).resolve().parents[2]
DEMO_DIR = ROOT / "examples" / "local"
DEFAULT_STORE = Path(os.environ.get("DOCMODEL_LOCAL_STORE", "~/.cache/docmodel/local-store"))
TINY_CACHE = Path("~/.cache/docmodel/models").expanduser()
TINY_BUILDER = ROOT / "trainer-image" / "docmodel_trainer" / "tinymodel.py"


class LocalRunError(RuntimeError):
    """A step failed (exit 1)."""


class BadInput(LocalRunError):
    """The DocModel, the documents directory or a flag is wrong (exit 2)."""


@dataclass
class Paths:
    docmodel: Path
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
        help="'tiny' builds a tiny random Llama; a path or model id overrides the DocModel's",
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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_step(name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
    log.info("Started step=%s", name)
    started = time.monotonic()
    result = subprocess.run(argv, env=env, check=False)
    if result.returncode != 0:
        raise LocalRunError(f"step {name} failed with exit code {result.returncode}")
    log.info("Finished step=%s seconds=%.1f", name, time.monotonic() - started)


def _trainer(*args: str) -> list[str]:
    return [sys.executable, "-m", "docmodel_trainer.cli", *args]


def _tiny_model() -> Path:
    """The demo's base model, cached under a key of its builder's code and the bundled docs."""
    digest = hashlib.sha256(TINY_BUILDER.read_bytes())
    for doc in sorted(p for p in (DEMO_DIR / "docs").rglob("*") if p.is_file()):
        digest.update(doc.relative_to(DEMO_DIR).as_posix().encode() + doc.read_bytes())
    path = TINY_CACHE / f"tiny-llama-{digest.hexdigest()[:12]}"
    if not (path / "config.json").exists():
        # The demo's base model: a tiny Llama that has read the bundled docs (a stand-in for
        # a real base model's pretraining); see docmodel_trainer.tinymodel.
        _run_step(
            "tiny-model",
            _trainer(
                "tiny-model",
                str(path),
                "--corpus",
                str(DEMO_DIR / "docs"),
                "--hidden-size",
                "128",
                "--pretrain-steps",
                "300",
            ),
        )
    return path


def _state_key(layout_root: str) -> str:
    return f"{layout_root}/local-state.json"


def _read_state(store: ObjectStore, key: str) -> dict[str, Any]:
    if store.exists(key):
        state: dict[str, Any] = read_json(store, key)
        return state
    return {"serving": None, "history": []}


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


def _prepare(args: argparse.Namespace) -> tuple[Paths, Any]:
    docmodel_path = args.docmodel or DEMO_DIR / "docmodel.yaml"
    docs = args.docs or (DEMO_DIR / "docs" if args.docmodel is None else None)
    if docs is not None and not docs.is_dir():
        raise BadInput(f"the documents directory {docs} does not exist")
    base_model = args.base_model or ("tiny" if args.docmodel is None else None)
    manifest = _load_manifest(docmodel_path)
    try:
        parse_docmodel(manifest)  # fail fast, naming the field, before any model is built
    except SpecError as exc:
        raise BadInput(f"{docmodel_path}: {exc}") from None
    if base_model == "tiny":
        manifest["spec"].setdefault("baseModel", {})["name"] = str(_tiny_model())
    elif base_model:
        manifest["spec"].setdefault("baseModel", {})["name"] = base_model
    model = parse_docmodel(manifest)
    if model.spec.evaluation.baseline.retriever != "bm25":
        raise BadInput(
            "spec.evaluation.baseline.retriever: only bm25 is implemented so far; "
            "the embedding retriever is not"
        )
    store = args.store or str(DEFAULT_STORE.expanduser())
    workdir = Path(tempfile.mkdtemp(prefix="docmodel-local-"))
    resolved = workdir / "docmodel.yaml"
    resolved.write_text(yaml.safe_dump(manifest, sort_keys=False))
    return Paths(resolved, docs, store, workdir), model


def _guarded(action: str, body: Callable[[], int]) -> int:
    """Run a local command: errors become one log line and an exit code, never a traceback."""
    try:
        return body()
    except BadInput as exc:
        log.error("Rejected local %s: %s", action, exc)
        return 2
    except (LocalRunError, StorageError) as exc:
        log.error("Failed local %s: %s", action, exc)
        return 1


def run_command(args: argparse.Namespace) -> int:
    return _guarded("run", lambda: _run(args))


def serve_command(args: argparse.Namespace) -> int:
    return _guarded("serve", lambda: _serve_revision(args))


def _serve_revision(args: argparse.Namespace) -> int:
    paths, model = _prepare(args)
    try:
        store = open_store(paths.store)
        ns, name = model.metadata.namespace, model.metadata.name
        state = _read_state(store, _state_key(f"{ns}/{name}"))
        if args.revision:
            layout = RevisionLayout(ns, name, args.revision)
            if not store.exists(layout.key("adapter", "manifest.json")):
                raise LocalRunError(
                    f"revision {args.revision} has no trained adapter at "
                    f"{layout.uri(paths.store, 'adapter')}"
                )
            serving = {"revision": args.revision, "adapter": layout.uri(paths.store, "adapter")}
        elif state.get("serving"):
            serving = state["serving"]
            layout = RevisionLayout(ns, name, serving["revision"])
        else:
            raise LocalRunError(
                f"no revision of {ns}/{name} has passed the gate in {paths.store}; "
                "run `docmodel local run` first, or pass --revision to inspect a candidate"
            )
        question, reference = _sample_question(store, layout, args.question)
        args.keep_serving = not args.once
        return _serve(args, model, serving, question, reference, paths.workdir)
    finally:
        shutil.rmtree(paths.workdir, ignore_errors=True)


def _run(args: argparse.Namespace) -> int:
    paths, model = _prepare(args)
    try:
        return _lifecycle(args, paths, model)
    finally:
        shutil.rmtree(paths.workdir, ignore_errors=True)


def _lifecycle(args: argparse.Namespace, paths: Paths, model: Any) -> int:
    store = open_store(paths.store)
    ns, name = model.metadata.namespace, model.metadata.name
    state_key = _state_key(f"{ns}/{name}")
    state = _read_state(store, state_key)
    job = ["--docmodel", str(paths.docmodel), "--store", paths.store]
    log.info("Started local run docmodel=%s/%s store=%s", ns, name, paths.store)

    revision_file = paths.workdir / "revision"
    ingest = ["ingest", *job, "--revision-file", str(revision_file)]
    if paths.docs:
        ingest += ["--source-dir", str(paths.docs)]
    _run_step("ingest", _trainer(*ingest, "--workdir", str(paths.workdir / "ingest")))
    revision = revision_file.read_text().strip()
    layout = RevisionLayout(ns, name, revision)
    log.info("Resolved revision=%s", revision)

    if store.exists(layout.key("adapter", "manifest.json")):
        log.info("Reused adapter revision=%s (already trained)", revision)
    else:
        _run_step(
            "train",
            _trainer(
                "train", *job, "--revision", revision, "--workdir", str(paths.workdir / "train")
            ),
        )
    serving = state.get("serving")
    evaluate = ["evaluate", *job, "--revision", revision, "--workdir", str(paths.workdir / "eval")]
    if serving and serving["revision"] != revision:
        evaluate += ["--serving-revision", serving["revision"]]
    _run_step("evaluate", _trainer(*evaluate))

    report = EvalReport.model_validate_json(store.get_bytes(layout.key("eval", "report.json")))
    verdict = decide_report(report, model.spec.evaluation)
    log.info("Decided verdict=%s reason=%s: %s", verdict.name, verdict.reason, verdict.message)
    state["history"].insert(
        0,
        {
            "revision": revision,
            "verdict": verdict.name,
            "reason": verdict.message,
            "report": layout.uri(paths.store, "eval", "report.html"),
        },
    )
    state["history"] = state["history"][: model.spec.history_limit]
    if verdict.promoted:
        state["serving"] = {"revision": revision, "adapter": layout.uri(paths.store, "adapter")}
    write_json(store, state_key, state)
    sys.stdout.write(
        f"\nRevision {revision}: {verdict.name} — {verdict.message}\n"
        f"Report: {layout.uri(paths.store, 'eval', 'report.html')}\n"
    )
    if not state.get("serving"):
        sys.stdout.write(
            "Nothing is serving: no revision has passed the gate yet. To try this candidate "
            f"anyway (it stays unpromoted): docmodel local serve --revision {revision}"
            + ("" if args.docmodel is None else f" --docmodel {args.docmodel}")
            + f" --store {paths.store}\n"
        )
        return 0
    if not verdict.promoted:
        sys.stdout.write(f"Still serving revision {state['serving']['revision']}.\n")
    question, reference = _sample_question(store, layout, args.question)
    return _serve(args, model, state["serving"], question, reference, paths.workdir)


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


def _serve(
    args: argparse.Namespace,
    model: Any,
    serving: dict[str, str],
    question: str,
    reference: str | None,
    workdir: Path,
) -> int:
    port = args.port or _free_port()
    env = dict(os.environ)
    env.update(
        {
            "DOCMODEL_ENGINE": "local",
            "DOCMODEL_SERVED_NAME": model.metadata.name,
            "DOCMODEL_BASE_MODEL": model.spec.base_model.name,
            "DOCMODEL_ADAPTER_URI": serving["adapter"],
            "DOCMODEL_HOST": "127.0.0.1",
            "DOCMODEL_WORKDIR": str(workdir / "server"),
            "DOCMODEL_PORT": str(port),
            "DOCMODEL_MAX_LORA_RANK": str(model.spec.training.lora.r),
            "DOCMODEL_MAX_MODEL_LEN": str(model.spec.serving.max_model_len),
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "docmodel_server.cli"], env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, server, model.metadata.name)
        sys.stdout.write(
            f"Serving revision {serving['revision']} as model {model.metadata.name!r} at "
            f"{base}/v1\n"
        )
        answer = _ask(base, model.metadata.name, question)
        sys.stdout.write(f"Q: {question}\nA: {answer}\n")
        if reference is not None:
            sys.stdout.write(f"Reference answer (held out from training): {reference}\n")
        sys.stdout.write(
            f"Try it: curl -s {base}/v1/chat/completions -H 'Content-Type: application/json' "
            f'-d \'{{"model": "{model.metadata.name}", "messages": '
            f'[{{"role": "user", "content": "..."}}]}}\'\n'
        )
        if args.keep_serving:
            sys.stdout.write("Serving until Ctrl-C.\n")
            server.wait()
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)


def _wait_ready(base: str, server: subprocess.Popen[bytes], served_name: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise LocalRunError(f"the server exited with code {server.returncode} before ready")
        try:
            with urllib.request.urlopen(f"{base}/v1/models", timeout=5) as response:
                names = [m["id"] for m in json.load(response)["data"]]
                if served_name in names:
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(1)
    raise LocalRunError(f"the server at {base} was not ready within 300s")


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
