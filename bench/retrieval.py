"""Retrieval side by side: BM25, Dense and Hybrid, on the demo and on 100,000 synthetic passages;
and the choices behind them (exact numpy search against FAISS; transformers against the
sentence-transformers library for the embedding model).

    .venv/bin/python bench/retrieval.py [--out bench/results/retrieval.json] [--synthetic N]
        [--alternatives]

- demo: the demo's documents ingested with the demo's DocModel (`examples/local`) by
  `docmodel-trainer ingest` with each retriever's index (the embedding time is the ingest
  step's own); recall@1/3/5 of the gold passage on the held-out questions, and the query
  latency p50/p99 of one question at a time (the query's embedding included), per retriever.
- paraphrases: the demo's held-out questions are extractive (the generator lifts their words
  from the passage), which favours BM25; `bench/data/demo_paraphrases.yaml` holds questions
  about the same documents written by hand in other words, as people ask them. Recall@1/3/5
  per retriever on the demo's passages and on the synthetic corpus.
- synthetic: the demo's passages plus distractors up to N (default 100,000): two or three
  sentences of technical documentation each, drawn (seeded) from the docstrings of the
  libraries the project's locked environment installs (transformers, torch, botocore, ...), so
  they read like engineering documentation and share its vocabulary without restating the
  demo's facts. The same questions and gold passages: what recall@k each retriever keeps when
  the corpus is five hundred times larger, and its query latency and index memory there. The distractors' embeddings are cached under
  ~/.cache/docmodel/bench/ (keyed by N and the embedding model's identity): the first run
  embeds them once, at the rate it records.
- vector search: exact numpy search (what `docmodel.search.DenseRetriever` does) against FAISS
  (`IndexFlatIP`, exact; `IndexHNSWFlat`, approximate) on the synthetic embeddings: recall@10
  against exact search, query latency p50/p99, build time and index memory.
- embedder: the packaged model run with transformers (`docmodel_embedding`) against the
  sentence-transformers library: load time, passages/s, query latency, largest difference.

FAISS and sentence-transformers are not project dependencies: `--alternatives` installs them
(with sentence-transformers' own dependencies, torch excepted) into a cached overlay
(~/.cache/docmodel/bench-overlay/) and runs the comparison with it; without the flag those
sections record that they were not run.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import logging
import os
import random
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchlib import cpu_model, write_result

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "local"
WORK = Path("/tmp/docmodel-bench/retrieval")
CACHE = Path(os.environ.get("DOCMODEL_CACHE", Path.home() / ".cache" / "docmodel"))
KS = (1, 3, 5)
OVERLAY_PACKAGES = [
    "faiss-cpu==1.15.1",
    "sentence-transformers==6.3.0",
    "scipy==1.17.1",
    "scikit-learn==1.9.1",
    "threadpoolctl==3.8.0",
    "joblib==1.6.0",
    "pillow==13.0.0",
    "narwhals==2.29.0",
    "cloudpickle==3.1.3",
]


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def timed_queries(retriever: Any, questions: list[str], k: int) -> dict[str, float]:
    retriever.retrieve(questions[:1], k)  # warm
    times = []
    for question in questions:
        started = time.perf_counter()
        retriever.retrieve([question], k)
        times.append((time.perf_counter() - started) * 1000)
    return {"p50_ms": round(percentile(times, 50), 2), "p99_ms": round(percentile(times, 99), 2)}


def recall(retriever: Any, questions: list[str], gold: list[str | None]) -> dict[str, Any]:
    from docmodel.search import recall_at

    ranked = [[c.id for c in row] for row in retriever.retrieve(questions, max(KS))]
    return {
        k: round(v, 4) if v is not None else None for k, v in recall_at(ranked, gold, KS).items()
    }


def index_bytes(retriever: Any) -> int:
    """What a retriever holds in memory besides the passages: BM25's sparse score matrix,
    the dense embeddings, or both."""
    total = 0
    lexical = getattr(retriever, "lexical", retriever)
    bm25 = getattr(lexical, "_bm25", None)
    if bm25 is not None:
        total += sum(a.nbytes for a in bm25.scores.values() if hasattr(a, "nbytes"))
    dense = getattr(retriever, "dense", retriever)
    vectors = getattr(dense, "vectors", None)
    if vectors is not None:
        total += vectors.nbytes
    return total


# -- the demo ----------------------------------------------------------------------------------


def ingest_demo(retriever: str) -> tuple[Path, dict[str, Any]]:
    manifest = yaml.safe_load((DEMO / "docmodel.yaml").read_text())
    manifest["spec"]["evaluation"]["baseline"]["retriever"] = retriever
    work = WORK / f"demo-{retriever.lower()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dm = work / "docmodel.yaml"
    dm.write_text(yaml.safe_dump(manifest))
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "docmodel_trainer.cli",
            "ingest",
            "--docmodel",
            str(dm),
            "--store",
            str(work / "store"),
            "--source-dir",
            str(DEMO / "docs"),
            "--revision-file",
            str(work / "rev"),
            "--workdir",
            str(work / "w"),
        ],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"ingest failed ({done.returncode})")
    seconds = time.monotonic() - started
    revision = (work / "rev").read_text().strip()
    meta = manifest["metadata"]
    dataset = work / "store" / meta["namespace"] / meta["name"] / f"rev-{revision}" / "dataset"
    details = json.loads((dataset / "manifest.json").read_text())["details"]["passage_index"]
    return dataset, {"ingest_s": round(seconds, 1), **details}


def paraphrases(chunks: list[Any]) -> tuple[list[str], list[str | None]]:
    """The hand-written questions and their gold passages: the passage of the question's
    document whose text holds the answer phrase."""
    rows = yaml.safe_load((ROOT / "bench" / "data" / "demo_paraphrases.yaml").read_text())

    def norm(text: str) -> str:  # table rows: cells and whitespace as the chunker writes them
        return re.sub(r"[\s|]+", " ", text).strip()

    questions, gold = [], []
    for row in rows:
        hits = [
            c.id
            for c in chunks
            if c.source == row["source"] and norm(row["answer_phrase"]) in norm(c.text)
        ]
        questions.append(row["question"])
        gold.append(hits[0] if hits else None)
    return questions, gold


def demo(encoder: Any) -> tuple[dict[str, Any], list[Any], list[Any], np.ndarray]:
    from docmodel.dataset import CHUNKS, EVAL, Chunk, QAPair, read_jsonl
    from docmodel.search import check_embedding, open_retriever, read_passage_index

    rows: dict[str, Any] = {}
    ingests: dict[str, Any] = {}
    for kind in ("BM25", "Hybrid"):
        print(f"demo: ingest with {kind}", file=sys.stderr, flush=True)
        dataset, ingests[kind] = ingest_demo(kind)
    chunks = list(read_jsonl(dataset / CHUNKS, Chunk))
    pairs = list(read_jsonl(dataset / EVAL, QAPair))
    found = read_passage_index(dataset, chunks)
    assert found is not None and found[1] is not None and found[0].embedding is not None
    index, vectors = found
    check_embedding(index.embedding, encoder.info)
    questions = [p.question for p in pairs]
    gold = [p.chunk_id for p in pairs]
    para_questions, para_gold = paraphrases(chunks)
    for kind in ("BM25", "Dense", "Hybrid"):
        started = time.perf_counter()
        retriever = open_retriever(kind, chunks, vectors, encoder)
        build_s = time.perf_counter() - started
        rows[kind] = {
            "recall": recall(retriever, questions, gold),
            "recall_paraphrased": recall(retriever, para_questions, para_gold),
            "query_latency": timed_queries(retriever, questions, 4),
            "index_build_s": round(build_s, 3),
        }
    result = {
        "passages": len(chunks),
        "questions": len(questions),
        "questions_with_gold_passage": sum(1 for g in gold if g),
        "paraphrased_questions": len(para_questions),
        "paraphrased_with_gold_passage": sum(1 for g in para_gold if g),
        "ingest": ingests,
        "retrievers": rows,
    }
    return result, chunks, pairs, vectors


# -- the synthetic corpus ----------------------------------------------------------------------


DOCSTRING_PACKAGES = ("transformers", "torch", "botocore", "kubernetes", "pydantic", "datasets")


def docstring_sentences() -> list[str]:
    """Sentences of the docstrings of `DOCSTRING_PACKAGES`, in a stable order."""
    import ast
    import importlib.util

    sentences: set[str] = set()
    for package in DOCSTRING_PACKAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for path in sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.py")):
            try:
                tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
            except (SyntaxError, ValueError):
                continue
            for node in ast.walk(tree):
                if isinstance(
                    node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
                ):
                    doc = ast.get_docstring(node) or ""
                    for sentence in re.split(r"(?<=[.!?])\s+", " ".join(doc.split())):
                        words = sentence.split()
                        if 6 <= len(words) <= 40 and sentence[:1].isupper():
                            sentences.add(sentence)
    return sorted(sentences)


def synthetic_texts(chunks: list[Any], total: int, seed: int = 0) -> list[str]:
    """Distractors: two or three docstring sentences each; deterministic for a seed."""
    sentences = docstring_sentences()
    rng = random.Random(seed)
    return [" ".join(rng.sample(sentences, rng.choice((2, 3)))) for _ in range(total - len(chunks))]


def synthetic_vectors(texts: list[str], encoder: Any, key: str) -> tuple[np.ndarray, float | None]:
    path = CACHE / "bench" / f"retrieval-synthetic-{key}.npy"
    if path.is_file():
        vectors = np.load(path)
        if vectors.shape[0] == len(texts):
            return vectors, None
    print(f"synthetic: embedding {len(texts)} distractors once", file=sys.stderr, flush=True)
    started = time.monotonic()
    vectors = encoder.encode(texts, progress="synthetic distractors")
    rate = len(texts) / (time.monotonic() - started)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, rate


def synthetic(
    encoder: Any, chunks: list[Any], pairs: list[Any], vectors: np.ndarray, total: int
) -> tuple[dict[str, Any], np.ndarray]:
    from docmodel.dataset import Chunk
    from docmodel.search import open_retriever

    texts = synthetic_texts(chunks, total)
    key = hashlib.sha256(
        f"{total}|{encoder.info.identity}|{hashlib.sha256(chr(0).join(texts).encode()).hexdigest()}".encode()
    ).hexdigest()[:16]
    distractor_vectors, rate = synthetic_vectors(texts, encoder, key)
    corpus = list(chunks) + [
        Chunk(id=f"synthetic-{i}", source=f"synthetic/{i // 50}.md", heading_path=[], text=t)
        for i, t in enumerate(texts)
    ]
    all_vectors = np.concatenate([vectors, distractor_vectors])
    questions = [p.question for p in pairs]
    gold = [p.chunk_id for p in pairs]
    para_questions, para_gold = paraphrases(chunks)
    rows: dict[str, Any] = {}
    for kind in ("BM25", "Dense", "Hybrid"):
        gc.collect()
        started = time.perf_counter()
        retriever = open_retriever(kind, corpus, all_vectors, encoder)
        build_s = time.perf_counter() - started
        rows[kind] = {
            "recall": recall(retriever, questions, gold),
            "recall_paraphrased": recall(retriever, para_questions, para_gold),
            "query_latency": timed_queries(retriever, questions, 4),
            "index_build_s": round(build_s, 2),
            "index_mib": round(index_bytes(retriever) / 2**20, 1),
        }
        print(f"synthetic {kind}: {rows[kind]}", file=sys.stderr, flush=True)
        del retriever
    result = {
        "passages": len(corpus),
        "distractors": len(texts),
        "distractor_source": f"docstring sentences of {', '.join(DOCSTRING_PACKAGES)}",
        "questions": len(questions),
        "embeddings_mib": round(all_vectors.nbytes / 2**20, 1),
        "distractor_embedding_rate_per_s": round(rate, 1) if rate else "cached",
        "retrievers": rows,
    }
    return result, all_vectors


# -- the choices -------------------------------------------------------------------------------


def vector_search(vectors: np.ndarray, queries: np.ndarray) -> dict[str, Any]:
    """Exact numpy search against FAISS, on the same embeddings and query vectors."""
    k = 10

    def numpy_search(q: np.ndarray) -> np.ndarray:
        scores = vectors @ q
        top = np.argpartition(-scores, k)[:k]
        return top[np.argsort(-scores[top])]

    def measure(search: Any) -> tuple[dict[str, float], list[set[int]]]:
        search(queries[0])
        times, found = [], []
        for q in queries:
            started = time.perf_counter()
            hits = search(q)
            times.append((time.perf_counter() - started) * 1000)
            found.append({int(i) for i in hits})
        return {
            "p50_ms": round(percentile(times, 50), 3),
            "p99_ms": round(percentile(times, 99), 3),
        }, found

    exact_latency, exact = measure(numpy_search)
    out: dict[str, Any] = {
        "vectors": list(vectors.shape),
        "queries": len(queries),
        "numpy_exact": {
            **exact_latency,
            "recall_at_10_vs_exact": 1.0,
            "build_s": 0.0,
            "index_mib": round(vectors.nbytes / 2**20, 1),
        },
    }
    try:
        import faiss
    except ImportError:
        out["faiss"] = "not run: faiss-cpu is not installed (run with --alternatives)"
        return out
    faiss.omp_set_num_threads(len(os.sched_getaffinity(0)))
    dims = vectors.shape[1]
    for name, make in (
        ("faiss_flat_ip", lambda: faiss.IndexFlatIP(dims)),
        ("faiss_hnsw32", lambda: faiss.IndexHNSWFlat(dims, 32, faiss.METRIC_INNER_PRODUCT)),
    ):
        started = time.perf_counter()
        index = make()
        index.add(vectors)
        build_s = time.perf_counter() - started
        if name == "faiss_hnsw32":
            index.hnsw.efSearch = 64
        latency, found = measure(lambda q, index=index: index.search(q[None, :], k)[1][0])
        hits = sum(len(a & b) for a, b in zip(found, exact, strict=True))
        size = len(faiss.serialize_index(index)) / 2**20
        out[name] = {
            **latency,
            "recall_at_10_vs_exact": round(hits / (k * len(queries)), 4),
            "build_s": round(build_s, 2),
            "index_mib": round(size, 1),
        }
        del index
    return out


def embedder(texts: list[str]) -> dict[str, Any]:
    """The packaged model with transformers (ours) against sentence-transformers, each loaded
    in a fresh process."""
    code = r"""
