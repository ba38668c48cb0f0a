"""Benchmark of the ingest workload on a generated corpus; writes bench/results/ingest.json.

    .venv/bin/python bench/ingest.py [--docs 2000] [--out bench/results/ingest.json]

Generates a corpus (Markdown, HTML, plain text and PDF pages of a fictional company's docs,
each with headings, a table, key/value lines and definitions), then runs ingest three times
against the same local artifact store:

  cold      first run, empty parsed-document cache: every document is read and parsed
  rerun     same documents again: only the cache is read (target: 0 document bytes)
  baseline  the naive re-run this is compared with: cache off, every document read and
            parsed again (what a re-run costs without the ETag cache)

Documents per second and MB per second are over the whole ingest (listing, fetch, parse,
chunk, extractive QA, split, publish). The source is a local directory here, so "download"
is a file read. With the dev environment's MinIO built, the same three runs also go through
boto3 against MinIO on loopback (source and artifact store in S3).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import yaml

from benchlib import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from docmodel.artifacts import RevisionLayout, open_artifact_store, read_manifest  # noqa: E402
from docmodel_trainer import ingest  # noqa: E402

from testkit.corpus import write_pdf  # noqa: E402

SERVICES = ["billing", "tracking", "routing", "customs", "warehouse", "fleet", "pricing", "auth"]
TEAMS = ["Platform", "Payments", "Logistics Core", "Data", "Security Operations", "Mobile"]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "ap-south-1"]


def _facts(rng: random.Random, i: int) -> dict[str, str]:
    service = f"{rng.choice(SERVICES)}-{i}"
    return {
        "service": service,
        "team": rng.choice(TEAMS),
        "region": rng.choice(REGIONS),
        "timeout": str(rng.randrange(5, 600)),
        "replicas": str(rng.randrange(1, 20)),
        "port": str(rng.randrange(3000, 9000)),
    }


def _prose(rng: random.Random, service: str, sentences: int) -> str:
    words = ["requests", "shipments", "invoices", "events", "queues", "partners", "alerts"]
    out = []
    for _ in range(sentences):
        a, b = rng.sample(words, 2)
        out.append(
            f"The {service} service batches {a} before it forwards them to {b}, "
            f"retrying {rng.randrange(2, 9)} times with exponential backoff."
        )
    return " ".join(out)


def _sections(rng: random.Random, service: str) -> str:
    """A few more sections of prose, so documents are a realistic few KB."""
    out = []
    for title in rng.sample(["Design", "Failure Modes", "Capacity", "History", "Testing"], 3):
        out.append(f"## {title}\n\n{_prose(rng, service, rng.randrange(4, 14))}\n")
    return "\n".join(out)


def markdown(rng: random.Random, i: int) -> bytes:
    f = _facts(rng, i)
    s = f["service"]
    return f"""# {s.title()} Service

The {s} service is the component that handles {s.split("-")[0]} for Larkspur Freight.

## Ownership

Owner: {f["team"]}
Region: {f["region"]}
On-call rotation: {f["team"]} primary

## Configuration

| Key | Default | Description |
|-----|---------|-------------|
| timeout | {f["timeout"]} | Seconds before a request is abandoned |
| replicas | {f["replicas"]} | Pods running the service |
| port | {f["port"]} | Port of the HTTP listener |

The default timeout is {f["timeout"]} seconds.

```bash
freightctl deploy {s} --env staging --wait
```

## Operations

{_prose(rng, s, rng.randrange(6, 20))}

{_sections(rng, s)}
""".encode()


def html(rng: random.Random, i: int) -> bytes:
    f = _facts(rng, i)
    s = f["service"]
    return f"""<!DOCTYPE html><html><head><title>{s} runbook</title>
