"""A small hand-built QA dataset artifact (what ingest writes), for end-to-end tests."""

from __future__ import annotations

from pathlib import Path

from docmodel.artifacts import Manifest, RevisionLayout, publish_dir
from docmodel.dataset import CHUNKS, EVAL, TRAIN, Chunk, DatasetStats, QAPair, write_jsonl
from docmodel.search import PassageIndex, RetrieverKind, ids_digest, write_passage_index

SERVICES = [
    ("billing", "8101", "thirty days", "nightly", "Alice"),
    ("search", "8102", "seven days", "hourly", "Bruno"),
    ("ledger", "8103", "ninety days", "weekly", "Chen"),
    ("gateway", "8104", "fourteen days", "daily", "Dana"),
    ("mailer", "8105", "sixty days", "monthly", "Emil"),
    ("catalog", "8106", "one year", "nightly", "Farah"),
    ("payments", "8107", "two years", "hourly", "Gita"),
    ("reports", "8108", "five days", "weekly", "Hugo"),
]
EVAL_SERVICES = {"reports", "mailer"}


def documents() -> dict[str, str]:
    """One Markdown page per service."""
    return {
        f"services/{name}.md": (
            f"# The {name} service\n\n"
            f"The {name} service listens on port {port}. "
            f"Logs of the {name} service are kept for {retention}. "
            f"Backups of the {name} service run {backup}. "
            f"The owner of the {name} service is {owner}.\n"
        )
        for name, port, retention, backup, owner in SERVICES
    }


def passages() -> list[Chunk]:
    """One passage per document, as ingest chunks them: the title is the heading."""
    return [
        Chunk(
            id=f"{key.split('/')[-1][:-3]}-0",
            source=key,
            heading_path=[text.splitlines()[0].lstrip("# ")],
            text=text.split("\n\n", 1)[1],
        )
        for key, text in documents().items()
    ]


def qa_pairs() -> tuple[list[QAPair], list[QAPair]]:
    train, held_out = [], []
    for name, port, retention, backup, owner in SERVICES:
        source = f"services/{name}.md"
        facts = [
            (f"Which port does the {name} service listen on?", f"Port {port}."),
            (f"How long are logs of the {name} service kept?", f"{retention.capitalize()}."),
            (f"How often do backups of the {name} service run?", f"{backup.capitalize()}."),
            (f"Who owns the {name} service?", f"{owner}."),
        ]
        for i, (q, a) in enumerate(facts):
            pair = QAPair(
                id=f"{name}-{i}",
                question=q,
                answer=a,
                source=source,
                chunk_id=f"{name}-0",
                generator="provided",
            )
            (held_out if name in EVAL_SERVICES else train).append(pair)
    return train, held_out


def write_corpus(directory: Path) -> Path:
    """The documents as files (a tokenizer corpus for `build_tiny_llama`)."""
    directory.mkdir(parents=True, exist_ok=True)
    for key, text in documents().items():
        path = directory / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    train, held_out = qa_pairs()
    (directory / "qa.jsonl").write_text(
        "\n".join(f"{p.question} {p.answer}" for p in train + held_out) + "\n"
    )
    return directory


def publish_dataset(
    store, layout: RevisionLayout, scratch: Path, retriever: RetrieverKind = "BM25"
) -> str:  # type: ignore[no-untyped-def]
    """Write chunks/train/eval.jsonl, the passage index of `retriever` (Dense and Hybrid:
    embedded with the packaged embedding model) and a dataset manifest to the store, as
    ingest does: every document's passage is trained on; the questions of `EVAL_SERVICES` are
    held out."""
    scratch.mkdir(parents=True, exist_ok=True)
    chunks = passages()
    train, held_out = qa_pairs()
    write_jsonl(scratch / CHUNKS, chunks)
    write_jsonl(scratch / TRAIN, train)
    write_jsonl(scratch / EVAL, held_out)
    index = PassageIndex(retriever=retriever, passages=len(chunks), passage_ids=ids_digest(chunks))
    vectors = None
    if retriever != "BM25":
        from docmodel.search import indexed_text

        from testkit.models import embedding_encoder

        encoder = embedding_encoder()
        vectors = encoder.encode([indexed_text(c) for c in chunks])
        index = index.model_copy(update={"embedding": encoder.info})
    write_passage_index(scratch, index, vectors)
    stats = DatasetStats(
        documents_listed=len(chunks),
        documents_parsed=len(chunks),
        chunks=len(chunks),
        train_pairs=len(train),
        eval_pairs=len(held_out),
    )
    manifest = Manifest(kind="dataset", revision=layout.revision, details=stats.model_dump())
    return publish_dir(scratch, store, layout, manifest)


def docmodel_manifest(
    base_model: Path, retriever: RetrieverKind = "BM25", **training: object
) -> dict:  # type: ignore[type-arg]
    """The shared tiny-training DocModel; BM25 unless `retriever` says otherwise (the
    datasets `publish_dataset` writes are indexed for BM25 unless told otherwise)."""
    return {
        "apiVersion": "docmodel.dev/v1alpha1",
        "kind": "DocModel",
        "metadata": {"name": "handbook", "namespace": "docs"},
        "spec": {
            "source": {"bucket": "company-docs", "prefix": "handbook/"},
            "baseModel": {"name": str(base_model)},
            "training": {
                "method": "lora",
                "maxSeqLength": 448,
                "batchSize": 4,
                "gradientAccumulationSteps": 1,
                "learningRate": 5e-3,
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                "resources": {"gpu": 0},
                **training,
            },
            "evaluation": {
                "maxQuestions": 8,
                "minQuestions": 4,
                "maxNewTokens": 12,
                "baseline": {"retriever": retriever},
            },
        },
    }
