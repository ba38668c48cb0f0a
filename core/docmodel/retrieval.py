"""The prompts every system answers, and a retrieval revision's passage index: one builder
for training, evaluation and serving, so the three can never format context differently.

The retrievers are `docmodel.search`'s (BM25, Dense, Hybrid), over the passages of
`chunks.jsonl`, headings included. The RAG baseline, a retrieval candidate and a server of a
retrieval revision all use the spec's retriever (`evaluation.baseline.retriever`) with the same
top-k. The query is the question (in serving: the last user message).

Two prompt shapes, both opening with the same system message (`SYSTEM_PROMPT`):
- `question_messages`: the bare question (closed-book systems: the base model alone, a
  closed-book candidate, a closed-book serving revision);
- `context_messages`: an instruction, the passages (each with its document and heading path),
  then the question (the baseline and retrieval candidates).

`fit_context_messages` cuts the passages to a token budget, best first, with the caller's
tokenizer given as two functions, so the core needs no ML library.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from pydantic import BaseModel, Field

from docmodel.dataset import Chunk, read_jsonl, write_jsonl
from docmodel.search import (
    EMBEDDINGS_FILE,
    EmbeddingInfo,
    Retriever,
    RetrieverKind,
    load_vectors,
)

log = logging.getLogger("docmodel.retrieval")

# Every system (the base model closed-book, the RAG baseline, a candidate of either kind, a
# served revision) gets this system message, so none is prompted better than another: a
# fine-tune must win on what it knows, not on an instruction the baseline lacked.
SYSTEM_PROMPT = (
    "Answer questions about the organisation's documentation with the answer only, in a "
    "short phrase or sentence."
)
CONTEXT_INSTRUCTION = "Answer the question from the passages below."
NO_PASSAGE = "(no passage matched the question)"

Messages = list[dict[str, str]]


class PassageLike(Protocol):
    """What the prompt shows of a passage (`docmodel.dataset.Chunk` is one)."""

    @property
    def source(self) -> str: ...
    @property
    def heading_path(self) -> list[str]: ...
    @property
    def text(self) -> str: ...


def with_system(messages: Sequence[dict[str, str]]) -> Messages:
    """The conversation with `SYSTEM_PROMPT` first, unless it already starts with a system
    message (a client's own instruction is kept as sent)."""
    out = [dict(m) for m in messages]
    if out and out[0].get("role") == "system":
        return out
    return [{"role": "system", "content": SYSTEM_PROMPT}, *out]


def question_messages(question: str) -> Messages:
    """What a closed-book system sees: the system message, then the question alone."""
    return with_system([{"role": "user", "content": question}])


def context_messages(
    question: str, passages: Sequence[PassageLike], texts: Sequence[str] | None = None
) -> Messages:
    """What a system with retrieval sees: the system message, then the instruction, the
    retrieved passages (or `texts`, trimmed versions of their texts) and the question."""
    return with_system([{"role": "user", "content": context_prompt(question, passages, texts)}])


def context_prompt(
    question: str, passages: Sequence[PassageLike], texts: Sequence[str] | None = None
) -> str:
    blocks = []
    for i, chunk in enumerate(passages, start=1):
        heading = " > ".join(chunk.heading_path)
        title = f"{chunk.source}" + (f" ({heading})" if heading else "")
        text = chunk.text if texts is None else texts[i - 1]
        blocks.append(f"Passage {i} [{title}]:\n{text.strip()}")
    context = "\n\n".join(blocks) if blocks else NO_PASSAGE
    return f"{CONTEXT_INSTRUCTION}\n\n{context}\n\nQuestion: {question}"


MIN_TRIMMED_TOKENS = 16


class TokenCounter(Protocol):
    """The model's tokenizer as the prompt fitter needs it."""

    def prompt_tokens(self, messages: Messages) -> int:
        """Tokens of the whole prompt as the model sees it (chat template applied)."""
        ...

    def cut(self, text: str, tokens: int) -> tuple[str, int]:
        """`text` cut to its first `tokens` tokens, and how many tokens `text` has."""
        ...


def fit_context_messages(
    counter: TokenCounter,
    question: str,
    passages: Sequence[PassageLike],
    budget: int,
) -> tuple[Messages, bool]:
    """The context prompt within `budget` tokens, and whether it had to be trimmed. Passages
    are kept whole in rank order; the first that does not fit is cut to the tokens left (when
    at least `MIN_TRIMMED_TOKENS` are) and the rest are left out, so the best passages reach
    the model intact instead of being cut by the model."""
    messages = context_messages(question, passages)
    if counter.prompt_tokens(messages) <= budget:
        return messages, False
    kept: list[PassageLike] = []
    texts: list[str] = []
    for chunk in passages:
        trial = context_messages(question, [*kept, chunk], [*texts, chunk.text])
        used = counter.prompt_tokens(trial)
        if used <= budget:
            kept.append(chunk)
            texts.append(chunk.text)
            continue
        _, total = counter.cut(chunk.text, 0)
        left = total - (used - budget)
        while left >= MIN_TRIMMED_TOKENS:
            cut, _ = counter.cut(chunk.text, left)
            trial = context_messages(question, [*kept, chunk], [*texts, cut])
            over = counter.prompt_tokens(trial) - budget
            if over <= 0:
                kept.append(chunk)
                texts.append(cut)
                break
            left -= max(over, 1)  # decoding and re-encoding can shift a few tokens
        break
    return context_messages(question, kept, texts), True


class ChatTemplateTokens:
    """`TokenCounter` over a Hugging Face tokenizer (duck-typed: the core imports no ML
    library): prompts are counted as the answerers and the servers encode them, the chat
    template with the generation prompt."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def prompt_tokens(self, messages: Messages) -> int:
        encoded = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return len(encoded["input_ids"])

    def cut(self, text: str, tokens: int) -> tuple[str, int]:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return self.tokenizer.decode(ids[:tokens], skip_special_tokens=True), len(ids)


def last_user_message(messages: Sequence[dict[str, str]]) -> int | None:
    """The index of the last user message (the retrieval query in serving), if any."""
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return None


# ----------------------------------------------------------------------------------------------
# The passage index a retrieval revision carries (in its adapter directory, so the adapter's
# manifest covers it and the server fetches it with the adapter).
# ----------------------------------------------------------------------------------------------

INDEX_FILE = "retrieval.json"
PASSAGES_FILE = "passages.jsonl"


class RetrievalIndex(BaseModel):
    """How a retrieval revision retrieves: what it was trained with and must be served with.
    With an embedding model (Dense, Hybrid), the passages' embeddings are in `embeddings.npy`
    beside it, copied from the dataset's passage index: the server embeds queries only."""

    kind: Literal["Retrieval"] = "Retrieval"
    retriever: RetrieverKind
    top_k: int = Field(ge=1)
    embedding: EmbeddingInfo | None = None
    passages: int = Field(ge=1, description="Passages in passages.jsonl (all, unseen included).")
    documents_not_trained: list[str] = Field(
        default_factory=list,
        description="Documents kept out of training (still retrieved from), for the guard.",
    )


def write_index(
    directory: Path,
    index: RetrievalIndex,
    chunks: Sequence[Chunk],
    vectors: np.ndarray | None = None,
) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / PASSAGES_FILE, chunks)
    if index.embedding is not None:
        if vectors is None or vectors.shape != (len(chunks), index.embedding.dimensions):
            raise ValueError(f"retriever {index.retriever} needs one embedding per passage")
        np.save(directory / EMBEDDINGS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
    (directory / INDEX_FILE).write_text(index.model_dump_json(indent=2) + "\n")


def read_vectors(directory: Path, index: RetrievalIndex) -> np.ndarray | None:
    """The passages' embeddings a retrieval revision carries (None for BM25)."""
    if index.embedding is None:
        return None
    return load_vectors(directory / EMBEDDINGS_FILE, index.passages, index.embedding.dimensions)


def read_index(directory: Path) -> tuple[RetrievalIndex, list[Chunk]] | None:
    """The revision's index, or None for a closed-book revision (no `retrieval.json`).
    A broken index is a `ValueError` that names the file."""
    path = directory / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = RetrievalIndex.model_validate(json.loads(path.read_text()))
        chunks = list(read_jsonl(directory / PASSAGES_FILE, Chunk))
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path.parent}: the retrieval index is unreadable: {exc}") from exc
    if len(chunks) != index.passages:
        raise ValueError(
            f"{directory / PASSAGES_FILE}: {len(chunks)} passages, {INDEX_FILE} says "
            f"{index.passages}"
        )
    return index, chunks


class ContextBuilder:
    """Serving's half of retrieval: the passages for a conversation's last user message and
    the conversation with that message replaced by the context prompt (everything before it is
    kept as sent)."""

    def __init__(self, index: RetrievalIndex, retriever: Retriever[Chunk], counter: TokenCounter):
        self.index = index
        self.retriever = retriever
        self.counter = counter

    def build(
        self, messages: Sequence[dict[str, str]], budget: int
    ) -> tuple[Messages, list[Chunk]]:
        at = last_user_message(messages)
        if at is None:
            return with_system(messages), []
        question = messages[at]["content"]
        (passages,) = self.retriever.retrieve([question], self.index.top_k)
        fitted, _ = fit_context_messages(self.counter, question, passages, budget)
        return (
            with_system(
                [
                    *(dict(m) for m in messages[:at]),
                    fitted[-1],  # the context prompt (the system message is added once, first)
                    *(dict(m) for m in messages[at + 1 :]),
                ]
            ),
            passages,
        )
