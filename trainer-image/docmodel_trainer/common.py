"""What every trainer command shares: the job context, exit codes, logging and config files.

Every command takes the same job arguments:

    --docmodel FILE   the DocModel (YAML or JSON); or env DOCMODEL_MANIFEST holding it as JSON
    --store URI       the artifact store (s3://bucket/prefix or a directory); env DOCMODEL_STORE
    --revision ID     the revision to work on; env DOCMODEL_REVISION (ingest computes it if unset)
    --workdir DIR     scratch space, kept; env DOCMODEL_WORKDIR (else a temporary directory,
                      removed when the command ends)
    --config FILE     YAML whose keys are any of the command's flags (flags given win)

Source-bucket credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (the operator maps
the DocModel's secretRef into them); see `docmodel.artifacts.open_artifact_store` for the store.
"""

from __future__ import annotations

import argparse
import atexit
import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import SecretStr

from docmodel.api import DocModel, SpecError, parse_docmodel
from docmodel.artifacts import RevisionLayout, open_artifact_store

# Exit codes: meaningful to the operator, which reads them from the pod's status; what each
# means (retried or not) is one table, in `docmodel.failures`.
from docmodel.failures import EXIT_BAD_INPUT as EXIT_BAD_INPUT
from docmodel.failures import EXIT_NO_DATA as EXIT_NO_DATA
from docmodel.failures import EXIT_OK as EXIT_OK
from docmodel.failures import EXIT_STORAGE as EXIT_STORAGE
from docmodel.failures import EXIT_UNEXPECTED as EXIT_UNEXPECTED
from docmodel.failures import EXIT_UPSTREAM as EXIT_UPSTREAM
from docmodel.settings import EnvSettings, SettingsError
from docmodel.storage import ObjectStore

log = logging.getLogger("docmodel.trainer")


class JobSettings(EnvSettings):
    """What a Job's environment may give every trainer command (flags win over these).

    | Variable | Meaning |
    |---|---|
    | `DOCMODEL_MANIFEST` | the DocModel as JSON (instead of `--docmodel`) |
    | `DOCMODEL_STORE` | the artifact store URI (instead of `--store`) |
    | `DOCMODEL_REVISION` | the revision (instead of `--revision`) |
    | `DOCMODEL_WORKDIR` | a scratch directory that is kept (instead of `--workdir`) |
    | `DOCMODEL_LOG_FORMAT` | `text` or `json` (default of `--log-format`) |
    | `DOCMODEL_TEACHER_API_KEY` | the teacher endpoint's API key (never logged or stored) |
    """

    what: ClassVar[str] = "job environment"

    manifest: str | None = None
    store: str | None = None
    revision: str | None = None
    workdir: Path | None = None
    log_format: Literal["text", "json"] = "text"
    teacher_api_key: SecretStr | None = None

    @classmethod
    def read(cls) -> JobSettings:
        """The settings of this process's environment; a bad value fails as bad input."""
        try:
            return cls.from_env()
        except SettingsError as exc:
            raise JobError(str(exc), "BadEnv", 2) from None


class JobError(Exception):
    """A failure with a reason (CamelCase) and an exit code; the message is shown to users."""

    def __init__(self, message: str, reason: str = "Failed", exit_code: int = EXIT_UNEXPECTED):
        super().__init__(message)
        self.reason = reason
        self.exit_code = exit_code


@dataclass
class JobContext:
    docmodel: DocModel
    store: ObjectStore
    store_uri: str
    revision: str | None
    workdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.docmodel.metadata.namespace

    @property
    def name(self) -> str:
        return self.docmodel.metadata.name

    def layout(self, revision: str | None = None) -> RevisionLayout:
        rev = revision or self.revision
        if not rev:
            raise JobError("no revision given (--revision or DOCMODEL_REVISION)", "NoRevision", 2)
        return RevisionLayout(self.namespace, self.name, rev)


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("job")
    group.add_argument("--docmodel", type=Path, help="DocModel manifest (YAML or JSON)")
    group.add_argument("--store", help="artifact store URI (s3://bucket/prefix or a directory)")
    group.add_argument("--revision", help="revision id")
    group.add_argument("--workdir", type=Path, help="scratch directory")
    group.add_argument("--config", type=Path, help="YAML file of flag values")
    group.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=_log_format_default(),
    )


