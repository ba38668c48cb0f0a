"""The dev environment's `DOCMODEL_*` variables, typed (the core's `EnvSettings`).

| Variable | Default | Meaning |
|---|---|---|
| `DOCMODEL_CACHE` | `~/.cache/docmodel` | where Go-built binaries (and the Python environment) are cached |
| `DOCMODEL_DEVENV_KEEP` | false | keep the control plane's work directory after the test session |
| `DOCMODEL_DEVENV_LOCAL_GPUS` | 4 | the nominal GPUs the pod runner's node advertises |
| `DOCMODEL_DEVENV_IMAGE_ENVS` | none | `prefix=/env/dir,...`: the Python environment pods of an image prefix run in |
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator
from pydantic_settings import NoDecode

from docmodel.settings import EnvSettings


class DevenvSettings(EnvSettings):
    what: ClassVar[str] = "dev environment settings"

    cache: Path = Field(default_factory=lambda: Path.home() / ".cache" / "docmodel")
    devenv_keep: bool = False
    devenv_local_gpus: int = Field(default=4, ge=0, le=1024)
    devenv_image_envs: Annotated[dict[str, Path], NoDecode] = Field(default_factory=dict)

    @field_validator("devenv_image_envs", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        if isinstance(value, str):
            pairs = [item.split("=", 1) for item in value.split(",") if "=" in item]
            return {prefix: Path(directory) for prefix, directory in pairs}
        return value
