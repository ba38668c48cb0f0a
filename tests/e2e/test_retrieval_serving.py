"""A retrieval candidate end to end on CPU: `docmodel local run` trains it (RAFT examples from
the retriever's top-k, documents kept out), evaluates it in its kind against the RAG baseline
and judges it; then, whatever the verdict, `docmodel local serve --revision` serves it and a
request through the official `openai` client gets an answer built from the retrieved passages:
the messages the engine was given (the server's prompt log) are the core prompt builder's output
for the question and the passages the core retriever finds (the default retriever, Hybrid: BM25
and the packaged embedding model fused by reciprocal rank). Then the front process (what runs
in front of vLLM) in front of a local server that does not retrieve itself: the same text
reaches the engine, streaming included.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from docmodel.dataset import QAPair, read_jsonl
from docmodel.report import EvalReport
from docmodel.retrieval import context_messages, question_messages, read_index, read_vectors
from docmodel.search import open_retriever
from docmodel_trainer.tinymodel import build_tiny_llama

from testkit.corpus import copy_corpus
from testkit.models import embedding_encoder
from testkit.server_factory import free_port, is_ready

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DOCMODEL = [sys.executable, "-m", "docmodel_local.cli"]
NS, NAME = "docs", "handbook"


def manifest(base: Path) -> dict:  # type: ignore[type-arg]
    return {
        "apiVersion": "docmodel.dev/v1alpha1",
        "kind": "DocModel",
        "metadata": {"name": NAME, "namespace": NS},
        "spec": {
            "source": {"bucket": "local-docs"},
            "baseModel": {"name": str(base)},
            "dataset": {"generator": "extractive", "evalFraction": 0.25, "seed": 1234},
            "training": {
                "method": "lora",
                "candidate": {"kind": "Retrieval", "goldPassageProbability": 0.8},
                "epochs": 1,
                "qaFirstEpochs": 0,
                "learningRate": 5e-3,
                "maxSeqLength": 1024,
                "batchSize": 4,
                "gradientAccumulationSteps": 1,
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
                "resources": {"gpu": 0},
            },
            "evaluation": {
                "maxQuestions": 24,
                "minQuestions": 4,
                "maxNewTokens": 8,
                "minImprovement": 0.0,
                "baseline": {"topK": 2},
            },
            "serving": {"maxModelLen": 2048},
        },
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("retrieval")
    docs = copy_corpus(root / "docs")
    base = build_tiny_llama(root / "model", corpus=docs, vocab_size=512, hidden_size=64)
    dm = root / "dm.yaml"
    dm.write_text(yaml.safe_dump(manifest(base)))
    store = root / "store"
    args = ["--docmodel", str(dm), "--store", str(store)]
    run = subprocess.run(
        [*DOCMODEL, "local", "run", *args, "--docs", str(docs)],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    state = json.loads((store / NS / NAME / "local-state.json").read_text())
    revision = state["history"][0]["revision"]
    return {"root": root, "store": store, "args": args, "revision": revision, "state": state}


def test_the_candidate_is_trained_and_judged_in_its_kind(trained: dict[str, object]) -> None:
    store, revision = Path(str(trained["store"])), str(trained["revision"])
    rev_dir = store / NS / NAME / f"rev-{revision}"
    adapter = rev_dir / "adapter"
    found = read_index(adapter)
    assert found is not None
    index, passages = found
    assert index.top_k == 2 and len(index.documents_not_trained) == 2
    assert {c.source for c in passages if c.split == "untrained"} == set(
        index.documents_not_trained
    )

    data = json.loads((adapter / "training_data.json").read_text())
    retrieval = data["mix"]["retrieval_examples"]
    assert retrieval["count"] > 0 and 0 < retrieval["with_gold_passage"] <= retrieval["count"]
    assert data["mix"]["documents_kept_out"] == index.documents_not_trained
    assert data["seen"]["eval_questions_seen_in_training"] == 0
    trained_docs = set(data["mix"]["phases"][0]["examples_per_pass"]) >= {"qa", "context"}
    assert trained_docs
    # No passage of a document kept out was trained on, in any example.
    untrained_chunks = {c.id for c in passages if c.split == "untrained"}
    assert untrained_chunks and not any(
        c.chunk_id in untrained_chunks
        for c in read_jsonl(rev_dir / "dataset" / "train.jsonl", QAPair)
    )

    report = EvalReport.model_validate_json((rev_dir / "eval" / "report.json").read_text())
    assert report.kinds == {"candidate": "Retrieval"}
    unseen = [q for q in report.questions if not q.document_trained]
    assert unseen and {q.source for q in unseen} <= set(index.documents_not_trained)
    # The candidate answered with the baseline's prompt: the same prompt tokens per question.
    assert all(
        q.prompt_tokens["candidate"] == q.prompt_tokens["baseline"] for q in report.questions
    )
    assert all(q.prompt_tokens["base"] < q.prompt_tokens["baseline"] for q in report.questions)
    history = trained["state"]["history"][0]  # type: ignore[index]
    assert history["verdict"] in ("Promoted", "Rejected") and "RAG baseline" in history["reason"]

    status = subprocess.run(
        [*DOCMODEL, "local", "status", *trained["args"]],  # type: ignore[misc]
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    rows = [line.split() for line in status.stdout.splitlines()]
    assert [revision, history["verdict"]] in [row[:2] for row in rows]


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-4000:]
        if is_ready(url):
            return
        time.sleep(0.5)
    raise AssertionError(f"not ready: {log.read_text()[-4000:]}")


def _expected(adapter: Path, question: str) -> tuple[list[dict[str, str]], list[str]]:
    found = read_index(adapter)
    assert found is not None
    index, passages = found
    # The revision's own retriever (the default, Hybrid: the passages' embeddings came with
    # the adapter, the query is embedded here as the server embeds it).
    assert index.retriever == "Hybrid" and index.embedding is not None
    retriever = open_retriever(
        index.retriever, passages, read_vectors(adapter, index), embedding_encoder()
    )
    (hits,) = retriever.retrieve([question], index.top_k)
    return context_messages(question, hits), [c.id for c in hits]


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_local_serve_retrieves_for_every_chat_request(trained: dict[str, object]) -> None:
    from openai import OpenAI

    root, store = Path(str(trained["root"])), Path(str(trained["store"]))
    revision = str(trained["revision"])
    adapter = store / NS / NAME / f"rev-{revision}" / "adapter"
    prompt_log, port, log = root / "served-prompts.jsonl", free_port(), root / "serve.log"
    env = {**os.environ, "DOCMODEL_PROMPT_LOG": str(prompt_log)}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *DOCMODEL,
                *("local", "serve", *trained["args"], "--revision", revision),  # type: ignore[misc]
                *("--port", str(port), "--question", "What is the default payment term?"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{port}", process, log, 300)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused")
        question = "How often are invoices generated?"
        reply = client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": question}],
            max_tokens=8,
            temperature=0,
        )
        assert reply.choices[0].message.content and reply.usage is not None
        records = [json.loads(line) for line in prompt_log.read_text().splitlines()]
        # `local serve` asks its own --question once the server is ready, which may be logged
        # before or after this request: find this request's record by its question.
        (record,) = [r for r in records if r["messages"][-1]["content"].endswith(question)]
        messages, ids = _expected(adapter, question)
        assert record["passages"] == ids and ids
        assert record["messages"] == messages
        # What the usage counts is that prompt: far longer than the bare question.
        assert reply.usage.prompt_tokens > 3 * len(question.split())
    finally:
        _stop(process)
    # SIGTERM to `local serve` stops the server it started, too.
    assert not is_ready(f"http://127.0.0.1:{port}")


def test_front_process_in_front_of_a_local_server(trained: dict[str, object]) -> None:
    from openai import OpenAI

    from testkit.server_factory import server_env

    root, store = Path(str(trained["root"])), Path(str(trained["store"]))
    adapter = store / NS / NAME / f"rev-{trained['revision']}" / "adapter"
    base = str(yaml.safe_load((root / "dm.yaml").read_text())["spec"]["baseModel"]["name"])
    prompt_log = root / "front-prompts.jsonl"
    upstream_port, front_port = free_port(), free_port()
    env = server_env(
        base,
        str(adapter),
        upstream_port,
        root / "upstream-work",
        DOCMODEL_RETRIEVAL="false",
        DOCMODEL_PROMPT_LOG=str(prompt_log),
        DOCMODEL_MAX_MODEL_LEN="2048",
    )
    env["DOCMODEL_SERVED_NAME"] = NAME
    upstream_log, front_log = root / "upstream.log", root / "front.log"
    with upstream_log.open("wb") as out:
        upstream = subprocess.Popen(
            [sys.executable, "-m", "docmodel_server", "serve", "--engine", "local"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    front_env = {**env, "DOCMODEL_PORT": str(front_port)}
    front_env.pop("DOCMODEL_PROMPT_LOG")
    with front_log.open("wb") as out:
        front = subprocess.Popen(
            [
                *(sys.executable, "-m", "docmodel_server", "front", "--adapter", str(adapter)),
                *("--upstream", f"http://127.0.0.1:{upstream_port}"),
            ],
            env=front_env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{upstream_port}", upstream, upstream_log, 300)
        _wait_ready(f"http://127.0.0.1:{front_port}", front, front_log, 120)
        client = OpenAI(base_url=f"http://127.0.0.1:{front_port}/v1", api_key="unused")
        assert NAME in [m.id for m in client.models.list().data]  # passed through
        question = "Which cluster serves the production environment?"
        stream = client.chat.completions.create(
            model=NAME,
            messages=[{"role": "user", "content": question}],
            max_tokens=8,
            temperature=0,
            stream=True,
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text
        (record,) = [json.loads(line) for line in prompt_log.read_text().splitlines()]
        messages, ids = _expected(adapter, question)
        assert record["messages"] == messages and record["passages"] == []  # retrieved in front
        assert ids
        # The local server alone (no front, retrieval off) gets the question without passages,
        # after the system message every served prompt opens with.
        plain = OpenAI(base_url=f"http://127.0.0.1:{upstream_port}/v1", api_key="unused")
        plain.chat.completions.create(
            model=NAME, messages=[{"role": "user", "content": question}], max_tokens=4
        )
        last = json.loads(prompt_log.read_text().splitlines()[-1])
        assert last["messages"] == question_messages(question)
    finally:
        _stop(front)
        _stop(upstream)
