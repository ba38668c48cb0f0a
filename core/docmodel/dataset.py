"""The QA dataset artifact: file names and record schemas shared by ingest, train and evaluate.

dataset/chunks.jsonl   one Chunk per line (every passage, train and eval documents alike)
dataset/train.jsonl    one QAPair per line, from training documents only
dataset/eval.jsonl     one QAPair per line, from held-out documents only
dataset/manifest.json  docmodel.artifacts.Manifest(kind="dataset"); details hold DatasetStats
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


class Chunk(BaseModel):
    """A passage of one document."""

    id: str
    source: str = Field(description="Object key of the document, relative to the source prefix.")
    heading_path: list[str] = Field(default_factory=list)
    text: str
    split: str = Field(description="train or eval: the split of the whole source document.")


class QAPair(BaseModel):
    """A question with its reference answer, traced to the passage it came from."""

    id: str
    question: str
    answer: str
    source: str
    chunk_id: str | None = None
    generator: str = Field(description="provided, teacher or extractive")


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
    train_documents: int = 0
    eval_documents: int = 0
    duplicates_removed: int = 0
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
