"""Serving with vLLM: the `vllm serve` command line for a revision, and the exec into it.

The flags are those of vLLM's OpenAI-compatible server (`vllm serve --help`, v0.30):

    vllm serve <model> --served-model-name <base name> --enable-lora
        --lora-modules <served name>=<adapter dir> --max-lora-rank <rank> --max-loras 1
        --max-model-len <n> --gpu-memory-utilization <f> --host <addr> --port <port>

Clients call the LoRA module's name (the DocModel's name); the base model is listed too, under
its Hub id even when it was loaded from a mirror directory. The API key goes to vLLM through
`VLLM_API_KEY` in its environment, never on the command line, where any process on the node
could read it.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from docmodel.modelfacts import vllm_max_lora_rank
from docmodel_server.settings import ServerSettings

log = logging.getLogger("docmodel.server")


def build_vllm_argv(
    settings: ServerSettings, model: str, adapter_dir: Path, rank: int
) -> list[str]:
    """The `vllm serve` argv for `settings`, serving `adapter_dir` on top of `model`.

    `rank` is the adapter's LoRA rank; `DOCMODEL_MAX_LORA_RANK` overrides the rounded-up value.
    """
    adapter = str(adapter_dir)
    if "=" in adapter or "," in adapter:
        raise ValueError(f"adapter path {adapter!r} must not contain '=' or ','")
    max_rank = vllm_max_lora_rank(settings.max_lora_rank or rank)
    if max_rank < rank:
        raise ValueError(
            f"DOCMODEL_MAX_LORA_RANK={max_rank} is smaller than the adapter's r={rank}"
        )
    return [
        "vllm",
        "serve",
        model,
        "--served-model-name",
        settings.base_model,
        "--enable-lora",
        "--lora-modules",
        f"{settings.served_name}={adapter}",
        "--max-lora-rank",
        str(max_rank),
        "--max-loras",
        "1",
        "--max-model-len",
        str(settings.max_model_len),
        "--gpu-memory-utilization",
        str(settings.gpu_memory_utilization),
        "--host",
        settings.host,
        "--port",
        str(settings.port),
        *settings.vllm_extra_args,
    ]


def build_vllm_env(settings: ServerSettings, base: dict[str, str] | None = None) -> dict[str, str]:
    """vLLM's environment: ours, with the API key as `VLLM_API_KEY` (and not under our name)."""
    env = dict(os.environ if base is None else base)
    env.pop("DOCMODEL_API_KEY", None)
    env.pop("VLLM_API_KEY", None)
    if settings.api_key_value:
        env["VLLM_API_KEY"] = settings.api_key_value
    return env


def gpu_present() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None and shutil.which("vllm") is not None


def exec_vllm(argv: list[str], env: dict[str, str]) -> None:
    """Replace this process with vLLM (it keeps the PID, so signals reach vLLM directly)."""
    log.info("Started vLLM argv=%s", " ".join(argv))
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execvpe(argv[0], argv, env)
