"""The serving entrypoint's pure parts and the local server's HTTP surface (with a fake engine)."""

from __future__ import annotations

import asyncio
import http.server
import inspect
import json
import os
import socket
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
from fastapi.testclient import TestClient

from docmodel.artifacts import ArtifactIncomplete, ArtifactMissing, IntegrityError
from docmodel.failures import EXIT_BAD_INPUT
from docmodel.modelfacts import adapter_facts, vllm_max_lora_rank
from docmodel.retrieval import SYSTEM_PROMPT
from docmodel.storage import LocalStore
from docmodel_server import cli
from docmodel_server.app import create_app
from docmodel_server.engine import Finished, Job, SamplingParams, TextDelta, _held_back
from docmodel_server.model_files import fetch_adapter
from docmodel_server.probe import check_live, check_ready
from docmodel_server.settings import ServerSettings, SettingsError
from docmodel_server.vllm_engine import build_vllm_argv, build_vllm_env

ENV = {
    "DOCMODEL_SERVED_NAME": "handbook",
    "DOCMODEL_ADAPTER_URI": "s3://artifacts/ml/handbook/rev-abc123/adapter",
    "DOCMODEL_BASE_MODEL": "meta-llama/Llama-3.1-8B-Instruct",
    "DOCMODEL_MAX_MODEL_LEN": "4096",
    "DOCMODEL_GPU_MEMORY_UTILIZATION": "0.85",
    "DOCMODEL_PORT": "8000",
    "POD_IP": "10.0.0.7",
    "DOCMODEL_API_KEY": "sk-secret",
}


# ------------------------------------------------------------------------- settings and argv


def test_vllm_argv_is_pinned() -> None:
    settings = ServerSettings.from_env(ENV)
    argv = build_vllm_argv(
        settings, "/var/lib/docmodel/base", Path("/var/lib/docmodel/adapter"), 16
    )
    assert argv == [
        "vllm",
        "serve",
        "/var/lib/docmodel/base",
        "--served-model-name",
        "meta-llama/Llama-3.1-8B-Instruct",
        "--enable-lora",
        "--lora-modules",
        "handbook=/var/lib/docmodel/adapter",
        "--max-lora-rank",
        "16",
        "--max-loras",
        "1",
        "--max-model-len",
        "4096",
        "--gpu-memory-utilization",
        "0.85",
        "--host",
        "10.0.0.7",
        "--port",
        "8000",
    ]
    assert "sk-secret" not in " ".join(argv)


def test_vllm_env_carries_the_api_key_only_as_vllm_api_key() -> None:
    settings = ServerSettings.from_env(ENV)
    env = build_vllm_env(settings, {"DOCMODEL_API_KEY": "sk-secret", "PATH": "/usr/bin"})
    assert env == {"VLLM_API_KEY": "sk-secret", "PATH": "/usr/bin"}
    no_key = ServerSettings.from_env({**ENV, "DOCMODEL_API_KEY": ""})
    assert "VLLM_API_KEY" not in build_vllm_env(no_key, {"VLLM_API_KEY": "stale"})


def test_lora_rank_rounds_up_to_what_vllm_accepts() -> None:
    assert [vllm_max_lora_rank(r) for r in (1, 2, 8, 12, 16, 300, 512)] == [
        1,
        8,
        8,
        16,
        16,
        320,
        512,
    ]
    with pytest.raises(ValueError, match="513"):
        vllm_max_lora_rank(513)
    settings = ServerSettings.from_env({**ENV, "DOCMODEL_MAX_LORA_RANK": "64"})
    argv = build_vllm_argv(settings, "m", Path("/a"), 16)
    assert argv[argv.index("--max-lora-rank") + 1] == "64"
    small = ServerSettings.from_env({**ENV, "DOCMODEL_MAX_LORA_RANK": "8"})
    with pytest.raises(ValueError, match="smaller than the adapter's r=16"):
        build_vllm_argv(small, "m", Path("/a"), 16)


