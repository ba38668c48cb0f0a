"""Retrieval in front of the model, for a retrieval revision (its adapter carries a passage
index: `docmodel.retrieval`): the last user message of every chat request to the served name
is the query, and it is replaced by the core's context prompt (the same builder training and
evaluation use), fitted to what the context leaves after the answer. Every chat request to the
served name gets the core's system message unless it sends its own (`with_system`), as in
training and evaluation. Completions and requests to the base model's name are passed as sent.
Clients change nothing.

The retriever is the one the revision was trained with (`retrieval.json`: BM25, Dense or
Hybrid). For Dense and Hybrid the passages' embeddings come with the adapter; only the query is
embedded, on the CPU, by the same embedding model (`docmodel_embedding`, found like the base
model; `DOCMODEL_EMBEDDING_MODEL_MIRROR` names its S3 mirror), which must match the index's
(name, dimensions, content digest) or the server does not start.

With `DOCMODEL_PROMPT_LOG` set, every chat request's final messages (what the model is given)
and the ids of the passages retrieved for it are appended to that file as JSON lines.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from docmodel.api import EmbeddingModelSpec
from docmodel.retrieval import (
    ChatTemplateTokens,
    ContextBuilder,
    RetrievalIndex,
    read_index,
    read_vectors,
    with_system,
)
from docmodel.search import QueryEncoder, check_embedding, open_retriever

log = logging.getLogger("docmodel.server")

Messages = list[dict[str, str]]


def answer_reserve(max_model_len: int, max_tokens: int | None) -> int:
    """Tokens kept free for the answer: the request's max_tokens, else a quarter of the
    context (at most 256)."""
    return max_tokens if max_tokens is not None else min(256, max_model_len // 4)


class EmbeddingSource:
    """Where the server finds a retrieval revision's embedding model besides the places every
    model is looked for (`docmodel.basemodel.locate`): an S3 mirror, downloaded into
    `workdir`."""

    def __init__(self, workdir: Path, mirror: str | None = None, endpoint: str | None = None):
        self.workdir = workdir
        self.mirror = mirror
        self.endpoint = endpoint


def query_encoder(index: RetrievalIndex, source: EmbeddingSource) -> QueryEncoder | None:
    """The embedding model the passages were embedded with, checked against the index (None
    for BM25). A missing or different model is a `ValueError` naming it."""
    if index.embedding is None:
        return None
    import docmodel_embedding

    spec = EmbeddingModelSpec(name=index.embedding.name, mirror=source.mirror)
    encoder = docmodel_embedding.load(spec, source.workdir, source.endpoint)
    check_embedding(index.embedding, encoder.info)
    return encoder


class RequestContext:
    """What happens to a chat request's messages before the model sees them."""

    def __init__(
        self, builder: ContextBuilder | None, max_model_len: int, prompt_log: Path | None = None
    ):
        self.builder = builder
        self.max_model_len = max_model_len
        self.prompt_log = prompt_log
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        adapter_dir: Path,
        tokenizer: Any,
        max_model_len: int,
        prompt_log: Path | None,
        embedding: EmbeddingSource | None = None,
    ) -> RequestContext:
        """Retrieval when the adapter carries an index, else messages pass as sent."""
        found = read_index(adapter_dir)
        builder = None
        if found is not None:
            index, passages = found
            encoder = query_encoder(index, embedding or EmbeddingSource(adapter_dir.parent))
            retriever = open_retriever(
                index.retriever, passages, read_vectors(adapter_dir, index), encoder
            )
            builder = ContextBuilder(index, retriever, ChatTemplateTokens(tokenizer))
            log.info(
                "Loaded retrieval index passages=%d top_k=%d retriever=%s embedding_model=%s",
                len(passages),
                index.top_k,
                index.retriever,
                index.embedding.name if index.embedding else "none",
            )
        return cls(builder, max_model_len, prompt_log)

    @property
    def retrieves(self) -> bool:
        return self.builder is not None

    def messages(
        self, request_id: str, model: str, messages: Messages, adapter: bool, max_tokens: int | None
    ) -> Messages:
        """The messages the model is given for this request (and the prompt log's record)."""
        passages: list[str] = []
        if self.builder is not None and adapter:
            budget = self.max_model_len - answer_reserve(self.max_model_len, max_tokens)
            messages, hits = self.builder.build(messages, budget)
            passages = [c.id for c in hits]
        elif adapter:
            messages = with_system(messages)  # the system message the revision was trained with
        if self.prompt_log is not None:
            record = {"id": request_id, "model": model, "messages": messages, "passages": passages}
            with self._lock, self.prompt_log.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
        return messages
