"""What an adapter is trained on, and in which order; and which of it the trainer really saw.

Three kinds of example, tokenized here with the base model's own tokenizer:
- `qa`: a training question/answer pair in the chat template (user = question, assistant =
  answer); loss on the answer and its end-of-turn token only.
- `passage`: every passage of every document as plain next-token text with the document's title
  and heading path in front; loss on every token. A passage longer than `max_seq_length` (the
  tokenizer can count more tokens than chunking's estimate) is cut into consecutive windows,
  each with the header in front, and every window is trained, so the whole passage is.
- `rewrite`: the teacher's rewrites of a passage (`dataset.rewritesPerPassage`), like passages.
- `context` (retrieval candidates only): a training question with the retriever's passages in
  front, built by the core's prompt builder (`docmodel.retrieval`) exactly as evaluation and
  serving build it (`raft` picks the passages); loss on the answer only. Passages of documents
  kept out of training (split `untrained`) are never trained on, in any kind of example.

Order, after Jiang et al. 2024 ("Instruction-tuned Language Models are Better Knowledge
Learners"): `qa_first_epochs` passes over the QA alone, then `epochs` passes over the QA mixed
with the documents (QA stays in every pass, so the answer format holds). Each pass is shuffled
with the seed and, with packing, packed best-fit-decreasing on its own (TRL's `pack_dataset`),
so passes never mix; the trainer reads the rows in this order. Packed rows carry each
example's length, so no token attends across examples and no padding is computed.

`Seen` records every example the trainer computed a loss on (from the batches themselves), so
the adapter's manifest can say how much of each document was trained and that no held-out
question was.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from docmodel.dataset import Chunk, QAPair, Rewrite
from docmodel.retrieval import ChatTemplateTokens, fit_context_messages, question_messages
from docmodel_trainer.raft import RaftContext

IGNORE = -100
MIN_WINDOW_TOKENS = 16


@dataclass(frozen=True)
class Example:
    kind: str  # qa | passage | rewrite | context
    key: str  # kind:id, the id a pair's or a chunk's (with the rewrite or window number)
    source: str
    input_ids: tuple[int, ...]
    labels: tuple[int, ...]


def ids_key(ids: Sequence[int]) -> str:
    return hashlib.blake2b(repr(tuple(ids)).encode(), digest_size=12).hexdigest()


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def prompt_and_answer_ids(
    tokenizer: Any, user: list[dict[str, str]], answer: str
) -> tuple[list[int], list[int]]:
    """The ids of `user` with the generation prompt, and of what the chat template adds for
    `answer` (its end-of-turn token included): the part a chat example's loss is on."""
    prompt = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": answer}], tokenize=False
    )
    if not full.startswith(prompt):
        raise ValueError("the chat template does not render a conversation as prompt + answer")
    return _encode(tokenizer, prompt), _encode(tokenizer, full[len(prompt) :])


def chat_example(tokenizer: Any, kind: str, pair: QAPair, user: list[dict[str, str]]) -> Example:
    """`user` then the pair's answer in the chat template; labels only on what follows the
    generation prompt."""
    prompt_ids, answer_ids = prompt_and_answer_ids(tokenizer, user, pair.answer)
    return Example(
        kind,
        f"{kind}:{pair.id}",
        pair.source,
        tuple(prompt_ids + answer_ids),
        tuple([IGNORE] * len(prompt_ids) + answer_ids),
    )


def qa_example(tokenizer: Any, pair: QAPair) -> Example:
    """The bare question (the closed-book prompt) and its answer."""
    return chat_example(tokenizer, "qa", pair, question_messages(pair.question))


def context_example(tokenizer: Any, context: RaftContext, max_seq_length: int) -> Example:
    """The question with its passages, fitted by the core's prompt builder to what is left of
    `max_seq_length` after the answer, and the answer."""
    pair = context.pair
    answer = len(_encode(tokenizer, pair.answer)) + 8  # the end-of-turn and header tokens
    messages, _ = fit_context_messages(
        ChatTemplateTokens(tokenizer), pair.question, context.passages, max_seq_length - answer
    )
    return chat_example(tokenizer, "context", pair, messages)


def passage_header(title: str, heading_path: Sequence[str]) -> str:
    """The title and heading path put in front of a passage's text."""
    lines = [title] if title else []
    path = [h for h in heading_path if h and h != title]
    if path:
        lines.append(" > ".join(path))
    return "\n".join(lines) + "\n\n" if lines else ""


