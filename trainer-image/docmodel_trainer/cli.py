"""`docmodel-trainer`: the workloads the operator's Jobs run (and local mode runs as processes).

    docmodel-trainer ingest   --docmodel dm.yaml --store ./artifacts
    docmodel-trainer train    --docmodel dm.yaml --store ./artifacts --revision <rev>
    docmodel-trainer evaluate --docmodel dm.yaml --store ./artifacts --revision <rev>
    docmodel-trainer tiny-model ./tiny-llama
    docmodel-trainer base-model HuggingFaceTB/SmolLM2-135M-Instruct

Each command lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Exit codes are listed in `docmodel_trainer.common`.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
import tempfile
from pathlib import Path

from docmodel.logs import setup_logging
from docmodel_trainer.common import (
    EXIT_STORAGE,
    JobError,
    apply_config_file,
    configured_workdir,
)

COMMANDS = {
    "ingest": ("docmodel_trainer.ingest", "Fetch and parse the docs; build the QA dataset."),
    "train": ("docmodel_trainer.train", "Fine-tune a LoRA/QLoRA adapter on the dataset."),
    "evaluate": (
        "docmodel_trainer.evaluate",
        "Score the candidate against the RAG baseline (and what serves now).",
    ),
    "tiny-model": ("docmodel_trainer.tinymodel_cli", "Write a tiny random Llama for tests."),
    "base-model": (
        "docmodel_trainer.basemodel_cli",
        "Resolve (and convert or download once) a base model; print its directory.",
    ),
}

log = logging.getLogger("docmodel.trainer")


def build_parser(
    only: str | None = None,
) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The parser and each command's own parser (whose flags `--config` may set); with `only`,
    just that command's module is imported.

    Importing every command would make `ingest` pay for `train`'s torch/transformers import
    (over ten seconds), so each command's module is loaded only when it runs.
    """
    parser = argparse.ArgumentParser(prog="docmodel-trainer", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = {}
    for name, (module_name, help_text) in COMMANDS.items():
        if only is not None and name != only:
            commands[name] = sub.add_parser(name, help=help_text)
            continue
        module = importlib.import_module(module_name)
        child = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(child)
        child.set_defaults(_module=module)
        commands[name] = child
    return parser, commands


def _command_in(argv: list[str]) -> str | None:
    return next((arg for arg in argv if arg in COMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, commands = build_parser(only=_command_in(argv) or "")
    try:
        args = apply_config_file(parser, argv, commands)
    except JobError as exc:
        setup_logging()
        log.error("Rejected arguments reason=%s: %s", exc.reason, exc)
        return exc.exit_code
    setup_logging(getattr(args, "log_format", "text"))
    with contextlib.ExitStack() as scratch:
        if hasattr(args, "workdir") and args.workdir is None and configured_workdir() is None:
            # Checkpoints, datasets and model copies: removed when the command ends. A given
            # --workdir or DOCMODEL_WORKDIR is kept, so a restarted pod resumes from it.
            args.workdir = Path(
                scratch.enter_context(
                    tempfile.TemporaryDirectory(prefix="docmodel-", ignore_cleanup_errors=True)
                )
            )
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return int(args._module.run(args))
    except JobError as exc:
        log.error("Failed command=%s reason=%s: %s", args.command, exc.reason, exc)
        return exc.exit_code
    except KeyboardInterrupt:
        log.error("Interrupted command=%s", args.command)
        return 130
    except Exception as exc:
        from docmodel.storage import StorageError

        if isinstance(exc, StorageError):
            log.error("Failed command=%s reason=%s: %s", args.command, exc.reason, exc)
            return EXIT_STORAGE
        raise


if __name__ == "__main__":
    raise SystemExit(main())
