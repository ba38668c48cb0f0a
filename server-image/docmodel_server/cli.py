"""`docmodel-server`: the serving image's entrypoint.

    docmodel-server [serve] [--engine auto|vllm|local] [--host H] [--port P] [--dry-run]
    docmodel-server probe --ready      # exit 0 when /health is 200 and the served name is listed
    docmodel-server probe --live       # exit 0 when /health is 200
    docmodel-server front --adapter DIR --upstream URL [--host H] [--port P]
                                       # retrieval in front of an OpenAI-compatible server

`serve` reads its configuration from `DOCMODEL_*` variables (see `docmodel_server.settings`),
fetches the revision's adapter (and the base model when it is mirrored), then either replaces
itself with `vllm serve` (GPU present and vLLM installed, or `--engine vllm`) or runs the local
transformers + peft server. `--dry-run` prints the vLLM command line instead of running it.
A retrieval revision (its adapter carries a passage index) retrieves for every chat request: in
the local server itself, or, with vLLM, in a front process on DOCMODEL_PORT with vLLM behind it
on loopback (DOCMODEL_UPSTREAM_PORT). See `docmodel_server.context` and `docmodel_server.front`.

Exit codes: 0 ok; 1 unexpected failure (for example a base model that cannot be loaded);
2 invalid configuration; 4 the adapter or base model could not be fetched. A server that fails
to start never answers its readiness probe.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path
from typing import Any

from docmodel import basemodel
from docmodel.api import BaseModelSpec
from docmodel.failures import EXIT_BAD_INPUT, EXIT_OK, EXIT_STORAGE, EXIT_UNEXPECTED
from docmodel.logs import setup_logging
from docmodel.retrieval import read_index
from docmodel_server.probe import check_live, check_ready
from docmodel_server.settings import ServerSettings, SettingsError

# Serving imports are deferred to `serve`, so that `probe` (run every few seconds by the
# kubelet) starts quickly.

log = logging.getLogger("docmodel.server")


def choose_engine(requested: str, dry_run: bool = False) -> tuple[str, str]:
    """(`vllm` or `local`, why). A dry run may print the vLLM command where vLLM is missing."""
    from docmodel_server.vllm_engine import gpu_present, vllm_installed

    if requested == "local":
        return "local", "requested"
    if requested == "vllm":
        if not dry_run and not vllm_installed():
            raise SettingsError("DOCMODEL_ENGINE=vllm but vLLM is not installed in this image")
        return "vllm", "requested"
    if not vllm_installed():
        return "local", "vLLM is not installed"
    if not gpu_present():
        return "local", "no GPU is visible"
    return "vllm", "vLLM is installed and a GPU is visible"


def local_base_model(name: str) -> str:
    """The base model as the trainer resolved it (`docmodel.basemodel.locate`): a directory,
    the model cache, else the Hub id. A packaged model the trainer has not converted yet is an
    error that says how to convert it (the server never converts: the trainer did, to train)."""
    from docmodel_server.model_files import FetchError

    found = basemodel.locate(BaseModelSpec(name=name))
    if found.kind == "package":
        raise FetchError(
            f"base model {name} is packaged but not converted into the model cache "
            f"{found.path}; run `docmodel-trainer base-model {name}` first"
        )
    if found.path is not None:
        log.info("Resolved base model name=%s source=%s path=%s", name, found.kind, found.path)
        return str(found.path)
    return name


def serve(args: argparse.Namespace) -> int:
    from docmodel.modelfacts import adapter_facts
    from docmodel_server.model_files import fetch_adapter, fetch_base_model
    from docmodel_server.vllm_engine import build_vllm_argv, build_vllm_env, exec_vllm

    settings = ServerSettings.from_env(engine=args.engine, host=args.host, port=args.port)
    engine, why = choose_engine(settings.engine, args.dry_run)
    log.info(
        "Chose engine=%s reason=%r served_name=%s revision=%s",
        engine,
        why,
        settings.served_name,
        settings.revision,
    )
    adapter_dir, _ = fetch_adapter(settings.adapter_uri, settings.workdir / "adapter")
    if settings.base_model_mirror:
        model = str(
            fetch_base_model(
                settings.base_model_mirror,
                settings.workdir / "base",
                settings.base_model_mirror_endpoint,
            )
        )
    else:
        model = local_base_model(settings.base_model)
    if engine == "vllm":
        front = settings.retrieval and read_index(adapter_dir) is not None
        upstream_port = settings.upstream_port or settings.port + 1
        vllm_settings = (
            settings.model_copy(update={"host": "127.0.0.1", "port": upstream_port})
            if front
            else settings
        )
        argv = build_vllm_argv(vllm_settings, model, adapter_dir, adapter_facts(adapter_dir).rank)
        if args.dry_run:
            sys.stdout.write(shlex.join(argv) + "\n")
            if front:
                sys.stdout.write(
                    f"front on {settings.host}:{settings.port} -> http://127.0.0.1:{upstream_port}\n"
                )
            return EXIT_OK
        if front:
            return serve_front_of_vllm(settings, adapter_dir, argv, upstream_port)
        exec_vllm(argv, build_vllm_env(settings))
        return EXIT_UNEXPECTED  # not reached: exec replaced this process
    return serve_local(settings, model, adapter_dir)


def serve_front_of_vllm(
    settings: ServerSettings, adapter_dir: Path, argv: list[str], upstream_port: int
) -> int:
    """vLLM as a child on loopback, the front process here on the public port; when either
    stops, so does the other."""
    import subprocess
    import threading

    from docmodel_server.vllm_engine import build_vllm_env

    child = subprocess.Popen(argv, env=build_vllm_env(settings))
    log.info("Started vLLM behind the front pid=%d port=%d", child.pid, upstream_port)
    server = _front_server(settings, adapter_dir, f"http://127.0.0.1:{upstream_port}")

    def stop_with_child() -> None:
        child.wait()
        server.should_exit = True

    threading.Thread(target=stop_with_child, daemon=True).start()
    server.run()
    if child.poll() is None:
        child.terminate()
        child.wait(timeout=60)
    return EXIT_OK if child.returncode in (0, None, -15) else EXIT_UNEXPECTED


def _front_server(settings: ServerSettings, adapter_dir: Path, upstream: str) -> Any:
    import uvicorn
    from transformers import AutoTokenizer

    from docmodel_server.context import RequestContext
    from docmodel_server.front import create_front

    tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
    context = RequestContext.load(
        adapter_dir,
        tokenizer,
        settings.max_model_len,
        settings.prompt_log,
        settings.embedding_source(),
    )
    if not context.retrieves:
        raise SettingsError(f"{adapter_dir} carries no passage index: nothing to put in front")
    app = create_front(upstream, settings.served_name, context)
    log.info(
        "Started front model=%s url=http://%s:%d upstream=%s",
        settings.served_name,
        settings.host,
        settings.port,
        upstream,
    )
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False
    )
    return uvicorn.Server(config)


def front(args: argparse.Namespace) -> int:
    """`docmodel-server front`: retrieval in front of an upstream server."""
    settings = ServerSettings.from_env(
        host=args.host, port=args.port, served_name=args.served_name, adapter_uri=str(args.adapter)
    )
    _front_server(settings, args.adapter, args.upstream).run()
    return EXIT_OK


def serve_local(settings: ServerSettings, model: str, adapter_dir: Path) -> int:
    import uvicorn

    from docmodel_server.app import create_app
    from docmodel_server.context import RequestContext
    from docmodel_server.engine import LocalEngine

    try:
        engine = LocalEngine.load(
            model,
            adapter_dir,
            settings.max_model_len,
            settings.max_batch_size,
            settings.torch_threads,
        )
    except (OSError, ValueError) as exc:
        log.error("Failed to load model base=%s adapter=%s error=%s", model, adapter_dir, exc)
        return EXIT_UNEXPECTED
    context = (
        RequestContext.load(
            adapter_dir,
            engine.tokenizer,
            engine.max_model_len,
            settings.prompt_log,
            settings.embedding_source(),
        )
        if settings.retrieval
        else RequestContext(None, engine.max_model_len, settings.prompt_log)
    )
    engine.start()
    app = create_app(
        engine,
        served_name=settings.served_name,
        base_name=settings.base_model,
        api_key=settings.api_key_value,
        revision=settings.revision,
        context=context,
    )
    log.info(
        "Started local server model=%s url=http://%s:%d auth=%s retrieval=%s",
        settings.served_name,
        settings.host,
        settings.port,
        "on" if settings.api_key else "off",
        "on" if context.retrieves else "off",
    )
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
    engine.stop()
    return EXIT_OK


def probe(args: argparse.Namespace) -> int:
    settings = ServerSettings.from_env()
    url = args.url or settings.local_url
    if args.live:
        result = check_live(url, args.timeout)
    else:
        result = check_ready(url, settings.served_name, settings.api_key_value, args.timeout)
    (sys.stdout if result.ok else sys.stderr).write(result.reason + "\n")
    return EXIT_OK if result.ok else EXIT_UNEXPECTED


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="docmodel-server", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("serve", help="Fetch the adapter and serve it (the default).")
    run.add_argument(
        "--engine", choices=["auto", "vllm", "local"], help="overrides DOCMODEL_ENGINE"
    )
    run.add_argument("--host", help="overrides DOCMODEL_HOST")
    run.add_argument("--port", type=int, help="overrides DOCMODEL_PORT")
    run.add_argument("--dry-run", action="store_true", help="print the vLLM command, run nothing")
    check = sub.add_parser("probe", help="Readiness or liveness check, for exec probes.")
    which = check.add_mutually_exclusive_group(required=True)
    which.add_argument("--ready", action="store_true", help="/health ok and the model listed")
    which.add_argument("--live", action="store_true", help="/health ok")
    check.add_argument("--url", help="server base URL (default: from DOCMODEL_HOST/PORT)")
    check.add_argument("--timeout", type=float, default=2.0, help="seconds per HTTP request")
    ahead = sub.add_parser("front", help="Retrieval in front of an OpenAI-compatible server.")
    ahead.add_argument("--adapter", type=Path, required=True, help="a retrieval adapter directory")
    ahead.add_argument("--upstream", required=True, help="the server's base URL")
    ahead.add_argument("--served-name", help="overrides DOCMODEL_SERVED_NAME")
    ahead.add_argument("--host", help="overrides DOCMODEL_HOST")
    ahead.add_argument("--port", type=int, help="overrides DOCMODEL_PORT")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        argv = ["serve", *argv]
    args = build_parser().parse_args(argv)
    if args.command == "probe":
        try:
            return probe(args)
        except SettingsError as exc:
            sys.stderr.write(f"{exc}\n")
            return EXIT_BAD_INPUT
    from docmodel.storage import StorageError
    from docmodel_server.model_files import FetchError

    setup_logging()
    try:
        return front(args) if args.command == "front" else serve(args)
    except SettingsError as exc:
        log.error("Failed to start: %s", exc)
        return EXIT_BAD_INPUT
    except (FetchError, StorageError) as exc:
        log.error("Failed to start: %s", exc)
        return EXIT_STORAGE
    except ValueError as exc:
        log.error("Failed to start: %s", exc)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    raise SystemExit(main())
