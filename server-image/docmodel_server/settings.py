"""The server's one typed configuration (pydantic-settings), read from the environment the
operator sets.

| Variable                          | Default                              | Meaning |
|-----------------------------------|--------------------------------------|---------|
| `DOCMODEL_SERVED_NAME`            | required                             | Model name clients pass: the DocModel's name, stable across revisions; the LoRA module's name. |
| `DOCMODEL_ADAPTER_URI`            | required                             | The revision's adapter: `s3://bucket/prefix/<ns>/<name>/rev-<rev>/adapter` or a directory. |
| `DOCMODEL_BASE_MODEL`             | `meta-llama/Llama-3.1-8B-Instruct`   | Base model id (also the name the base model is served under), or a local directory. |
| `DOCMODEL_BASE_MODEL_MIRROR`      | unset                                | `s3://...` (or a directory) holding the base model's files; fetched instead of the Hub. |
| `DOCMODEL_REVISION`               | unset                                | Revision being served; logged and exported as a metric label. |
| `DOCMODEL_MAX_LORA_RANK`          | the adapter's `r`, rounded up        | vLLM `--max-lora-rank`; rounded up to one of vLLM's ranks (1, 8, 16, 32, 64, 128, 256, 320, 512). |
| `DOCMODEL_MAX_MODEL_LEN`          | `8192`                               | Longest prompt + completion, in tokens. |
| `DOCMODEL_GPU_MEMORY_UTILIZATION` | `0.9`                                | Fraction of GPU memory vLLM may use. |
| `DOCMODEL_HOST`                   | `$POD_IP`, else `0.0.0.0`            | Address to bind. |
| `DOCMODEL_PORT`                   | `8000`                               | Port to bind. |
| `DOCMODEL_API_KEY`                | unset (no auth)                      | Bearer token clients must send on `/v1/*` (from a Secret; never logged). |
| `DOCMODEL_ENGINE`                 | `auto`                               | `vllm`, `local` (transformers + peft on CPU), or `auto`: vLLM when it is installed and a GPU is present. |
| `DOCMODEL_MAX_BATCH_SIZE`         | `8`                                  | Local engine only: requests decoded together at most. |
| `DOCMODEL_CPU_THREADS`            | half the CPU cores (at least 1)      | Local engine only: torch threads. More threads than free cores make torch's spinning workers starve the HTTP loop. |
| `DOCMODEL_WORKDIR`                | `$TMPDIR/docmodel-server-<pid>`      | Where the adapter and the base model mirror are downloaded (emptied first; one per process, so that servers on one machine never share it). The image sets `/var/lib/docmodel`. |
| `DOCMODEL_VLLM_EXTRA_ARGS`        | unset                                | Extra `vllm serve` flags, split like a shell would (for example `--max-num-seqs 64`). |
| `DOCMODEL_RETRIEVAL`              | `true`                               | For a retrieval revision (its adapter carries a passage index): retrieve for every chat request. `false` serves the adapter as is, for a front process (`docmodel-server front`) that retrieves. With vLLM, the front runs in this process on `DOCMODEL_PORT` and vLLM on `DOCMODEL_UPSTREAM_PORT`. |
| `DOCMODEL_UPSTREAM_PORT`          | `DOCMODEL_PORT` + 1                  | vLLM's loopback port behind the front process (retrieval revisions only). |
| `DOCMODEL_EMBEDDING_MODEL_MIRROR` | unset                                | S3 URI of a mirror of a retrieval revision's embedding model (Dense and Hybrid retrievers), read from `DOCMODEL_BASE_MODEL_MIRROR_ENDPOINT`; without it the model is found in a local directory, the model cache, the image's packaged model or the Hub. |
| `DOCMODEL_PROMPT_LOG`             | unset                                | A file to append every chat request's final messages (what the model is given) and its retrieved passage ids to, as JSON lines. |

The artifact store's credentials are read the way `docmodel.artifacts.open_artifact_store`
reads them (`DOCMODEL_STORE_ENDPOINT`, `DOCMODEL_STORE_AWS_ACCESS_KEY_ID`,
`DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY`, else the usual `AWS_*` variables); the base model
mirror uses the usual `AWS_*` variables and `AWS_ENDPOINT_URL`.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import NoDecode

from docmodel.api import DEFAULT_BASE_MODEL
from docmodel.modelfacts import usable_cpus
from docmodel.settings import EnvSettings, SettingsError, environment

__all__ = ["ServerSettings", "SettingsError"]

Engine = Literal["auto", "vllm", "local"]


class ServerSettings(EnvSettings):
    """Everything the server process needs; built once at start by `from_env`."""

    what: ClassVar[str] = "server configuration"

    served_name: str = Field(min_length=1, max_length=256, pattern=r"^[^\s=,]+$")
    adapter_uri: str = Field(min_length=1)
    base_model: str = Field(default=DEFAULT_BASE_MODEL, min_length=1)
    base_model_mirror: str | None = None
    base_model_mirror_endpoint: str | None = None  # the source's S3 endpoint, which serves it
    embedding_model_mirror: str | None = None  # read from the same endpoint
    revision: str | None = None
    max_lora_rank: int | None = Field(default=None, ge=1, le=512)
    max_model_len: int = Field(default=8192, ge=16, le=1_048_576)
    gpu_memory_utilization: float = Field(default=0.9, gt=0.0, le=1.0)
    host: str = Field(default_factory=lambda: environment().get("POD_IP") or "0.0.0.0")
    port: int = Field(default=8000, ge=1, le=65535)
    api_key: SecretStr | None = None
    engine: Engine = "auto"
    max_batch_size: int = Field(default=8, ge=1, le=256)
    cpu_threads: int | None = Field(default=None, ge=1, le=1024)
    workdir: Path = Field(default_factory=lambda: default_workdir())
    vllm_extra_args: Annotated[list[str], NoDecode] = Field(default_factory=list)
    retrieval: bool = True
    upstream_port: int | None = Field(default=None, ge=1, le=65535)
    prompt_log: Path | None = None

    @field_validator("vllm_extra_args", mode="before")
    @classmethod
    def _shell_split(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return shlex.split(value)
            except ValueError as exc:
                raise ValueError(f"{exc} (it is split like a shell command line)") from None
        return value

    def embedding_source(self) -> Any:
        from docmodel_server.context import EmbeddingSource

        return EmbeddingSource(
            self.workdir, self.embedding_model_mirror, self.base_model_mirror_endpoint
        )

    @property
    def torch_threads(self) -> int:
        return self.cpu_threads or usable_cpus()

    @property
    def api_key_value(self) -> str | None:
        return self.api_key.get_secret_value() if self.api_key else None

    @property
    def local_url(self) -> str:
        """Where a process in the same pod reaches the server (probes, tests)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def default_workdir() -> Path:
    """A download directory of this process's own: `fetch` empties what it downloads into."""
    return Path(tempfile.gettempdir()) / f"docmodel-server-{os.getpid()}"
