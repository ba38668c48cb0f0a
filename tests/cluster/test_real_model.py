"""The operator's lifecycle on a real instruct model, loaded the way a cluster without Hub access
loads it: SmolLM2-135M-Instruct (converted from the demo-model package) uploaded to MinIO and
named by `baseModel.mirror`, and the default retriever (Hybrid) with its embedding model
(all-MiniLM-L6-v2, from the embedding package) likewise named only by
`evaluation.baseline.embeddingModel.mirror`. The ingest, train and evaluate Jobs (pods run as
processes on the local node) download the mirrors with the source's endpoint and credentials;
a few questions keep the run inside CI's time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from docmodel import basemodel
from docmodel.api import GROUP, PLURAL, VERSION, EmbeddingModelSpec
from docmodel.report import EvalReport
from docmodel.storage import S3Store, upload_tree
from docmodel_devenv.pytest_plugin import Kube, S3Bucket
from docmodel_devenv.stack import DevEnv

from testkit.models import smollm2
from testkit.operatorlib import (
    Operator,
    condition,
    docmodel,
    operator_env,
    put_docs,
    running_operator,
    wait_status,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e, pytest.mark.slow]

# A name no package ships and no cache holds: the mirror is the only place to find it.
MIRRORED = "docmodel-tests/SmolLM2-135M-Instruct-mirror"
EMBEDDING_MIRRORED = "docmodel-tests/all-MiniLM-L6-v2-mirror"


@pytest.fixture
def operator(devenv: DevEnv, crd: str, namespace: str, s3_bucket: S3Bucket, tmp_path: Path) -> Any:
    s3_bucket.put_secret(devenv, namespace)
    s3_bucket.put_secret(devenv, namespace, "docmodel-store")
    env = operator_env(devenv, s3_bucket.name, namespace)
    with running_operator(env, tmp_path / "operator.log") as running:
        yield running


def pod_log(kube: Kube, namespace: str, step: str) -> str:
    pods = kube.core.list_namespaced_pod(namespace, label_selector=f"docmodel.dev/step={step}")
    return "\n".join(
        kube.core.read_namespaced_pod_log(p.metadata.name, namespace) for p in pods.items
    )


def test_a_real_model_from_an_s3_mirror_is_trained_and_judged(
    kube: Kube, namespace: str, s3_bucket: S3Bucket, operator: Operator
) -> None:
    model = smollm2()
    store = S3Store(s3_bucket.name, "", client=s3_bucket.client())
    keys = upload_tree(model, store, "models/smollm2")
    assert "models/smollm2/model.safetensors" in keys and "models/smollm2/config.json" in keys
    packaged = basemodel.locate(EmbeddingModelSpec()).path
    assert packaged is not None
    keys = upload_tree(packaged, store, "models/minilm")
    assert "models/minilm/1_Pooling/config.json" in keys

    put_docs(s3_bucket.client(), s3_bucket.name, ["billing", "payroll", "shipping", "support"])
    body = docmodel(
        "reader",
        s3_bucket.name,
        s3_bucket.endpoint,
        MIRRORED,
        training={"epochs": 1, "learningRate": 0.0002, "maxSeqLength": 256, "batchSize": 1},
        evaluation={"maxNewTokens": 12, "minImprovement": 0.0},
    )
    body["spec"]["baseModel"]["mirror"] = f"s3://{s3_bucket.name}/models/smollm2/"
    embedding_mirror = f"s3://{s3_bucket.name}/models/minilm/"
    body["spec"]["evaluation"]["baseline"] = {
        "embeddingModel": {"name": EMBEDDING_MIRRORED, "mirror": embedding_mirror}
    }
    kube.custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

    obj = wait_status(
        kube,
        namespace,
        "reader",
        lambda o: (
            (condition(o, "Evaluated") or {}).get("status") == "True"
            or (o.get("status") or {}).get("phase") == "Failed"
        ),
        900,
        "the evaluation",
    )
    status = obj["status"]
    assert status["phase"] != "Failed", status.get("lastFailure")
    assert status["candidate"]["verdict"] in {"Promoted", "Rejected"}
    assert status["candidate"]["score"] is not None
    assert status["candidate"]["baselineScore"] is not None

    # Both model steps took the base model from the mirror, with the source's endpoint.
    mirror = f"s3://{s3_bucket.name}/models/smollm2/"
    for step in ("train", "evaluate"):
        text = pod_log(kube, namespace, step)
        assert f"Downloaded base model mirror={mirror} files=" in text, text[-2000:]
        assert "threads=" in text  # the CPU path: threads from the cores the pod may use

    # The passages were embedded once, by ingest; evaluation embedded the questions: both took
    # the embedding model from its mirror.
    for step in ("ingest", "evaluate"):
        text = pod_log(kube, namespace, step)
        assert f"Downloaded embedding model mirror={embedding_mirror}" in text, text[-2000:]
    assert "Embedded passages retriever=Hybrid" in pod_log(kube, namespace, "ingest")

    # The report names the model; every question got an answer.
    uri = status["candidate"]["reportUri"]
    assert uri.startswith(f"s3://{s3_bucket.name}/"), uri
    report = EvalReport.model_validate_json(
        store.get_bytes(uri.removeprefix(f"s3://{s3_bucket.name}/"))
    )
    assert report.base_model == MIRRORED and report.gate_metric == "token_f1"
    assert report.decoding.adapter_weights == "merged"
    assert all(q.answers["baseline"].strip() for q in report.questions)
    # The baseline retrieved with the default retriever; recall of each retriever is reported.
    assert report.retriever == "Hybrid"
    assert set(report.diagnostics.recall_by_retriever) == {"BM25", "Dense", "Hybrid"}
