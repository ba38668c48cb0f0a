"""Question/answer pairs for the passages, from the generator `spec.dataset.generator` names.

Every pair is traced to a source document (`QAPair.source`) and, where known, to the passage
it came from (`QAPair.chunk_id`); the train/eval split routes pairs by their source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from docmodel.api import DatasetSpec
from docmodel.dataset import QAPair, Rewrite
from docmodel_trainer.chunking import Passage, normalise
from docmodel_trainer.qa.extractive import extract_pairs
from docmodel_trainer.qa.provided import ProvidedFile, ProvidedPair, default_source
from docmodel_trainer.qa.teacher import Teacher
from docmodel_trainer.split import pair_id

log = logging.getLogger("docmodel.trainer.ingest")


@dataclass
class Generated:
    pairs: list[QAPair] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    malformed_lines: list[dict[str, object]] = field(default_factory=list)
    failed_passages: list[dict[str, str]] = field(default_factory=list)
    unattributed: int = 0
    teacher_requests: int = 0


def generate(
    spec: DatasetSpec,
    passages: Sequence[Passage],
    provided: Sequence[ProvidedFile] = (),
    teacher_factory: Callable[[], Teacher] | None = None,
) -> Generated:
    if spec.generator == "extractive":
        return _extractive(passages)
    if spec.generator == "teacher":
        assert spec.teacher is not None  # the API rules require it
        teacher = teacher_factory() if teacher_factory else Teacher(spec.teacher)
        try:
            return _teacher(teacher, passages, spec.rewrites_per_passage)
        finally:
            teacher.close()
    return _provided(passages, provided)


def _pair(question: str, answer: str, passage: Passage, generator: str) -> QAPair:
    return QAPair(
        id=pair_id(passage.source, question),
        question=question,
        answer=answer,
        source=passage.source,
        chunk_id=passage.id,
        generator=generator,
    )


def _extractive(passages: Sequence[Passage]) -> Generated:
    out = Generated()
    for passage in passages:
        out.pairs.extend(_pair(q, a, passage, "extractive") for q, a in extract_pairs(passage))
    return out


def _teacher(teacher: Teacher, passages: Sequence[Passage], rewrites: int) -> Generated:
    result = teacher.generate(passages)
    out = Generated(teacher_requests=result.requests)
    for passage in passages:
        for question, answer in result.pairs.get(passage.id, []):
            out.pairs.append(_pair(question, answer, passage, "teacher"))
    out.failed_passages = [{"chunk": cid, "reason": reason} for cid, reason in result.failed]
    if rewrites > 0:
        written = teacher.rewrite(passages, rewrites)
        out.teacher_requests += written.requests
        for passage in passages:
            out.rewrites.extend(
                Rewrite(chunk_id=passage.id, source=passage.source, index=i, text=text)
                for i, text in enumerate(written.rewrites.get(passage.id, []))
            )
        out.failed_passages += [
            {"chunk": cid, "reason": f"rewrite: {reason}"} for cid, reason in written.failed
        ]
    return out


def _provided(passages: Sequence[Passage], files: Sequence[ProvidedFile]) -> Generated:
    out = Generated()
    by_source: dict[str, list[Passage]] = {}
    for passage in passages:
        by_source.setdefault(passage.source, []).append(passage)
    by_stem = {_stem(source): source for source in by_source}
    for qa_file in files:
        for line, reason in qa_file.malformed:
            out.malformed_lines.append({"file": qa_file.key, "line": line, "reason": reason})
        for item in qa_file.pairs:
            source = _resolve_source(item, qa_file.key, by_source, by_stem)
            if source is None:
                out.unattributed += 1
                source = item.source or qa_file.key
                chunk_id = None
            else:
                chunk_id = _best_passage(item.answer, by_source[source])
            out.pairs.append(
                QAPair(
                    id=pair_id(source, item.question),
                    question=item.question,
                    answer=item.answer,
                    source=source,
                    chunk_id=chunk_id,
                    generator="provided",
                )
            )
    if out.malformed_lines:
        log.warning(
            "Skipped malformed QA lines count=%d first=%s:%s",
            len(out.malformed_lines),
            out.malformed_lines[0]["file"],
            out.malformed_lines[0]["line"],
        )
    return out


def _stem(key: str) -> str:
    path = PurePosixPath(key)
    return str(path.with_name(path.name.split(".")[0]))


def _resolve_source(
    item: ProvidedPair,
    qa_key: str,
    by_source: dict[str, list[Passage]],
    by_stem: dict[str, str],
) -> str | None:
    """The document a provided pair belongs to: as named, beside it by name, or by its answer."""
    if item.source:
        if item.source in by_source:
            return item.source
        if _stem(item.source) in by_stem:
            return by_stem[_stem(item.source)]
    beside = by_stem.get(_stem(default_source(qa_key)))
    if beside and not item.source:
        return beside
    answer = normalise(item.answer)
    if not answer:
        return None
    holders = [s for s, ps in by_source.items() if any(answer in normalise(p.text) for p in ps)]
    return holders[0] if len(holders) == 1 else None


def _best_passage(answer: str, passages: list[Passage]) -> str | None:
    wanted = normalise(answer)
    for passage in passages:
        if wanted and wanted in normalise(passage.text):
            return passage.id
    words = set(wanted.split())
    best = max(passages, key=lambda p: len(words & set(normalise(p.text).split())), default=None)
    return best.id if best is not None and words else None
