"""A tiny Llama, a LoRA adapter that changes its outputs (or a no-op one over a real model),
and the real server as a subprocess.

Shared by the end-to-end server tests and `bench/serve_latency.py`. Everything stays on the
loopback interface.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from docmodel.artifacts import Manifest, RevisionLayout, publish_dir
from docmodel.storage import LocalStore

SERVED_NAME = "handbook"
LAYOUT = RevisionLayout("ml", SERVED_NAME, "e2e0000001")


def build_model_and_adapter(
    root: Path, rank: int = 8, retriever: str | None = None
) -> tuple[Path, str]:
    """Write a tiny base model and publish a LoRA adapter for it to a local artifact store.

    Returns (base model directory, adapter URI). LoRA B matrices start at zero (the adapter
    would be a no-op), so they are perturbed: the adapter then changes what the model says.
    """
    from docmodel_trainer.tinymodel import build_tiny_llama

    base = build_tiny_llama(root / "base")
    return base, build_adapter(base, root, rank=rank, perturb=True, retriever=retriever)


def build_adapter(
    base: Path, root: Path, rank: int = 8, perturb: bool = False, retriever: str | None = None
) -> str:
    """Publish a LoRA adapter over the model in `base` to a local artifact store under `root`;
    returns its URI.

    Without `perturb` the LoRA B matrices stay at zero, as peft initialises them: the adapter
    is a no-op and the served name answers exactly as the base model does (a real model
    served under the DocModel's name). With `perturb` they are randomised (seeded), so the
    adapter changes what the model says. With `retriever` (BM25, Dense, Hybrid) it is a
    retrieval revision over the services' pages (`dataset_factory.documents`), embedded with
    the packaged embedding model for Dense and Hybrid.
    """
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules=["q_proj", "v_proj", "o_proj"]
    )
    with warnings.catch_warnings():
        # peft reads transformers 5's deprecated `is_gradient_checkpointing` while wrapping.
        warnings.filterwarnings(
            "ignore", message=r".*is_gradient_checkpointing.* is deprecated", category=FutureWarning
        )
        peft_model = get_peft_model(model, config)
    if perturb:
        generator = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for name, param in peft_model.named_parameters():
                if "lora_B" in name:
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.5)
    adapter_dir = root / "adapter-build"
    peft_model.save_pretrained(adapter_dir)
    if retriever is not None:
        write_service_index(adapter_dir, retriever)
    store = LocalStore(root / "store")
    # Published as the trainer publishes: the manifest, listing every file, last.
    return publish_dir(
        adapter_dir, store, LAYOUT, Manifest(kind="adapter", revision=LAYOUT.revision)
    )


def write_service_index(adapter_dir: Path, retriever: str) -> None:
    """A retrieval revision's index over the services' pages, as the trainer writes it."""
    from docmodel.retrieval import RetrievalIndex, write_index
    from docmodel.search import indexed_text

    from testkit.dataset_factory import passages

    chunks = passages()
    vectors, info = None, None
    if retriever != "BM25":
        from testkit.models import embedding_encoder

        encoder = embedding_encoder()
        vectors = encoder.encode([indexed_text(c) for c in chunks])
        info = encoder.info
    index = RetrievalIndex(
        retriever=retriever,  # type: ignore[arg-type]
        top_k=2,
        passages=len(chunks),
        embedding=info,
    )
    write_index(adapter_dir, index, chunks, vectors)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(
    base: Path | str, adapter_uri: str, port: int, workdir: Path, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCMODEL_")}
    env.update(
        {
            "DOCMODEL_SERVED_NAME": SERVED_NAME,
            "DOCMODEL_BASE_MODEL": str(base),
            "DOCMODEL_ADAPTER_URI": adapter_uri,
            "DOCMODEL_HOST": "127.0.0.1",
            "DOCMODEL_PORT": str(port),
            "DOCMODEL_WORKDIR": str(workdir),
            "DOCMODEL_REVISION": LAYOUT.revision,
            "HF_HUB_OFFLINE": "1",
            **extra,
        }
    )
    return env


def is_ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url + "/ready", timeout=2) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        exc.close()
        return False
    except (OSError, urllib.error.URLError):
        return False


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(env: dict[str, str], log_path: Path, timeout: float = 300.0) -> RunningServer:
    """Start `docmodel-server serve --engine local` and wait until /ready answers 200."""
    url = f"http://127.0.0.1:{env['DOCMODEL_PORT']}"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "docmodel_server", "serve", "--engine", "local"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = RunningServer(url, process, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{server.log()}")
        if is_ready(url):
            return server
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"server not ready after {timeout}s:\n{server.log()}")
