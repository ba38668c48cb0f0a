"""The operator at scale: one burst of DocModels on the local control plane, their Jobs and
servers on kwok nodes (nothing really runs), the documents and every artifact but the
evaluation report pre-seeded in MinIO.

    .venv/bin/python bench/operator_scale.py                  # 200, then 1,000 DocModels
    .venv/bin/python bench/operator_scale.py --count 50 --idle-seconds 60 --extra 0

Figures (bench/results/operator_scale.json):
- apply_to_job_p50_s / _p99_s: from the return of each DocModel's create call to this
  client's receipt of the ADDED event of its first Job (the evaluation: dataset and adapter
  are pre-seeded). creationTimestamp has a resolution of 1 s, so the client's clock is used.
  Target: p99 < 2 s.
- job_to_pod_p50_s / _p99_s: for the same Jobs, from this client's receipt of the Job's ADDED
  event to that of its first pod: kube-controller-manager's Job controller on the same API
  server, under the same burst. apply_to_job_over_job_to_pod_p99 is the ratio of the two
  p99s: the operator judged against the platform it runs on. Target: <= 1.5.
- idle_api_requests_per_dm_per_min: once every DocModel serves and the cluster has settled
  (`--settle-seconds`), non-WATCH requests by the
  operator (its client's user agent and Kopf's) per DocModel per minute, from the API server's
  own audit log, beside source_polls_per_dm_per_min (the polls the DocModels' pollInterval
  asks for in the same window). Target: no more than the polls' own requests.
- rss_mb at `count` DocModels and after `extra` more (suspended) ones: the operator's
  resident memory. Target: < 200 MB at 200.

While the first Job of a DocModel runs, this script publishes the report its evaluation would
have written (kwok completes the Job without running it), so the DocModel goes on to its
verdict and a server on a kwok node, as a real one would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # testkit

from docmodel import labels
from docmodel.api import GROUP, PLURAL, VERSION, duration_seconds, parse_docmodel
from docmodel.artifacts import Manifest, RevisionLayout
from docmodel.digests import evaluation_digest
from docmodel.revision import list_source
from docmodel.storage import S3Store
from docmodel_devenv.stack import DevEnv

from benchlib import cpu_model, write_result
from testkit.reports import uniform_report, uniform_scores

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "bench" / "results" / "operator_scale.json"
NAMESPACE = "scale"
KWOK = {"docmodel.dev/node-kind": "kwok"}
POLL = "2m"
SMALL = {"gpu": 0, "cpu": "100m", "memory": "128Mi", "ephemeralStorage": "1Gi"}


def kubectl(env: DevEnv, *args: str) -> None:
    subprocess.run(
        [str(env.binaries["kubectl"]), f"--kubeconfig={env.kubeconfig}", *args],
        check=True,
        capture_output=True,
    )


def manifest(name: str, bucket: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "source": {
            "bucket": bucket,
            "prefix": "docs/",
            "endpoint": endpoint,
            "secretRef": {"name": "docmodel-s3"},
        },
        "baseModel": {"name": "meta-llama/Llama-3.1-8B-Instruct"},
        # Small requests, so that every pod fits the kwok nodes at once (GPUs would not).
        "training": {"method": "lora", "nodeSelector": KWOK, "resources": SMALL},
        "serving": {"nodeSelector": KWOK, "resources": SMALL},
        "retraining": {"pollInterval": POLL},
        **extra,
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DocModel",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": spec,
    }


class Store:
    """The artifact store, where this script plays the workloads' part."""

    def __init__(self, bucket: str, creds: Any):
        self.s3 = S3Store(
            bucket,
            "artifacts",
            endpoint=creds.endpoint,
            credentials=creds.keys,
        )

    def seed(self, body: dict[str, Any], revision: str, kinds: tuple[str, ...]) -> None:
        meta = body["metadata"]
        layout = RevisionLayout(meta["namespace"], meta["name"], revision)
        dm = parse_docmodel(body)
        for kind in kinds:
            inputs: dict[str, str] = {}
            if kind == "eval":
                uri = layout.uri(self.s3.uri, "adapter")
                inputs = {"adapter": uri, "evaluation": evaluation_digest(dm.spec)}
                # The gate decides on per-question scores, at least minQuestions of them.
                report = uniform_report(
                    {"candidate": uniform_scores(0.8), "baseline": uniform_scores(0.2)},
                    questions=dm.spec.evaluation.min_questions,
                    revision=revision,
                    base_model=dm.spec.base_model.name,
                    adapter_uri=uri,
                )
                self.s3.put_bytes(
                    layout.key("eval", "report.json"), report.model_dump_json().encode()
                )
            manifest_ = Manifest(kind=kind, revision=revision, inputs=inputs)  # type: ignore[arg-type]
            self.s3.put_bytes(
                layout.key(kind, "manifest.json"), manifest_.model_dump_json().encode()
            )  # type: ignore[arg-type]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def audit_counts(log: Path, since: datetime, until: datetime) -> dict[str, int]:
    """Non-WATCH requests by user agent family within [since, until)."""
    counts: dict[str, int] = {}
    with log.open() as fh:
        for line in fh:
            event = json.loads(line)
            if event.get("stage") != "ResponseComplete" or event.get("verb") == "watch":
                continue
            at = datetime.fromisoformat(event["requestReceivedTimestamp"].replace("Z", "+00:00"))
            if not since <= at < until:
                continue
            agent = event.get("userAgent", "")
            family = (
                "docmodel-operator"
                if agent.startswith("docmodel-operator")
                else "kopf"
                if agent.startswith("kopf")
                else None
            )
            if family:
                counts[family] = counts.get(family, 0) + 1
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--extra", type=int, default=800, help="suspended DocModels added after")
    parser.add_argument("--idle-seconds", type=float, default=360)
    parser.add_argument(
        "--settle-seconds",
        type=float,
        default=120,
        help="wait after every DocModel is Ready: kwok and the controllers are still updating "
        "200 pods and Deployments, whose events rightly reconcile their DocModels",
    )
    parser.add_argument("--output", type=Path, default=RESULT)
    parser.add_argument("--keep", action="store_true", help="keep the dev environment's files")
    args = parser.parse_args()

    env = DevEnv.create(audit=True, keep_workdir=args.keep)
    env.start()
    operator = None
    try:
        assert env.minio is not None and env.s3 is not None and env.api is not None
        creds = env.s3
        kubectl(env, "apply", "--server-side", "-f", str(ROOT / "crds"))
        kubectl(env, "wait", "--for=condition=Established", "crd/docmodels.docmodel.dev")
        kubectl(env, "create", "namespace", NAMESPACE)
        from docmodel_devenv.minio import put_secret

        put_secret(env.api, creds, NAMESPACE, "docmodel-s3")
        put_secret(env.api, creds, NAMESPACE, "docmodel-store")
        for bucket in ("docs", "store"):
            env.minio.create_bucket(bucket)
        client = creds.client()
        client.put_object(Bucket="docs", Key="docs/guide.md", Body=b"# Guide\n\nHello.\n")
        store = Store("store", creds)

        from kubernetes import client as k8s
        from kubernetes import config, watch

        config.load_kube_config(str(env.kubeconfig))
        custom = k8s.CustomObjectsApi()
        batch = k8s.BatchV1Api()
        core = k8s.CoreV1Api()
        apps = k8s.AppsV1Api()

        bodies = {
            f"dm-{i:04d}": manifest(f"dm-{i:04d}", "docs", creds.endpoint)
            for i in range(args.count)
        }
        first = next(iter(bodies.values()))
        dm = parse_docmodel(first)
        source = S3Store(
            "docs",
            "docs/",
            endpoint=creds.endpoint,
            credentials=creds.keys,
        )
        revision = list_source(dm.spec, source).revision  # the same for every DocModel
        for body in bodies.values():
            store.seed(body, revision, ("dataset", "adapter"))

        job_seen: dict[str, float] = {}  # by DocModel: its first Job
        first_job: dict[str, float] = {}  # by Job name: the first Job of each DocModel
        pod_seen: dict[str, float] = {}  # by Job name: its first pod
        reports = ThreadPoolExecutor(8)

        def watch_jobs() -> None:
            for event in watch.Watch().stream(
                batch.list_namespaced_job, NAMESPACE, timeout_seconds=3600
            ):
                if event["type"] != "ADDED":
                    continue
                name = event["object"].metadata.labels[labels.INSTANCE]
                if name not in job_seen:
                    job_seen[name] = first_job[event["object"].metadata.name] = time.monotonic()
                    reports.submit(store.seed, bodies[name], revision, ("eval",))

        def watch_pods() -> None:
            for event in watch.Watch().stream(
                core.list_namespaced_pod, NAMESPACE, timeout_seconds=3600
            ):
                pod_labels = event["object"].metadata.labels or {}
                job = pod_labels.get("batch.kubernetes.io/job-name")
                if event["type"] == "ADDED" and job and job not in pod_seen:
                    pod_seen[job] = time.monotonic()

        def quietly(watching: Any) -> Any:
            def run() -> None:
                with contextlib.suppress(Exception):  # the API server stops at the end
                    watching()

            return run

        threading.Thread(target=quietly(watch_jobs), daemon=True).start()
        threading.Thread(target=quietly(watch_pods), daemon=True).start()
        time.sleep(1)

        log = env.workdir / "operator.log"
        print(f"Operator log: {log}", file=sys.stderr)
        operator_env = {
            **os.environ,
            "KUBECONFIG": str(env.kubeconfig),
            "DOCMODEL_OPERATOR_STORE_URI": "s3://store/artifacts",
            "DOCMODEL_OPERATOR_STORE_ENDPOINT": creds.endpoint,
            "DOCMODEL_STORE_AWS_ACCESS_KEY_ID": creds.access_key,
            "DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY": creds.secret_key,
            "DOCMODEL_OPERATOR_NAMESPACES": NAMESPACE,
            "DOCMODEL_OPERATOR_PEERING": "",
            "DOCMODEL_OPERATOR_CLEANUP_DELAY_SECONDS": "5",
            "DOCMODEL_OPERATOR_LIVENESS_PORT": "0",
            "DOCMODEL_OPERATOR_METRICS_PORT": "0",
        }
        with log.open("wb") as out:
            operator = subprocess.Popen(
                [sys.executable, "-m", "docmodel_operator"],
                env=operator_env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        # Settled: the operator hands freed heap back to the OS once a minute (measured the
        # same way at every count).
        time.sleep(65)
        rss_at_start = rss_mb(operator.pid)
        run_from = datetime.now(UTC)

        applied: dict[str, float] = {}
        started = time.monotonic()
        for name, body in bodies.items():
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
            applied[name] = time.monotonic()
        burst_s = time.monotonic() - started
        deadline = time.monotonic() + 600
        while len(job_seen) < len(bodies) and time.monotonic() < deadline:
            time.sleep(0.5)
        latencies = sorted(job_seen[n] - applied[n] for n in bodies if n in job_seen)
        print(f"Jobs for {len(latencies)}/{len(bodies)} DocModels", file=sys.stderr)
        deadline = time.monotonic() + 120
        while (
            len(pod_seen.keys() & first_job.keys()) < len(first_job) and time.monotonic() < deadline
        ):
            time.sleep(0.5)
        pod_latencies = sorted(pod_seen[j] - first_job[j] for j in first_job if j in pod_seen)
        print(f"Pods for {len(pod_latencies)}/{len(first_job)} Jobs", file=sys.stderr)

        def serving() -> int:
            items = custom.list_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL)["items"]
            return sum(1 for i in items if (i.get("status") or {}).get("phase") == "Ready")

        deadline = time.monotonic() + 900
        while (ready := serving()) < len(bodies) and time.monotonic() < deadline:
            print(f"Ready {ready}/{len(bodies)}", file=sys.stderr)
            time.sleep(10)
        ready_s = time.monotonic() - started
        time.sleep(args.settle_seconds)
        rss_at_count = rss_mb(operator.pid)

        idle_from = datetime.now(UTC)
        time.sleep(args.idle_seconds)
        idle_to = datetime.now(UTC)
        assert env.control_plane is not None
        counts = audit_counts(env.control_plane.audit_log, idle_from, idle_to)
        busy = audit_counts(env.control_plane.audit_log, run_from, idle_from)
        minutes = (idle_to - idle_from).total_seconds() / 60
        per_dm_min = sum(counts.values()) / len(bodies) / minutes
        polls_per_dm_min = 60 / duration_seconds(POLL)

        for i in range(args.extra):
            body = manifest(f"extra-{i:04d}", "docs", creds.endpoint, suspend=True)
            custom.create_namespaced_custom_object(GROUP, VERSION, NAMESPACE, PLURAL, body)
        time.sleep(min(120, 10 + args.extra * 0.1))
        rss_at_total = rss_mb(operator.pid)

        def pct(q: float, values: list[float] = latencies) -> float | None:
            if not values:
                return None
            return round(values[min(len(values) - 1, int(q * len(values)))], 3)

        operator_p99, controller_p99 = pct(0.99), pct(0.99, pod_latencies)

        result = {
            "benchmark": "operator_scale",
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {"cpu": cpu_model(), "cpu_count": os.cpu_count()},
            "docmodels": len(bodies),
            "burst_create_s": round(burst_s, 2),
            "jobs_seen": len(latencies),
            "apply_to_job_p50_s": pct(0.5),
            "apply_to_job_p99_s": pct(0.99),
            "apply_to_job_max_s": round(latencies[-1], 3) if latencies else None,
            "apply_to_job_mean_s": round(statistics.mean(latencies), 3) if latencies else None,
            "pods_seen": len(pod_latencies),
            "job_to_pod_p50_s": pct(0.5, pod_latencies),
            "job_to_pod_p99_s": controller_p99,
            "job_to_pod_max_s": round(pod_latencies[-1], 3) if pod_latencies else None,
            "apply_to_job_over_job_to_pod_p99": (
                round(operator_p99 / controller_p99, 2)
                if operator_p99 is not None and controller_p99
                else None
            ),
            "ready": serving(),
            "all_ready_after_s": round(ready_s, 1),
            "settle_s": args.settle_seconds,
            "idle_window_s": round(minutes * 60, 1),
            "requests_until_ready": busy,
            "idle_requests": counts,
            "idle_api_requests_per_dm_per_min": round(per_dm_min, 3),
            "source_polls_per_dm_per_min": round(polls_per_dm_min, 3),
            "poll_interval": POLL,
            "rss_mb": {
                "0": round(rss_at_start, 1),
                str(len(bodies)): round(rss_at_count, 1),
                str(len(bodies) + args.extra): round(rss_at_total, 1),
            },
            "deployments": len(apps.list_namespaced_deployment(NAMESPACE).items),
        }
        write_result(
            args.output,
            result,
            (
                "apply_to_job_p50_s",
                "apply_to_job_p99_s",
                "job_to_pod_p99_s",
                "apply_to_job_over_job_to_pod_p99",
                "idle_api_requests_per_dm_per_min",
                "source_polls_per_dm_per_min",
                "rss_mb",
            ),
        )
        return 0
    finally:
        if operator is not None:
            operator.terminate()
            operator.wait(timeout=30)
        env.stop()


if __name__ == "__main__":
    raise SystemExit(main())
