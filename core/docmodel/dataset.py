"""The QA dataset artifact: file names and record schemas shared by ingest, train and evaluate.

dataset/chunks.jsonl    one Chunk per line: every passage of every document (all trained on,
                        but for a retrieval candidate's documents kept out: split "untrained")
dataset/rewrites.jsonl  one Rewrite per line: the teacher's rewrites of passages (may be empty)
dataset/train.jsonl     one QAPair per line: training questions
dataset/eval.jsonl      one QAPair per line: held-out questions (never trained on), with the
                        leakage figures measured against train.jsonl
dataset/manifest.json   docmodel.artifacts.Manifest(kind="dataset"); details hold DatasetStats
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, Field

CHUNKS = "chunks.jsonl"
TRAIN = "train.jsonl"
EVAL = "eval.jsonl"
REWRITES = "rewrites.jsonl"


class Chunk(BaseModel):
    """A passage of one document."""

    id: str
    source: str = Field(description="Object key of the document, relative to the source prefix.")
    heading_path: list[str] = Field(default_factory=list)
    title: str = Field(default="", description="Title of the document.")
    text: str
    split: str = Field(
        default="train",
        description="train: the passage's text is trained on (every passage is, since data "
        "protocol 2; held-out questions are split by question group instead); untrained: its "
        "document is kept out of a retrieval candidate's training (it is only retrieved).",
    )


class Rewrite(BaseModel):
    """A rewrite of a passage by the teacher: the same facts in other words."""

    chunk_id: str
    source: str
    index: int
    text: str


class QAPair(BaseModel):
    """A question with its reference answer, traced to the passage it came from."""

    id: str
    question: str
    answer: str
    source: str
    chunk_id: str | None = None
    generator: str = Field(description="provided, teacher or extractive")
    document_trained: bool = Field(
        default=True,
        description="False for questions about a document kept out of a retrieval candidate's "
        "training: the candidate can only answer them by reading the retrieved passages.",
    )
    max_train_similarity: float | None = Field(
        default=None,
        description="Eval pairs: the largest TF-IDF cosine of question + answer to a train pair.",
    )
    max_train_ngram_overlap: float | None = Field(
        default=None,
        description="Eval pairs: the share of the item's word n-grams that a train pair has.",
    )


class SkippedFile(BaseModel):
    key: str
    reason: str


class DatasetStats(BaseModel):
    """What ingest saw; stored in the dataset manifest's `details`."""

    documents_listed: int = 0
    documents_parsed: int = 0
    documents_skipped: list[SkippedFile] = Field(default_factory=list)
    chunks: int = 0
    train_pairs: int = 0
    eval_pairs: int = 0
    train_documents: int = Field(default=0, description="Documents whose text is trained on.")
    eval_documents: int = Field(default=0, description="Documents with held-out questions.")
    eval_grouping: str = Field(default="document", description="document or section")
    train_groups: int = 0
    eval_groups: int = 0
    duplicates_removed: int = 0
    train_pairs_dropped_same_passage: int = Field(
        default=0,
        description="Train pairs dropped because an eval answer comes from their passage.",
    )
    eval_items_dropped_for_leakage: int = 0
    documents_not_trained: list[str] = Field(
        default_factory=list,
        description="Retrieval candidates: documents kept out of training (only retrieved).",
    )
    rewrites: int = 0
    bytes_downloaded: int = 0


M = TypeVar("M", bound=BaseModel)


def write_jsonl(path: Path, records: Iterable[BaseModel]) -> int:
    count = 0
    with path.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            count += 1
    return count


def read_jsonl(path: Path, model: type[M]) -> Iterator[M]:
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield model.model_validate(json.loads(line))
