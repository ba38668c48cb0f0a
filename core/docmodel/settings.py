"""Typed settings from the environment (pydantic-settings), one way for every process.

Every `DOCMODEL_*` variable a process reads is a field of an `EnvSettings` subclass: the core's
(`LogSettings`, `LocalSettings`, `StoreSettings`, below), the trainer's Job settings, the
server's and the operator's. Empty values count as unset; flags passed as overrides win over the
environment; a bad value is a `SettingsError` that names the variable. `from_env` reads the
process's environment or a mapping a caller gives (a Job's environment, a test's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

ENV_PREFIX = "DOCMODEL_"

# The environment `from_env` reads: the process's, or a mapping a caller passes.
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("docmodel_environ", default=None)


def environment() -> Mapping[str, str]:
    """The environment being read (for fields whose default comes from another variable)."""
    env = _ENVIRON.get()
    return os.environ if env is None else env


class SettingsError(ValueError):
    """The environment does not describe valid settings; the message names the variable."""


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over `environment()`."""

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(
            environment(), self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str
        )


S = TypeVar("S", bound="EnvSettings")


class EnvSettings(BaseSettings):
    """Base of every process's settings (see the module docstring)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True
    )
    what: ClassVar[str] = "settings"  # how errors name these settings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Overrides (flags) win over the environment; no .env or secrets files are read.
        return (init_settings, _Environment(settings_cls))

    @classmethod
    def from_env(cls: type[S], env: Mapping[str, str] | None = None, **overrides: Any) -> S:
        """Read the variables of `env` (default: the process's); `overrides` that are not None
        win. Raises `SettingsError` naming each bad variable."""
        token = _ENVIRON.set(env)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        except ValidationError as exc:
            prefix = str(cls.model_config.get("env_prefix") or "")
            problems = []
            for error in exc.errors():
                name = str(error["loc"][0]) if error["loc"] else ""
                message = str(error["msg"]).removeprefix("Value error, ")
                problems.append(f"{prefix}{name.upper()}: {message}")
            raise SettingsError(f"invalid {cls.what}: " + "; ".join(problems)) from None
        finally:
            _ENVIRON.reset(token)


class LogSettings(EnvSettings):
    """`DOCMODEL_LOG_LEVEL`: the level every command logs at (INFO by default)."""

    log_level: str = "INFO"


class LocalSettings(EnvSettings):
    """`DOCMODEL_LOCAL_STORE`: local mode's artifact store when `--store` is not given."""

    local_store: Path = Path("~/.cache/docmodel/local-store")


class StoreSettings(EnvSettings):
    """The artifact store's own endpoint and keys, when it is not the source's store:
    `DOCMODEL_STORE_ENDPOINT`, `DOCMODEL_STORE_AWS_ACCESS_KEY_ID`,
    `DOCMODEL_STORE_AWS_SECRET_ACCESS_KEY` (never logged)."""

    model_config = SettingsConfigDict(env_prefix=f"{ENV_PREFIX}STORE_")

    endpoint: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = Field(default=None, repr=False)
