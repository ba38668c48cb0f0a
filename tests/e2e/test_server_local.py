"""The real `docmodel-server` (local engine) as a subprocess, called with the official openai client.

A tiny Llama and a LoRA adapter are built by the test and published to a local artifact store;
the server fetches the adapter by URI, as it does in a pod.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from testkit.server_factory import (
    SERVED_NAME,
    RunningServer,
    build_model_and_adapter,
    free_port,
    is_ready,
    server_env,
    start_server,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

API_KEY = "sk-test-e2e"
QUESTION = [{"role": "user", "content": "What is the default retention period?"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return build_model_and_adapter(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(
    tiny: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    base, adapter_uri = tiny
    work = tmp_path_factory.mktemp("server")
    env = server_env(base, adapter_uri, free_port(), work / "w", DOCMODEL_API_KEY=API_KEY)
    running = start_server(env, work / "server.log")
    yield running
    running.stop()
    assert API_KEY not in running.log(), "the API key must never be logged"


@pytest.fixture
def client(server: RunningServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120
    ) as client:
        yield client


def chat(client: openai.OpenAI, model: str = SERVED_NAME, **kwargs: object) -> str:
    request: dict[str, object] = {"max_tokens": 12, "temperature": 0, **kwargs}
    response = client.chat.completions.create(model=model, messages=QUESTION, **request)  # type: ignore[call-overload]
    return response.choices[0].message.content or ""


def test_models_lists_the_served_name(client: openai.OpenAI, tiny: tuple[Path, str]) -> None:
    ids = [model.id for model in client.models.list()]
    assert ids == [SERVED_NAME, str(tiny[0])]


def test_chat_completion(client: openai.OpenAI) -> None:
    response = client.chat.completions.create(
        model=SERVED_NAME, messages=QUESTION, max_tokens=12, temperature=0
    )
    choice = response.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert response.usage is not None
    assert 1 <= response.usage.completion_tokens <= 12
    assert (
        response.usage.total_tokens
        == response.usage.prompt_tokens + response.usage.completion_tokens
    )
    assert chat(client) == choice.message.content, "greedy decoding is deterministic"


def test_the_adapter_changes_the_answers(client: openai.OpenAI, tiny: tuple[Path, str]) -> None:
    assert chat(client) != chat(client, model=str(tiny[0]))


def test_streaming_reassembles_to_the_same_text(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=SERVED_NAME,
        messages=QUESTION,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in with_choices[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == chat(client)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_completions_and_their_stream(client: openai.OpenAI) -> None:
    whole = client.completions.create(
        model=SERVED_NAME, prompt="Configuration keys are", max_tokens=10, temperature=0
    )
    parts = client.completions.create(
        model=SERVED_NAME,
        prompt="Configuration keys are",
        max_tokens=10,
        temperature=0,
        stream=True,
    )
    assert "".join(c.choices[0].text for c in parts) == whole.choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens <= 10


def test_stop_strings_cut_the_answer(client: openai.OpenAI) -> None:
    full = chat(client)
    stop = full[len(full) // 2 :][:2]
    response = client.chat.completions.create(
        model=SERVED_NAME, messages=QUESTION, max_tokens=12, temperature=0, stop=[stop]
    )
    assert response.choices[0].message.content == full[: full.index(stop)]
    assert response.choices[0].finish_reason == "stop"


def test_sampling_with_a_seed_is_repeatable(client: openai.OpenAI) -> None:
    first = chat(client, temperature=1.0, top_p=0.9, seed=11)
    assert chat(client, temperature=1.0, top_p=0.9, seed=11) == first


def test_a_wrong_key_is_401(server: RunningServer) -> None:
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with wrong, pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert caught.value.status_code == 401


def test_an_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        chat(client, model="someone-else")


def test_a_bad_request_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="n=1"):
        chat(client, n=3)


def test_concurrent_requests_all_get_their_own_answer(client: openai.OpenAI) -> None:
    questions = [f"Question number {i}: which port does service {i} use?" for i in range(8)]

    def ask(question: str) -> str:
        response = client.chat.completions.create(
            model=SERVED_NAME,
            messages=[{"role": "user", "content": question}],
            max_tokens=10,
            temperature=0,
        )
        return response.choices[0].message.content or ""

    expected = [ask(q) for q in questions]
    assert len(set(expected)) > 1, "different prompts should give different answers"
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(ask, questions))
    assert answers == expected


def test_probe_cli(server: RunningServer) -> None:
    env = {**os.environ, "DOCMODEL_SERVED_NAME": SERVED_NAME, "DOCMODEL_ADAPTER_URI": "unused"}
    env["DOCMODEL_API_KEY"] = API_KEY
    probe = [sys.executable, "-m", "docmodel_server", "probe", "--url", server.url]
    ready = subprocess.run([*probe, "--ready"], env=env, capture_output=True, text=True, timeout=60)
    assert ready.returncode == 0, ready.stderr
    live = subprocess.run([*probe, "--live"], env=env, capture_output=True, text=True, timeout=60)
    assert live.returncode == 0, live.stderr
    env["DOCMODEL_SERVED_NAME"] = "not-served"
    missing = subprocess.run(
        [*probe, "--ready"], env=env, capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 1
    assert "not-served" in missing.stderr


def test_metrics_count_generated_tokens(server: RunningServer, client: openai.OpenAI) -> None:
    chat(client)
    import urllib.request

    with urllib.request.urlopen(server.url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    generated = [
        line
        for line in text.splitlines()
        if line.startswith("docmodel_server_generated_tokens_total")
    ]
    assert generated and float(generated[0].split()[-1]) > 0
    assert 'docmodel_server_requests_total{endpoint="/v1/chat/completions",status="200"}' in text


def _metric(server: RunningServer, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    values = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(values[0]) if values else 0.0


def test_a_client_that_leaves_stops_its_generation(
    server: RunningServer, client: openai.OpenAI
) -> None:
    counter = "docmodel_server_cancelled_requests_total"
    before = _metric(server, counter)
    long_request = {"model": SERVED_NAME, "prompt": "Once upon a time", "max_tokens": 2000}
    with pytest.raises(httpx.ReadTimeout):  # the client gives up and closes the connection
        httpx.post(
            server.url + "/v1/completions",
            json={**long_request, "temperature": 0},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=httpx.Timeout(30, read=0.5),
        )
    deadline = time.monotonic() + 10
    while _metric(server, counter) <= before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _metric(server, counter) == before + 1
    started = time.monotonic()
    assert chat(client, max_tokens=4) is not None
    assert time.monotonic() - started < 10, "the worker should be free again"


# ------------------------------------------------------------------------- startup failures


@pytest.mark.parametrize("where", ["missing-revision", "missing-directory"])
def test_an_adapter_that_cannot_be_fetched_fails_the_start(
    where: str, tiny: tuple[Path, str], tmp_path: Path
) -> None:
    base, adapter_uri = tiny
    if where == "missing-revision":  # the store exists, the revision's adapter does not
        uri = adapter_uri.replace("rev-e2e0000001", "rev-0000000bad")
    else:
        uri = str(tmp_path / "no-such-dir" / "adapter")
    port = free_port()
    env = server_env(base, uri, port, tmp_path / "work")
    process = subprocess.Popen(
        [sys.executable, "-m", "docmodel_server", "serve", "--engine", "local"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    ever_ready = False
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        ever_ready = ever_ready or is_ready(url)
        time.sleep(0.2)
    if process.poll() is None:
        process.kill()
    output = process.communicate(timeout=30)[0]
    assert process.returncode == 4, output
    assert uri in output
    assert not ever_ready