def _log_format_default() -> str:
    try:
        return JobSettings.read().log_format
    except JobError:
        return "text"  # the command fails on the bad variable when it reads its settings


def apply_config_file(
    parser: argparse.ArgumentParser,
    argv: list[str],
    commands: Mapping[str, argparse.ArgumentParser],
) -> argparse.Namespace:
    """Parse argv; values from --config fill the chosen command's flags not given on the command
    line. Keys are flag names, with dashes or underscores (`max-steps`, `max_steps`).

    The file's values become flags (`key: value` -> `--key=value`; `key: true` -> `--key`,
    `key: false` -> nothing) placed before the command line's own, so argparse checks them as it
    checks any flag and a flag given on the command line wins (the last one counts)."""
    args = parser.parse_args(argv)
    path = getattr(args, "config", None)
    if not path:
        return args
    try:
        values = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise JobError(f"cannot read config file {path}: {exc}", "BadConfig", 2) from None
    values = {} if values is None else values
    if not isinstance(values, dict):
        raise JobError(
            f"config file {path} must hold a mapping of flag names to values, "
            f"not {type(values).__name__}",
            "BadConfig",
            2,
        )
    tokens: list[str] = []
    for key, value in values.items():
        flag = "--" + str(key).replace("_", "-")
        if flag == "--config":
            raise JobError(f"config file {path} cannot name another config file", "BadConfig", 2)
        if isinstance(value, list | dict):
            raise JobError(f"config file {path}: {key} must be a single value", "BadConfig", 2)
        if value is True:
            tokens.append(flag)
        elif value is not False and value is not None:
            tokens.append(f"{flag}={value}")
    _, unknown = commands[args.command].parse_known_args(tokens, argparse.Namespace())
    names = sorted(
        str(k)
        for k in values
        if any(u.split("=")[0] == "--" + str(k).replace("_", "-") for u in unknown)
    )
    if names:
        raise JobError(
            f"config file {path} has unknown keys for command {args.command}: {', '.join(names)}",
            "BadConfig",
            2,
        )
    at = argv.index(args.command) + 1
    return parser.parse_args([*argv[:at], *tokens, *argv[at:]])


def load_docmodel(path: Path | None) -> DocModel:
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise JobError(f"cannot read DocModel {path}: {exc}", "BadDocModel", 2) from None
    elif (manifest := JobSettings.read().manifest) is not None:
        try:
            raw = json.loads(manifest)
        except json.JSONDecodeError as exc:
            raise JobError(f"DOCMODEL_MANIFEST is not JSON: {exc}", "BadDocModel", 2) from None
    else:
        raise JobError("no DocModel given (--docmodel or DOCMODEL_MANIFEST)", "BadDocModel", 2)
    try:
        return parse_docmodel(raw)
    except SpecError as exc:
        raise JobError(str(exc), "InvalidSpec", 2) from None


def configured_workdir() -> Path | None:
    """DOCMODEL_WORKDIR, when set: kept after the command, so a restarted pod resumes from it."""
    return JobSettings.read().workdir


def job_context(args: argparse.Namespace) -> JobContext:
    docmodel = load_docmodel(args.docmodel)
    settings = JobSettings.read()
    store_uri = args.store or settings.store
    if not store_uri:
        raise JobError("no artifact store given (--store or DOCMODEL_STORE)", "NoStore", 2)
    workdir = args.workdir or configured_workdir()
    if workdir is None:
        # The CLI gives every command a temporary directory, removed when the command ends;
        # a caller of a command's `run` without one gets one removed when the process exits.
        workdir = Path(tempfile.mkdtemp(prefix="docmodel-"))
        atexit.register(shutil.rmtree, workdir, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        store = open_artifact_store(store_uri)
    except ValueError as exc:
        raise JobError(str(exc), "BadStore", 2) from None
    return JobContext(
        docmodel=docmodel,
        store=store,
        store_uri=store.uri,
        revision=args.revision or settings.revision,
        workdir=workdir,
    )