def test_extra_vllm_args_are_appended() -> None:
    settings = ServerSettings.from_env({**ENV, "DOCMODEL_VLLM_EXTRA_ARGS": "--max-num-seqs 64"})
    assert build_vllm_argv(settings, "m", Path("/a"), 8)[-2:] == ["--max-num-seqs", "64"]


def test_settings_defaults_and_host_from_pod_ip() -> None:
    minimal = {"DOCMODEL_SERVED_NAME": "x", "DOCMODEL_ADAPTER_URI": "/a"}
    settings = ServerSettings.from_env(minimal)
    assert (settings.host, settings.port, settings.engine) == ("0.0.0.0", 8000, "auto")
    assert settings.local_url == "http://127.0.0.1:8000"
    assert ServerSettings.from_env({**minimal, "POD_IP": "127.0.0.5"}).host == "127.0.0.5"
    explicit = ServerSettings.from_env({**minimal, "POD_IP": "127.0.0.5", "DOCMODEL_HOST": "::"})
    assert explicit.host == "::"
    assert ServerSettings.from_env(minimal, port=9000, engine="local").port == 9000
    assert "sk-secret" not in repr(ServerSettings.from_env(ENV))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DOCMODEL_ADAPTER_URI": "/a"}, "DOCMODEL_SERVED_NAME"),
        ({**ENV, "DOCMODEL_PORT": "http"}, "DOCMODEL_PORT"),
        ({**ENV, "DOCMODEL_ENGINE": "tpu"}, "DOCMODEL_ENGINE"),
        ({**ENV, "DOCMODEL_GPU_MEMORY_UTILIZATION": "1.5"}, "DOCMODEL_GPU_MEMORY_UTILIZATION"),
        ({**ENV, "DOCMODEL_SERVED_NAME": "a=b"}, "DOCMODEL_SERVED_NAME"),
        ({**ENV, "DOCMODEL_VLLM_EXTRA_ARGS": "--chat-template 'x"}, "DOCMODEL_VLLM_EXTRA_ARGS"),
    ],
)
def test_invalid_settings_name_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        ServerSettings.from_env(env)


def test_unsplittable_extra_args_exit_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DOCMODEL_VLLM_EXTRA_ARGS", '--chat-template "x')
    assert cli.main(["probe", "--live"]) == EXIT_BAD_INPUT
    assert "DOCMODEL_VLLM_EXTRA_ARGS: No closing quotation" in capsys.readouterr().err


def test_default_workdir_is_the_process_own() -> None:
    minimal = {"DOCMODEL_SERVED_NAME": "x", "DOCMODEL_ADAPTER_URI": "/a"}
    workdir = ServerSettings.from_env(minimal).workdir
    assert workdir == Path(tempfile.gettempdir()) / f"docmodel-server-{os.getpid()}"
    explicit = ServerSettings.from_env({**minimal, "DOCMODEL_WORKDIR": "/var/lib/docmodel"})
    assert explicit.workdir == Path("/var/lib/docmodel")


def test_engine_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    from docmodel_server import vllm_engine

    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: True)
    monkeypatch.setattr(vllm_engine, "gpu_present", lambda: True)
    assert cli.choose_engine("auto")[0] == "vllm"
    assert cli.choose_engine("local")[0] == "local"
    monkeypatch.setattr(vllm_engine, "gpu_present", lambda: False)
    assert cli.choose_engine("auto") == ("local", "no GPU is visible")
    monkeypatch.setattr(vllm_engine, "vllm_installed", lambda: False)
    assert cli.choose_engine("auto") == ("local", "vLLM is not installed")
    with pytest.raises(SettingsError, match="not installed"):
        cli.choose_engine("vllm")
    assert cli.choose_engine("vllm", dry_run=True) == ("vllm", "requested")


