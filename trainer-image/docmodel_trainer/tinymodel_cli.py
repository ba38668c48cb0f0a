"""Write a tiny, randomly initialised Llama model and its tokenizer (no download).

docmodel-trainer tiny-model ./tiny-llama [--corpus docs/] [--hidden-size 64] [--layers 2]
docmodel-trainer tiny-model --cache-dir ~/.cache/docmodel/models --corpus docs/ ...
    # built once under a key of this builder's code, the settings and the corpus; prints the path
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from docmodel_trainer import tinymodel
from docmodel_trainer.tinymodel import build_tiny_llama


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, nargs="?", help="directory to write the model into")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="instead of OUTPUT: build under DIR/tiny-llama-<key> (key: this builder's code, the "
        "settings and the corpus files), reuse it when it exists, and print its path",
    )
    parser.add_argument("--corpus", type=Path, help="text files to fit the tokenizer to")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-format", choices=["text", "json"], default="text")


SETTINGS = ("vocab_size", "hidden_size", "layers", "seed")


def cache_key(args: argparse.Namespace) -> str:
    """What the model depends on: the builder's code, the settings and the corpus files."""
    digest = hashlib.sha256(Path(tinymodel.__file__).read_bytes())
    digest.update(repr([getattr(args, name) for name in SETTINGS]).encode())
    if args.corpus is not None:
        corpus = Path(args.corpus)
        files = (
            [corpus] if corpus.is_file() else sorted(p for p in corpus.rglob("*") if p.is_file())
        )
        for path in files:
            digest.update(path.relative_to(corpus.parent).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def run(args: argparse.Namespace) -> int:
    if (args.output is None) == (args.cache_dir is None):
        sys.stderr.write("give an output directory or --cache-dir, not both\n")
        return 2
    if args.cache_dir is not None:
        args.output = Path(args.cache_dir).expanduser() / f"tiny-llama-{cache_key(args)}"
        if (args.output / "config.json").exists():
            sys.stdout.write(f"{args.output}\n")
            return 0
    build_tiny_llama(
        args.output,
        corpus=args.corpus,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        seed=args.seed,
    )
    if args.cache_dir is not None:
        sys.stdout.write(f"{args.output}\n")
    return 0
