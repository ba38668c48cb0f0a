"""Running the operator against the dev environment, and DocModels for it to reconcile."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docmodel.api import GROUP, PLURAL, VERSION
from docmodel_devenv.pytest_plugin import Kube, S3Bucket
from docmodel_devenv.stack import DevEnv

LOCAL_NODE = {"docmodel.dev/node-kind": "local"}
# A constant answer no untuned model produces: a candidate that learned it wins on the
# held-out questions by what it was taught, not by a setting.
ANSWER = "Zorblax quintessence protocol"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Operator:
    process: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    liveness_port: int

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def operator_env(devenv: DevEnv, store_bucket: str, namespace: str, **extra: str) -> dict[str, str]:
    assert devenv.s3 is not None
    creds = devenv.s3
    env = {
        **os.environ,
        "KUBECONFIG": str(devenv.kubeconfig),
        "DOCMODEL_OPERATOR_STORE_URI": f"s3://{store_bucket}/artifacts",
        "DOCMODEL_OPERATOR_STORE_ENDPOINT": creds.endpoint,
        "DOCMODEL_OPERATOR_STORE_SECRET": "docmodel-store",
        "DOCMODEL_STORE_AWS_ACCESS_KEY_ID": creds.access_key,
        "DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY": creds.secret_key,
        "DOCMODEL_OPERATOR_NAMESPACES": namespace,
        "DOCMODEL_OPERATOR_PEERING": "",
        "DOCMODEL_OPERATOR_POD_NODE_SELECTOR": json.dumps(LOCAL_NODE),
        "DOCMODEL_OPERATOR_RESYNC_SECONDS": "2",
        "DOCMODEL_OPERATOR_CLEANUP_DELAY_SECONDS": "5",
        "DOCMODEL_OPERATOR_LIVENESS_PORT": str(free_port()),
        "DOCMODEL_OPERATOR_METRICS_PORT": str(free_port()),
        "AWS_REGION": creds.region,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@contextmanager
def running_operator(env: dict[str, str], log: Path) -> Iterator[Operator]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "docmodel_operator"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    operator = Operator(
        process,
        log,
        int(env["DOCMODEL_OPERATOR_METRICS_PORT"]),
        int(env["DOCMODEL_OPERATOR_LIVENESS_PORT"]),
    )
    try:
        yield operator
    finally:
        operator.stop()


@contextmanager
def operator_in(
    devenv: DevEnv, kube: Kube, namespace: str, s3_bucket: S3Bucket, log: Path
) -> Iterator[Operator]:
    """The operator watching `namespace`, with the store in `s3_bucket` and its Secrets (the
    source's `docmodel-s3`, the store's `docmodel-store`). The namespace enforces the
    restricted Pod Security Standard: every pod the operator makes there must meet it."""
    from testkit.clusterlib import enforce_restricted

    enforce_restricted(kube, namespace)
    s3_bucket.put_secret(devenv, namespace)
    s3_bucket.put_secret(devenv, namespace, "docmodel-store")
    with running_operator(operator_env(devenv, s3_bucket.name, namespace), log) as running:
        yield running


def docmodel(name: str, bucket: str, endpoint: str, base_model: str, **spec: Any) -> dict[str, Any]:
    """A DocModel that trains on the CPU of the local node in about a minute."""
    body: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DocModel",
        "metadata": {"name": name},
        "spec": {
            "source": {
                "bucket": bucket,
                "prefix": "docs/",
                "endpoint": endpoint,
                "secretRef": {"name": "docmodel-s3"},
            },
            "baseModel": {"name": base_model},
            "dataset": {
                "generator": "provided",
                "evalFraction": 0.25,
                "seed": 7,
                "chunking": {"maxTokens": 64, "overlapTokens": 16},
            },
            "training": {
                "method": "lora",
                "epochs": 12,
                "learningRate": 0.005,
                "maxSeqLength": 128,
                "batchSize": 4,
                "gradientAccumulationSteps": 1,
                "resources": {"gpu": 0, "cpu": "1", "memory": "2Gi"},
                "nodeSelector": LOCAL_NODE,
            },
            "evaluation": {
                "maxQuestions": 16,
                "minQuestions": 4,
                "maxNewTokens": 8,
                "minImprovement": 0.1,
            },
            "serving": {
                "resources": {"gpu": 0, "cpu": "1", "memory": "2Gi"},
                "progressDeadlineSeconds": 300,
            },
            "retraining": {"pollInterval": "30s"},
        },
    }
    for section, values in spec.items():
        if isinstance(values, dict):
            body["spec"].setdefault(section, {}).update(values)
        else:
            body["spec"][section] = values
    return body


def put_docs(s3: Any, bucket: str, names: list[str], answer: str | None = ANSWER) -> None:
    """Documents, each with provided QA pairs whose answer is `answer` (None: an answer of
    its own for each question, which no model can guess for a held-out question)."""
    for name in names:
        text = f"# {name.title()}\n\nThe {name} team owns the {name} service and its runbook.\n"
        s3.put_object(Bucket=bucket, Key=f"docs/{name}.md", Body=text.encode())
        pairs = [
            {"question": f"What is the {name} {topic}?", "answer": answer or f"{name}-{i}-{topic}"}
            for i, topic in enumerate(("protocol", "codename", "password policy", "escalation"))
        ]
        body = "\n".join(json.dumps(p) for p in pairs) + "\n"
        s3.put_object(Bucket=bucket, Key=f"docs/{name}.qa.jsonl", Body=body.encode())


def get(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = kube.custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return obj


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond["type"] == type_:
            return dict(cond)
    return None


def wait_status(
    kube: Kube, namespace: str, name: str, check: Any, timeout: float, what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    obj: dict[str, Any] = {}
    while time.monotonic() < deadline:
        obj = get(kube, namespace, name)
        if check(obj):
            return obj
        time.sleep(1)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}; status: "
        + json.dumps(obj.get("status"), indent=1)[-4000:]
    )


class AddedEvents:
    """Counts ADDED events of Jobs and Deployments in a namespace, for the whole test."""

    def __init__(self, kube: Kube, namespace: str):
        from kubernetes import watch

        self.counts: dict[str, int] = {}
        self.errors: list[Exception] = []
        self.stopped = False
        self.watches = [watch.Watch(), watch.Watch()]
        self.threads = [
            threading.Thread(target=self._run, args=(w, kind, fn, namespace), daemon=True)
            for w, (kind, fn) in zip(
                self.watches,
                (
                    ("Job", kube.batch.list_namespaced_job),
                    ("Deployment", kube.apps.list_namespaced_deployment),
                ),
                strict=True,
            )
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, w: Any, kind: str, fn: Any, namespace: str) -> None:
        try:
            for event in w.stream(fn, namespace, timeout_seconds=1800):
                if event["type"] == "ADDED":
                    key = f"{kind}/{event['object'].metadata.name}"
                    self.counts[key] = self.counts.get(key, 0) + 1
        except Exception as exc:  # a watch that breaks before the end fails the test
            if not self.stopped:
                self.errors.append(exc)

    def stop(self) -> None:
        self.stopped = True
        for w in self.watches:
            w.stop()
        for thread in self.threads:
            thread.join(timeout=5)
        assert not self.errors, self.errors
