"""The RAG baseline's retriever and the prompts every system answers.

The baseline is the same base model given the top-k BM25 passages (bm25s, Lucene scoring, English
stop words) from `chunks.jsonl`. The candidate and the serving revision get the bare question,
exactly as the adapter was trained (user = question, assistant = answer).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from docmodel.dataset import Chunk

log = logging.getLogger("docmodel.trainer.retrieval")

RAG_INSTRUCTION = (
    "Answer the question using the passages below. Reply with the answer only, in one short "
    "sentence or phrase."
)


class BM25Retriever:
    """Top-k passages by BM25 over the chunk texts (headings included)."""

    def __init__(self, chunks: Sequence[Chunk]):
        import bm25s

        # bm25s sets its logger to DEBUG on import and logs every index build.
        logging.getLogger("bm25s").setLevel(logging.WARNING)
        if not chunks:
            raise ValueError("cannot build a retriever over zero chunks")
        self.chunks = list(chunks)
        self._tokenizer = bm25s.tokenization.Tokenizer(stopwords="en")
        corpus = [_indexed_text(c) for c in self.chunks]
        corpus_ids = self._tokenizer.tokenize(corpus, update_vocab=True, show_progress=False)
        self._bm25 = bm25s.BM25()
        self._bm25.index(corpus_ids, show_progress=False)
        log.info(
            "Indexed chunks count=%d vocabulary=%d", len(corpus), len(self._tokenizer.word_to_id)
        )

    def retrieve(self, queries: Sequence[str], k: int) -> list[list[Chunk]]:
        """The `k` best chunks per query, best first (fewer when the corpus is smaller)."""
        k = min(k, len(self.chunks))
        query_ids = self._tokenizer.tokenize(list(queries), update_vocab=False, show_progress=False)
        results: list[list[Chunk]] = []
        for ids in query_ids:
            if not ids:  # only stop words or unknown words: nothing to rank by
                results.append([])
                continue
            docs, scores = self._bm25.retrieve([ids], k=k, show_progress=False)
            results.append(
                [self.chunks[int(d)] for d, s in zip(docs[0], scores[0], strict=True) if s > 0]
            )
        return results


def _indexed_text(chunk: Chunk) -> str:
    return " ".join([*chunk.heading_path, chunk.text])


def question_messages(question: str) -> list[dict[str, str]]:
    """What the candidate and the serving revision see: the question alone."""
    return [{"role": "user", "content": question}]


def rag_messages(
    question: str, passages: Sequence[Chunk], texts: Sequence[str] | None = None
) -> list[dict[str, str]]:
    """What the baseline sees: the retrieved passages (or `texts`, trimmed versions of their
    texts), then the question."""
    blocks = []
    for i, chunk in enumerate(passages, start=1):
        heading = " > ".join(chunk.heading_path)
        title = f"{chunk.source}" + (f" ({heading})" if heading else "")
        text = chunk.text if texts is None else texts[i - 1]
        blocks.append(f"Passage {i} [{title}]:\n{text.strip()}")
    context = "\n\n".join(blocks) if blocks else "(no passage matched the question)"
    return [
        {
            "role": "user",
            "content": f"{RAG_INSTRUCTION}\n\n{context}\n\nQuestion: {question}",
        }
    ]


MIN_TRIMMED_TOKENS = 16


def prompt_tokens(tokenizer: Any, messages: list[dict[str, str]]) -> int:
    """Tokens of the prompt the model sees: the answerers' own prompt ids."""
    from docmodel_trainer.generation import prompt_ids

    return len(prompt_ids(tokenizer, [messages])[0])


def fit_rag_messages(
    tokenizer: Any, question: str, passages: Sequence[Chunk], budget: int
) -> tuple[list[dict[str, str]], bool]:
    """The baseline's prompt within `budget` tokens of the model's own tokenizer, and whether
    it had to be trimmed. Passages are kept whole in rank order; the first that does not fit is
    cut to the tokens left (when at least `MIN_TRIMMED_TOKENS` are) and the rest are left out,
    so the best passages reach the model intact instead of being cut by the model."""
    messages = rag_messages(question, passages)
    if prompt_tokens(tokenizer, messages) <= budget:
        return messages, False
    kept: list[Chunk] = []
    texts: list[str] = []
    for chunk in passages:
        trial = rag_messages(question, [*kept, chunk], [*texts, chunk.text])
        used = prompt_tokens(tokenizer, trial)
        if used <= budget:
            kept.append(chunk)
            texts.append(chunk.text)
            continue
        ids = tokenizer(chunk.text, add_special_tokens=False)["input_ids"]
        left = len(ids) - (used - budget)
        while left >= MIN_TRIMMED_TOKENS:
            cut = tokenizer.decode(ids[:left], skip_special_tokens=True)
            trial = rag_messages(question, [*kept, chunk], [*texts, cut])
            over = prompt_tokens(tokenizer, trial) - budget
            if over <= 0:
                kept.append(chunk)
                texts.append(cut)
                break
            left -= max(over, 1)  # decoding and re-encoding can shift a few tokens
        break
    return rag_messages(question, kept, texts), True
