"""Write a tiny, randomly initialised Llama model and its tokenizer (no download).

docmodel-trainer tiny-model ./tiny-llama [--corpus docs/] [--hidden-size 64] [--layers 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from docmodel_trainer.tinymodel import build_tiny_llama


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", type=Path, help="directory to write the model into")
    parser.add_argument("--corpus", type=Path, help="text files to fit the tokenizer to")
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument(
        "--pretrain-steps",
        type=int,
        default=0,
        help="first train every weight on the corpus text for N steps (needs --corpus)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-format", choices=["text", "json"], default="text")


def run(args: argparse.Namespace) -> int:
    build_tiny_llama(
        args.output,
        corpus=args.corpus,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        pretrain_steps=args.pretrain_steps,
        seed=args.seed,
    )
    return 0