<script>var x = 1;</script></head><body><nav>Home | Runbooks</nav>
<h1>{s} Runbook</h1>
<p>A {s} incident is an outage of the {s} service that affects customers.</p>
<h2>Contacts</h2><ul><li>Owner: {f["team"]}</li><li>Region: {f["region"]}</li></ul>
<h2>Limits</h2><table><tr><th>Limit</th><th>Value</th></tr>
<tr><td>Timeout</td><td>{f["timeout"]} seconds</td></tr>
<tr><td>Replicas</td><td>{f["replicas"]}</td></tr></table>
<h2>Procedure</h2><p>{_prose(rng, s, rng.randrange(6, 20))}</p>
<pre>freightctl rollback {s} --env production</pre>
<footer>Internal</footer></body></html>""".encode()


def text(rng: random.Random, i: int) -> bytes:
    f = _facts(rng, i)
    s = f["service"]
    return f"""{s.title()} Notes
=================

Owner: {f["team"]}
Port: {f["port"]}

HISTORY

{_prose(rng, s, rng.randrange(6, 20))}
""".encode()


def pdf(rng: random.Random, i: int) -> bytes:
    f = _facts(rng, i)
    s = f["service"]
    lines = [f"{s.title()} Policy", "", "1. Scope", ""]
    lines += [f"The {s} policy is the set of rules for changes to {s}."]
    lines += [
        f"Approver: {f['team']}",
        f"Review period: {f['replicas']} days",
        "",
        "2. Details",
        "",
    ]
    prose = _prose(rng, s, rng.randrange(6, 16))
    words = prose.split()
    lines += [" ".join(words[j : j + 14]) for j in range(0, len(words), 14)]
    return write_pdf(lines)


KINDS = [(".md", markdown, 0.6), (".html", html, 0.2), (".txt", text, 0.1), (".pdf", pdf, 0.1)]


def generate(root: Path, n: int, seed: int = 7) -> dict[str, int]:
    rng = random.Random(seed)
    counts: dict[str, int] = {}
    for i in range(n):
        suffix, make, _ = rng.choices(KINDS, weights=[k[2] for k in KINDS])[0]
        path = root / f"team-{i % 20:02d}" / f"doc-{i:05d}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make(rng, i))
        counts[suffix] = counts.get(suffix, 0) + 1
    return counts


def write_docmodel(path: Path, source: dict[str, str]) -> Path:
    manifest = {
        "apiVersion": "docmodel.dev/v1alpha1",
        "kind": "DocModel",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {"source": source},
    }
    path.write_text(yaml.safe_dump(manifest))
    return path


def measure(
    label: str, docmodel: Path, store_uri: str, source_args: list[str], n: int, corpus_bytes: int
) -> dict[str, dict[str, object]]:
    """cold, rerun and baseline (cache off) runs against one source and artifact store."""
    runs: dict[str, dict[str, object]] = {}
    for name, extra in (("cold", []), ("rerun", []), ("baseline", ["--no-cache"])):
        parser = argparse.ArgumentParser()
        ingest.add_arguments(parser)
        args = parser.parse_args(
            [
                "--docmodel",
                str(docmodel),
                "--store",
                store_uri,
                "--revision",
                f"{label}-{name}",
                *source_args,
                *extra,
            ]
        )
        started = time.perf_counter()
        assert ingest.run(args) == 0
        seconds = time.perf_counter() - started
        layout = RevisionLayout("default", "bench", f"{label}-{name}")
        manifest = read_manifest(open_artifact_store(store_uri), layout, "dataset")
        assert manifest is not None
        d = manifest.details
        runs[name] = {
            "seconds": round(seconds, 2),
            "docs_per_s": round(n / seconds, 1),
            "mb_per_s": round(corpus_bytes / 1e6 / seconds, 2),
            "bytes_downloaded": d["bytes_downloaded"],
            "cache_hits": d["cache_hits"],
            "documents_parsed": d["documents_parsed"],
            "documents_skipped": len(d["documents_skipped"]),
            "chunks": d["chunks"],
            "train_pairs": d["train_pairs"],
            "eval_pairs": d["eval_pairs"],
        }
        print(f"{label:6} {name:9} {json.dumps(runs[name])}", file=sys.stderr)
    return runs


def comparison(runs: dict[str, dict[str, object]]) -> dict[str, object]:
    rerun, baseline = runs["rerun"], runs["baseline"]
    return {
        "rerun_vs_baseline_speedup": round(
            float(baseline["seconds"]) / max(float(rerun["seconds"]), 1e-9),  # type: ignore[arg-type]
            2,
        ),
        "rerun_bytes_downloaded": rerun["bytes_downloaded"],
        "baseline_bytes_downloaded": baseline["bytes_downloaded"],
        "same_dataset": rerun["train_pairs"] == baseline["train_pairs"]
        and rerun["eval_pairs"] == baseline["eval_pairs"],
    }


def start_minio(work: Path):  # type: ignore[no-untyped-def]
    """MinIO from the dev environment's built binary, or None when it is not built."""
    try:
        from docmodel_devenv import build
        from docmodel_devenv.minio import MinIO
    except ImportError:
        return None
    found = build.find(build.FAMILIES["minio"])
    if not found:
        return None
    minio = MinIO(build.Binaries(found), work)
    return minio, minio.start()