def test_dry_run_prints_the_vllm_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from docmodel.artifacts import Manifest, RevisionLayout, publish_dir

    src = tmp_path / "adapter-src"
    src.mkdir()
    (src / "adapter_config.json").write_text(json.dumps({"r": 12}))
    (src / "adapter_model.safetensors").write_bytes(b"weights")
    layout = RevisionLayout("ml", "handbook", "1")
    publish_dir(src, LocalStore(tmp_path / "store"), layout, Manifest(kind="adapter", revision="1"))
    mirror = LocalStore(tmp_path / "mirror")
    mirror.put_bytes("config.json", b"{}")
    mirror.put_bytes("model.safetensors", b"weights")
    monkeypatch.setattr(cli, "choose_engine", lambda requested, dry_run: ("vllm", "test"))
    for key, value in {
        "DOCMODEL_SERVED_NAME": "handbook",
        "DOCMODEL_BASE_MODEL_MIRROR": str(tmp_path / "mirror"),
        "DOCMODEL_API_KEY": "sk-secret",
        "DOCMODEL_ADAPTER_URI": str(tmp_path / "store/ml/handbook/rev-1/adapter"),
        "DOCMODEL_WORKDIR": str(tmp_path / "work"),
        "DOCMODEL_HOST": "127.0.0.9",
    }.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["serve", "--dry-run", "--port", "8100"]) == 0
    captured = capsys.readouterr()
    assert "sk-secret" not in captured.out + captured.err
    out = captured.out.split()
    assert out[:3] == ["vllm", "serve", str(tmp_path / "work/base")]
    assert (tmp_path / "work/base/model.safetensors").read_bytes() == b"weights"
    assert out[out.index("--served-model-name") + 1] == "meta-llama/Llama-3.1-8B-Instruct"
    assert f"handbook={tmp_path / 'work/adapter'}" in out
    assert out[out.index("--max-lora-rank") + 1] == "16"
    assert out[out.index("--port") + 1] == "8100"


# ------------------------------------------------------------------------- probes


