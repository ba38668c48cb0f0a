"""`docmodel`: the user-facing command.

docmodel validate examples/*.yaml     check DocModel manifests as the API server would
docmodel crd [--check]                render the CRD from the API models
docmodel local run [options]          the whole lifecycle on this machine (see `local`)
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from docmodel import api, crd
from docmodel.logs import setup_logging

log = logging.getLogger("docmodel")


def _validate(paths: list[Path]) -> int:
    failures = 0
    for path in paths:
        try:
            documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (OSError, yaml.YAMLError) as exc:
            sys.stderr.write(f"{path}: cannot read: {exc}\n")
            failures += 1
            continue
        if not documents:
            sys.stderr.write(f"{path}: no YAML document found\n")
            failures += 1
        for document in documents:
            try:
                model = api.parse_docmodel(document)
            except api.SpecError as exc:
                failures += 1
                sys.stderr.write(f"{path}: {exc}\n")
                continue
            spec = model.spec
            sys.stdout.write(
                f"{path}: valid DocModel {model.metadata.namespace}/{model.metadata.name} "
                f"(source s3://{spec.source.bucket}/{spec.source.prefix}, "
                f"base {spec.base_model.name}, {spec.training.method}, "
                f"gate {spec.evaluation.metric} +{spec.evaluation.min_improvement})\n"
            )
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="docmodel", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = sub.add_parser("validate", help="validate DocModel manifests")
    validate.add_argument("paths", nargs="+", type=Path)
    render = sub.add_parser("crd", help="render the CRD from the API models")
    render.add_argument("--check", action="store_true")
    render.add_argument("--output", type=Path, default=crd.default_path())
    from docmodel_local import commands as local

    local.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = build_parser().parse_args(argv)
    if args.command == "validate":
        return _validate(args.paths)
    if args.command == "crd":
        return crd.main(["--output", str(args.output)] + (["--check"] if args.check else []))
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