def upload(credentials, bucket: str, source: Path) -> None:  # type: ignore[no-untyped-def]
    client = credentials.client()
    client.create_bucket(Bucket=bucket)
    files = sorted(p for p in source.rglob("*") if p.is_file())

    def put(path: Path) -> None:
        key = f"docs/{path.relative_to(source).as_posix()}"
        client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(put, files))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument(
        "--s3",
        choices=["auto", "on", "off"],
        default="auto",
        help="also run against MinIO (auto: when the dev environment has built it)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "ingest.json")
    opts = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s %(message)s")

    with tempfile.TemporaryDirectory(prefix="docmodel-bench-") as tmp:
        work = Path(tmp)
        source = work / "docs"
        counts = generate(source, opts.docs)
        corpus_bytes = sum(p.stat().st_size for p in source.rglob("*") if p.is_file())
        results: dict[str, object] = {}

        docmodel = write_docmodel(work / "local.yaml", {"bucket": "bench-docs"})
        local = measure(
            "local", docmodel, str(work / "store"), ["--source-dir", str(source)], opts.docs,
            corpus_bytes,
        )  # fmt: skip
        results["local"] = {
            "source": "local directory (a file read stands in for an S3 GET)",
            "artifact_store": "local directory",
            "runs": local,
            "comparison": comparison(local),
        }

        started = start_minio(work / "minio") if opts.s3 != "off" else None
        if started is None and opts.s3 == "on":
            raise SystemExit("MinIO is not built: run the dev environment build first")
        if started is not None:
            minio, credentials = started
            try:
                os.environ.update(credentials.env())
                upload(credentials, "bench-docs", source)
                docmodel = write_docmodel(
                    work / "s3.yaml",
                    {"bucket": "bench-docs", "prefix": "docs", "endpoint": credentials.endpoint},
                )
                s3 = measure(
                    "s3", docmodel, "s3://bench-docs/artifacts", [], opts.docs, corpus_bytes
                )
            finally:
                minio.stop()
            results["s3"] = {
                "source": "MinIO on loopback (boto3 ListObjectsV2 + GetObject)",
                "artifact_store": "the same MinIO (s3://bench-docs/artifacts), cache included",
                "runs": s3,
                "comparison": comparison(s3),
            }

    result = {
        "benchmark": "ingest",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": f"python bench/ingest.py --docs {opts.docs} --s3 {opts.s3}",
        "machine": {
            "cpu_count": os.cpu_count(),
            "cpu_model": cpu_model(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "corpus": {"documents": opts.docs, "bytes": corpus_bytes, "by_type": counts},
        "baseline": "the same re-run with --no-cache: every document fetched and parsed again",
        **results,
    }
    opts.out.parent.mkdir(parents=True, exist_ok=True)
    opts.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