import json, sys, time
started = time.perf_counter()
mode, texts = sys.argv[1], json.loads(sys.stdin.read())
from docmodel.basemodel import locate
from docmodel.api import EmbeddingModelSpec
path = str(locate(EmbeddingModelSpec()).path)
if mode == "sentence-transformers":
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(path, device="cpu")
    encode = lambda xs: model.encode(xs, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
else:
    import docmodel_embedding
    model = docmodel_embedding.SentenceEncoder(path, "m", "m")
    encode = model.encode
load_s = time.perf_counter() - started
encode(texts[:8])
t = time.perf_counter(); vectors = encode(texts); rate = len(texts) / (time.perf_counter() - t)
times = []
for text in texts[:40]:
    t = time.perf_counter(); encode([text]); times.append((time.perf_counter() - t) * 1000)
times.sort()
import numpy as np
np.save(sys.argv[2], vectors)
print(json.dumps({"load_s": round(load_s, 2), "passages_per_s": round(rate, 1),
                  "query_p50_ms": round(times[len(times) // 2], 2)}))
"""
    out: dict[str, Any] = {}
    payload = json.dumps(texts)
    for mode in ("transformers", "sentence-transformers"):
        done = subprocess.run(
            [sys.executable, "-c", code, mode, str(WORK / f"embed-{mode}.npy")],
            input=payload,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            if "No module named 'sentence_transformers'" in done.stderr:
                out[mode] = "not run: sentence-transformers is not installed (--alternatives)"
                continue
            sys.stderr.write(done.stderr[-3000:])
            raise SystemExit(f"embedder {mode} failed")
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    if isinstance(out.get("sentence-transformers"), dict):
        a = np.load(WORK / "embed-transformers.npy")
        b = np.load(WORK / "embed-sentence-transformers.npy")
        out["max_abs_difference"] = float(np.abs(a - b).max())
    out["texts"] = len(texts)
    return out


def overlay() -> Path:
    """FAISS and sentence-transformers (with its dependencies, torch excepted) in a cached
    directory beside the project's environment."""
    key = hashlib.sha256("\n".join(OVERLAY_PACKAGES).encode()).hexdigest()[:12]
    target = CACHE / "bench-overlay" / key
    if (target / ".complete").is_file():
        return target
    uv = shutil.which("uv") or str(CACHE / "uv-bin" / "0.13.9" / "bin" / "uv")
    print(f"installing {', '.join(OVERLAY_PACKAGES)} into {target}", file=sys.stderr)
    subprocess.run(
        # --no-config: the project's own uv settings drop sentence-transformers on purpose.
        [
            uv,
            "pip",
            "install",
            "--no-config",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            *OVERLAY_PACKAGES,
        ],
        check=True,
        env={**os.environ, "UV_CACHE_DIR": str(CACHE / "uv")},
    )
    (target / ".complete").write_text("")
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/retrieval.json")
    parser.add_argument("--synthetic", type=int, default=100_000, help="passages in all")
    parser.add_argument("--alternatives", action="store_true", help="also FAISS and ST")
    args = parser.parse_args()
    if args.alternatives and "DOCMODEL_BENCH_OVERLAY" not in os.environ:
        target = overlay()
        env = {
            **os.environ,
            "DOCMODEL_BENCH_OVERLAY": str(target),
            "PYTHONPATH": os.pathsep.join([str(target), os.environ.get("PYTHONPATH", "")]),
        }
        return subprocess.run([sys.executable, *sys.argv], env=env).returncode

    import docmodel_embedding
    from docmodel.api import EmbeddingModelSpec
    from docmodel.modelfacts import usable_cpus
    from docmodel.search import indexed_text

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("docmodel.search").setLevel(logging.WARNING)  # one line per index built
    WORK.mkdir(parents=True, exist_ok=True)
    threads = usable_cpus()
    encoder = docmodel_embedding.load(EmbeddingModelSpec(), WORK, threads=threads)
    demo_result, chunks, pairs, vectors = demo(encoder)
    print(f"demo: {json.dumps(demo_result['retrievers'])}", file=sys.stderr, flush=True)
    synthetic_result, all_vectors = synthetic(encoder, chunks, pairs, vectors, args.synthetic)
    query_vectors = encoder.encode([p.question for p in pairs])
    search = {
        "demo": vector_search(vectors, query_vectors),
        "synthetic": vector_search(all_vectors, query_vectors),
    }
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{cpu_model()}, {len(os.sched_getaffinity(0))} cores, CPU only, "
        f"{threads} torch threads",
        "embedding_model": encoder.info.model_dump(),
        "top_k_timed": 4,
        "demo": demo_result,
        "synthetic": synthetic_result,
        "vector_search": search,
        "embedder": embedder([indexed_text(c) for c in chunks]),
    }
    write_result(args.out, result, ("date", "machine"))
    for where in ("demo", "synthetic"):
        for kind, row in result[where]["retrievers"].items():
            print(
                f"{where} {kind}: recall {row['recall']} paraphrased "
                f"{row['recall_paraphrased']} latency {row['query_latency']}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