def text_examples(
    tokenizer: Any,
    kind: str,
    key: str,
    source: str,
    header: str,
    text: str,
    max_seq_length: int,
) -> list[Example]:
    """Plain text with a loss on every token, in windows of at most `max_seq_length`."""
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    head = _encode(tokenizer, header) if header else []
    body = _encode(tokenizer, text.strip())
    room = max_seq_length - len(bos) - len(eos) - len(head)
    if room < MIN_WINDOW_TOKENS:  # a header that leaves no room is left out
        head, room = [], max_seq_length - len(bos) - len(eos)
    windows = [body[i : i + room] for i in range(0, max(len(body), 1), room)]
    out = []
    for n, window in enumerate(windows):
        ids = bos + head + window + eos
        name = f"{kind}:{key}" if len(windows) == 1 else f"{kind}:{key}#{n}"
        out.append(Example(kind, name, source, tuple(ids), tuple(ids)))
    return out


@dataclass
class TrainingData:
    """The rows the trainer reads, in order, and what they are made of."""

    rows: list[dict[str, list[int] | list[list[int]]]]
    examples: list[Example]
    passage_windows: dict[str, list[str]]  # chunk id -> its example keys
    documents: dict[str, list[str]]  # source key -> its chunk ids
    mix: dict[str, Any]
    by_ids: dict[str, list[str]] = field(default_factory=dict)  # ids_key -> example keys

    def seen_report(
        self, seen: Seen, tokenizer: Any, eval_questions: Iterable[str]
    ) -> dict[str, Any]:
        """How much of the documents, and which held-out questions, the trainer computed."""
        from docmodel_trainer.chunking import normalise

        keys: set[str] = set()
        for digest in seen.digests:
            keys.update(self.by_ids.get(digest, ()))
        passages_seen = {c for c, ws in self.passage_windows.items() if ws and set(ws) <= keys}
        docs_full = [
            s for s, chunks in self.documents.items() if chunks and set(chunks) <= passages_seen
        ]
        questions = {normalise(q) for q in eval_questions if normalise(q)}
        found: dict[str, set[str]] = {"qa": set(), "text": set()}
        for example in self.examples:
            if example.key in keys and questions:
                text = normalise(tokenizer.decode(list(example.input_ids)))
                kind = "qa" if example.kind == "qa" else "text"
                found[kind].update(q for q in questions if q in text)
        return {
            "examples_seen": len(keys),
            "examples_total": len({e.key for e in self.examples}),
            "passages_trained": len(passages_seen),
            "passages_total": len(self.passage_windows),
            "documents_trained_fraction": (
                len(docs_full) / len(self.documents) if self.documents else 0.0
            ),
            "documents_not_trained_in_full": sorted(set(self.documents) - set(docs_full)),
            "eval_questions_checked": len(questions),
            # Held-out questions in a trained question/answer example: must be 0.
            "eval_questions_seen_in_training": len(found["qa"]),
            # Held-out questions written verbatim in a document's own text (an FAQ page, say):
            # the documents are trained on by design, so this is reported, not a leak.
            "eval_questions_in_document_text": len(found["text"]),
        }


@dataclass
class Seen:
    """Digests of the examples the trainer computed a loss on, from its own batches."""

    digests: set[str] = field(default_factory=set)

    def add_batch(
        self, input_ids: Any, position_ids: Any = None, attention_mask: Any = None
    ) -> None:
        """Record the examples of one batch: padding-free rows split where positions restart,
        padded rows cut to their attention mask."""
        rows = input_ids.detach().cpu().tolist()
        if position_ids is not None and attention_mask is None:
            positions = position_ids.detach().cpu().tolist()
            for row, pos in zip(rows, positions, strict=True):
                start = 0
                for i in range(1, len(row) + 1):
                    if i == len(row) or pos[i] == 0:
                        if i > start:
                            self.digests.add(ids_key(row[start:i]))
                        start = i
            return
        masks = attention_mask.detach().cpu().tolist() if attention_mask is not None else None
        for n, row in enumerate(rows):
            ids = row if masks is None else [t for t, m in zip(row, masks[n], strict=True) if m]
            self.digests.add(ids_key(ids))