class _Handler(http.server.BaseHTTPRequestHandler):
    models: ClassVar[list[str]] = ["handbook"]
    healthy: ClassVar[bool] = True

    def do_GET(self) -> None:
        if self.path == "/health":
            status, body = (200, b"") if self.healthy else (503, b"")
        elif self.headers.get("Authorization") != "Bearer k":
            status, body = 401, b'{"error": "Unauthorized"}'
        else:
            data = [{"id": name, "object": "model"} for name in self.models]
            status, body = 200, json.dumps({"object": "list", "data": data}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def fake_vllm() -> Iterator[str]:
    """An HTTP server answering /health and /v1/models the way vLLM does."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    _Handler.models, _Handler.healthy = ["handbook"], True


def test_ready_needs_health_and_the_served_name(fake_vllm: str) -> None:
    assert check_ready(fake_vllm, "handbook", "k").ok
    assert check_live(fake_vllm).ok
    wrong_key = check_ready(fake_vllm, "handbook", "nope")
    assert not wrong_key.ok and "401" in wrong_key.reason
    missing = check_ready(fake_vllm, "other", "k")
    assert not missing.ok and "'other' is not among the served models" in missing.reason
    _Handler.healthy = False
    assert not check_ready(fake_vllm, "handbook", "k").ok
    assert not check_live(fake_vllm).ok


def test_probe_of_a_closed_port_fails() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = check_live(f"http://127.0.0.1:{port}", timeout=1)
    assert not result.ok and "unreachable" in result.reason


# ------------------------------------------------------------------------- fetching


def publish_adapter(root: Path, config: dict[str, object], revision: str = "r1") -> str:
    from docmodel.artifacts import Manifest, RevisionLayout, publish_dir

    src = root / f"src-{revision}"
    src.mkdir(parents=True)
    (src / "adapter_config.json").write_text(json.dumps(config))
    (src / "adapter_model.safetensors").write_bytes(b"w" * 64)
    layout = RevisionLayout("ns", "m", revision)
    return publish_dir(
        src, LocalStore(root / "store"), layout, Manifest(kind="adapter", revision=revision)
    )


def test_the_server_fetches_adapters_with_the_cores_one_rule() -> None:
    from docmodel import artifacts
    from docmodel_server import model_files
    from docmodel_trainer import fetch as trainer_fetch

    assert model_files.fetch_adapter is artifacts.fetch_adapter
    # The trainer's is a thin wrapper that maps the same function's errors to exit codes.
    assert "artifacts.fetch_adapter(" in inspect.getsource(trainer_fetch.fetch_adapter)


def test_fetch_adapter_and_rank(tmp_path: Path) -> None:
    uri = publish_adapter(tmp_path, {"r": 8, "rank_pattern": {"q_proj": 32}})
    dest, manifest = fetch_adapter(uri, tmp_path / "dest")
    assert adapter_facts(dest).rank == 32 and manifest.kind == "adapter"


def test_adapter_facts_come_from_the_adapters_own_config(tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(
        json.dumps(
            {
                "r": 16,
                "target_modules": ["v_proj", "q_proj"],
                "base_model_name_or_path": "meta-llama/Llama-3.1-8B-Instruct",
            }
        )
    )
    facts = adapter_facts(tmp_path)
    assert (facts.rank, facts.target_modules, facts.base_model) == (
        16,
        ("q_proj", "v_proj"),
        "meta-llama/Llama-3.1-8B-Instruct",
    )
    (tmp_path / "adapter_config.json").write_text("{}")  # peft's defaults
    assert adapter_facts(tmp_path).rank == 8
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read the adapter config"):
        adapter_facts(tmp_path)


def test_fetch_adapter_refuses_an_adapter_without_its_manifest(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    store.put_bytes("rev-1/adapter/adapter_config.json", b"{}")
    store.put_bytes("rev-1/adapter/adapter_model.safetensors", b"w")
    with pytest.raises(ArtifactMissing, match=r"rev-1/adapter \(manifest\.json missing"):
        fetch_adapter(str(tmp_path / "store/rev-1/adapter"), tmp_path / "dest")
    with pytest.raises(ArtifactMissing, match="rev-2/adapter"):
        fetch_adapter(str(tmp_path / "store/rev-2/adapter"), tmp_path / "dest")


def test_fetch_adapter_refuses_a_published_tree_that_is_not_a_peft_adapter(tmp_path: Path) -> None:
    from docmodel.artifacts import Manifest, RevisionLayout, publish_dir

    plain = tmp_path / "plain"
    (plain / "sub").mkdir(parents=True)
    (plain / "sub/weights.bin").write_bytes(b"x")
    uri = publish_dir(
        plain,
        LocalStore(tmp_path / "store"),
        RevisionLayout("ns", "m", "r9"),
        Manifest(kind="adapter", revision="r9"),
    )
    with pytest.raises(ArtifactIncomplete, match=r"no adapter_config\.json"):
        fetch_adapter(uri, tmp_path / "dest")


def test_fetch_adapter_refuses_files_that_do_not_match_the_manifest(tmp_path: Path) -> None:
    uri = publish_adapter(tmp_path, {"r": 8})
    assert adapter_facts(fetch_adapter(uri, tmp_path / "ok")[0]).rank == 8
    (Path(uri) / "adapter_model.safetensors").write_bytes(b"x" * 64)  # tampered
    with pytest.raises(
        IntegrityError,
        match=r"adapter_model\.safetensors of the artifact at .*rev-r1/adapter has sha256",
    ):
        fetch_adapter(uri, tmp_path / "bad")


# ------------------------------------------------------------------------- the local server


def test_held_back_text() -> None:
    assert _held_back("hello", ()) == 0
    assert _held_back("hel\ufffd", ()) == 1
    assert _held_back("say EN", ("END",)) == 2
    assert _held_back("say E", ("END", "E!")) == 1


def test_next_batch_takes_the_oldest_jobs_with_the_same_adapter_setting() -> None:
    from types import SimpleNamespace

    from docmodel_server.engine import LocalEngine

    tokenizer = SimpleNamespace(pad_token_id=0, eos_token_id=1)
    engine = LocalEngine(SimpleNamespace(), tokenizer, max_model_len=64, max_batch_size=2)

    def job(adapter: bool) -> Job:
        return Job([1], SamplingParams(max_tokens=1), adapter, lambda event: None)

    a, b, c, d = job(True), job(False), job(True), job(True)
    gone = job(True)
    gone.cancelled.set()
    pending = deque([a, gone, b, c, d])
    assert engine._next_batch(pending) == [a, c]
    assert list(pending) == [b, d]
    assert engine._next_batch(pending) == [b]
    assert engine._next_batch(pending) == [d]
    assert engine._next_batch(pending) == []
    assert engine.cancelled_requests == 1  # `gone` was dropped


class FakeEngine:
    """Answers every prompt with a fixed reply, one word per delta, from a worker thread."""

    max_model_len = 64
    default_temperature = 0.6
    default_top_p = 0.9
    reply = ["Thirty", " days", "."]

    def __init__(self) -> None:
        self.jobs: list[Job] = []
        self.batches = 0
        self.batched_requests = 0
        self.cancelled_requests = 0

    def chat_prompt(self, messages: list[dict[str, str]]) -> list[int]:
        return self.encode(" ".join(m["content"] for m in messages))

    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))

    def alive(self) -> bool:
        return True

    def waiting(self) -> int:
        return 0

    def submit(self, job: Job) -> None:
        self.jobs.append(job)
        self.batches += 1
        self.batched_requests += 1

        def work() -> None:
            words = self.reply[: job.params.max_tokens]
            for word in words:
                job.emit(TextDelta(word))
            finish = "length" if len(words) < len(self.reply) else "stop"
            job.emit(Finished(finish, len(job.prompt_ids), len(words)))

        threading.Thread(target=work).start()


@pytest.fixture
def client() -> TestClient:
    app = create_app(FakeEngine(), served_name="handbook", base_name="base", api_key="k")
    return TestClient(app, headers={"Authorization": "Bearer k"})


CHAT = {"model": "handbook", "messages": [{"role": "user", "content": "How long?"}]}


def test_chat_completion_shape(client: TestClient) -> None:
    body = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 8}).json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Thirty days."}
    assert body["choices"][0]["finish_reason"] == "stop"
    # The served name's prompt opens with the core's system message (the fake engine counts
    # one token per word of every message).
    prompt = len(SYSTEM_PROMPT.split()) + 2
    assert body["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": 3,
        "total_tokens": prompt + 3,
    }


def test_chat_stream_is_role_then_content_then_finish_then_done(client: TestClient) -> None:
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json={**CHAT, "stream": True, "max_tokens": 2, "stream_options": {"include_usage": True}},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        raw = response.read().decode()
    events = [block for block in raw.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(block.removeprefix("data: ")) for block in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Thirty"},
        {"content": " days"},
        {},
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]] == [None, None, None, "length"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2


def test_completion_and_its_stream(client: TestClient) -> None:
    request = {"model": "base", "prompt": "Logs are kept for", "max_tokens": 5}
    body = client.post("/v1/completions", json=request).json()
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == "Thirty days."
    raw = client.post("/v1/completions", json={**request, "stream": True}).text
    chunks = [json.loads(b[6:]) for b in raw.split("\n\n") if b and b != "data: [DONE]"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "Thirty days."
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_adapter_is_used_for_the_served_name_only() -> None:
    fake = FakeEngine()
    app = create_app(fake, served_name="handbook", base_name="base")
    plain = TestClient(app)
    plain.post("/v1/chat/completions", json=CHAT)
    plain.post("/v1/chat/completions", json={**CHAT, "model": "base"})
    assert [job.use_adapter for job in fake.jobs] == [True, False]


def test_sampling_settings_reach_the_engine() -> None:
    fake = FakeEngine()
    plain = TestClient(create_app(fake, served_name="handbook", base_name="base"))
    plain.post("/v1/chat/completions", json=CHAT)
    request = {**CHAT, "temperature": 0, "top_p": 0.5, "stop": "END", "seed": 3, "max_tokens": 9}
    plain.post("/v1/chat/completions", json=request)
    plain.post("/v1/completions", json={"model": "handbook", "prompt": "a b", "stop": ["x", "y"]})
    defaults, explicit, completion = (job.params for job in fake.jobs)
    prompt = len(SYSTEM_PROMPT.split()) + 2  # the system message, then the two-word question
    assert (defaults.temperature, defaults.top_p, defaults.max_tokens) == (0.6, 0.9, 64 - prompt)
    assert explicit == SamplingParams(max_tokens=9, temperature=0, top_p=0.5, stop=("END",), seed=3)
    assert (completion.stop, completion.max_tokens) == (("x", "y"), 16)


def test_models_lists_the_served_name_and_the_base(client: TestClient) -> None:
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["handbook", "base"]
    assert data[0]["parent"] == "base"


def test_auth_is_required_on_v1_only(client: TestClient) -> None:
    for headers in ({"Authorization": "Bearer wrong"}, {"Authorization": ""}):
        response = client.get("/v1/models", headers=headers)
        assert response.status_code == 401
        assert response.json()["error"]["type"] == "AuthenticationError"
    anonymous = TestClient(client.app)
    assert anonymous.post("/v1/chat/completions", json=CHAT).status_code == 401
    assert anonymous.get("/health").status_code == 200
    assert anonymous.get("/ready").json()["model"] == "handbook"
    assert anonymous.get("/metrics").status_code == 200


def test_unknown_model_is_404(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, "model": "other"})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "The model `other` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 2}, "n"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 100}, "max_tokens"),  # over the context length
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": None}, "model"),
    ],
)
def test_bad_requests_are_400_naming_the_field(
    client: TestClient, change: dict[str, object], param: str
) -> None:
    response = client.post("/v1/chat/completions", json={**CHAT, **change})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert (error["type"], error["param"], error["code"]) == ("BadRequestError", param, 400)
    assert param.split(".")[0] in error["message"]


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "BadRequestError"


def test_metrics_count_requests_and_tokens(client: TestClient) -> None:
    client.post("/v1/chat/completions", json=CHAT)
    client.get("/v1/models", headers={"Authorization": "Bearer wrong"})
    text = client.get("/metrics").text
    assert (
        'docmodel_server_requests_total{endpoint="/v1/chat/completions",status="200"} 1.0' in text
    )
    assert 'docmodel_server_requests_total{endpoint="/v1/models",status="401"} 1.0' in text
    assert "docmodel_server_generated_tokens_total 3.0" in text
    assert (
        'docmodel_server_request_duration_seconds_count{endpoint="/v1/chat/completions"} 1.0'
        in text
    )
    assert 'docmodel_server_info{revision="",served_name="handbook"} 1.0' in text
    assert "docmodel_server_batched_requests_total 1.0" in text


class EndlessEngine(FakeEngine):
    """Generates a word every few milliseconds until its job is cancelled."""

    def submit(self, job: Job) -> None:
        self.jobs.append(job)

        def work() -> None:
            while not job.cancelled.wait(0.005):
                job.emit(TextDelta(" word"))
            self.cancelled_requests += 1

        threading.Thread(target=work).start()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_client_that_disconnects_cancels_its_generation(path: str) -> None:
    engine = EndlessEngine()
    app = create_app(engine, served_name="handbook", base_name="base")
    body = json.dumps({**CHAT, "prompt": "How long?", "max_tokens": 32}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
    sent: list[dict[str, object]] = []

    async def call() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, object]:
            if messages:
                return messages.pop(0)
            await asyncio.sleep(0.1)  # the client waits a little, then goes away
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            sent.append(message)

        await asyncio.wait_for(app(scope, receive, send), timeout=10)
        deadline = time.monotonic() + 5  # the worker stops (while the loop still takes events)
        while engine.cancelled_requests == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    asyncio.run(call())
    assert engine.jobs and engine.jobs[0].cancelled.is_set()
    assert sent[0]["status"] == 499
    text = TestClient(app).get("/metrics").text
    assert "docmodel_server_cancelled_requests_total 1.0" in text
    assert f'docmodel_server_requests_total{{endpoint="{path}",status="499"}} 1.0' in text