def build(
    tokenizer: Any,
    pairs: Sequence[QAPair],
    chunks: Sequence[Chunk],
    rewrites: Sequence[Rewrite],
    *,
    max_seq_length: int,
    epochs: int,
    qa_first_epochs: int,
    train_on_documents: bool,
    packing: bool,
    seed: int,
    contexts: Sequence[RaftContext] = (),
) -> TrainingData:
    """Tokenize every example and lay out the passes (see the module docstring)."""
    kept_out = sorted({c.source for c in chunks if c.split == "untrained"})
    chunks = [c for c in chunks if c.split != "untrained"]
    qa, too_long = _chat_examples(tokenizer, pairs, contexts, max_seq_length)
    documents: dict[str, list[str]] = {}
    for chunk in chunks:  # every passage counts, trained or not (the record says which)
        documents.setdefault(chunk.source, []).append(chunk.id)
    windows: dict[str, list[str]] = {c.id: [] for c in chunks}
    texts: list[Example] = []
    if train_on_documents:
        texts, windows = _document_examples(tokenizer, chunks, rewrites, max_seq_length)
    phases = [("qa", qa, qa_first_epochs), ("mixed", qa + texts, epochs)]
    rows, mix_phases = _lay_out_passes(phases, max_seq_length, packing, seed)
    examples = qa + texts
    by_ids: dict[str, list[str]] = {}
    for e in examples:
        by_ids.setdefault(ids_key(e.input_ids), []).append(e.key)
    mix = {
        "order": "qa-first-then-mixed" if qa_first_epochs > 0 else "mixed",
        "phases": mix_phases,
        "packing": packing,
        "max_seq_length": max_seq_length,
        "passages_split_into_windows": sum(1 for ws in windows.values() if len(ws) > 1),
        "qa_dropped_too_long": too_long,
        "train_on_documents": train_on_documents,
        "documents_kept_out": kept_out,
        "retrieval_examples": {
            "count": len(contexts),
            "with_gold_passage": sum(1 for c in contexts if c.gold_included),
            "gold_ranked_by_retriever": sum(1 for c in contexts if c.gold_retrieved),
        },
    }
    return TrainingData(rows, examples, windows, documents, mix, by_ids)


def _chat_examples(
    tokenizer: Any,
    pairs: Sequence[QAPair],
    contexts: Sequence[RaftContext],
    max_seq_length: int,
) -> tuple[list[Example], list[str]]:
    """The question/answer and retrieval examples that fit `max_seq_length`, and the keys of
    those that do not."""
    made = [qa_example(tokenizer, p) for p in pairs]
    made += [context_example(tokenizer, c, max_seq_length) for c in contexts]
    too_long = [e.key for e in made if len(e.input_ids) > max_seq_length]
    return [e for e in made if len(e.input_ids) <= max_seq_length], too_long


def _document_examples(
    tokenizer: Any, chunks: Sequence[Chunk], rewrites: Sequence[Rewrite], max_seq_length: int
) -> tuple[list[Example], dict[str, list[str]]]:
    """Every passage, then every rewrite of one, as text examples; and each passage's example
    keys (one per window)."""
    windows: dict[str, list[str]] = {}
    texts: list[Example] = []
    for chunk in chunks:
        header = passage_header(chunk.title, chunk.heading_path)
        made = text_examples(
            tokenizer, "passage", chunk.id, chunk.source, header, chunk.text, max_seq_length
        )
        windows[chunk.id] = [e.key for e in made]
        texts.extend(made)
    headers = {c.id: passage_header(c.title, c.heading_path) for c in chunks}
    for rw in rewrites:
        if rw.chunk_id not in headers:  # only rewrites of the passages trained on
            continue
        texts.extend(
            text_examples(
                tokenizer,
                "rewrite",
                f"{rw.chunk_id}~{rw.index}",
                rw.source,
                headers[rw.chunk_id],
                rw.text,
                max_seq_length,
            )
        )
    return texts, windows


def _lay_out_passes(
    phases: Sequence[tuple[str, list[Example], int]],
    max_seq_length: int,
    packing: bool,
    seed: int,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The rows of every pass of every phase, in order (each pass shuffled with the seed and,
    with packing, packed on its own); and each phase's record for the mix."""
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    mix_phases = []
    for name, examples, passes in phases:
        if passes <= 0 or not examples:
            continue
        start = len(rows)
        for _ in range(passes):
            order = list(examples)
            rng.shuffle(order)
            built = _pack(order, max_seq_length) if packing else _rows(order)
            rng.shuffle(built)  # packing sorts rows by length
            rows.extend(built)
        mix_phases.append(
            {
                "name": name,
                "passes": passes,
                "rows": len(rows) - start,
                "examples_per_pass": _count(examples),
                "tokens_per_pass": _tokens(examples),
            }
        )
    return rows, mix_phases


def _count(examples: Sequence[Example]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in examples:
        out[e.kind] = out.get(e.kind, 0) + 1
    return out


def _tokens(examples: Sequence[Example]) -> dict[str, int]:
    out: dict[str, int] = {}
    for e in examples:
        out[e.kind] = out.get(e.kind, 0) + len(e.input_ids)
    return out


def _rows(examples: Sequence[Example]) -> list[dict[str, Any]]:
    return [{"input_ids": list(e.input_ids), "labels": list(e.labels)} for e in examples]


def _pack(examples: Sequence[Example], max_seq_length: int) -> list[dict[str, Any]]:
    """Best-fit-decreasing packing of one pass (TRL's `pack_dataset`, strategy `bfd`)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    packed = pack_dataset(Dataset.from_list(_rows(examples)), max_seq_length, "bfd")
    return [dict(row) for row in packed]
