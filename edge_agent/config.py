"""Typed configuration: one pydantic-settings model, from TOML plus
``EDGE_AGENT_*`` environment variables (nested with ``__``, e.g.
``EDGE_AGENT_MODEL__N_THREADS=2``).

Every field has a default, a description and bounds, and unknown keys are
rejected, so a typo in a config file is an error that names the key rather
than a setting silently ignored. Nothing downstream reads raw dicts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edge_agent.errors import ConfigError


class ModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None, description="manifest name or .gguf path; None = the manifest's default SLM"
    )
    n_ctx: int = Field(4096, ge=512, le=131072, description="context window in tokens")
    n_threads: int | None = Field(
        None, ge=1, le=256, description="llama.cpp threads; None = physical cores"
    )
    max_tokens: int = Field(256, ge=8, le=8192, description="tokens generated per attempt")


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_choice: Literal["auto", "required", "none"] = Field(
        "auto", description="auto: call or answer; required: must call; none: never call"
    )
    parallel_calls: bool = Field(False, description="allow several calls in one answer")
    max_calls: int = Field(8, ge=1, le=64, description="most calls in one parallel answer")
    repair_attempts: int = Field(
        1, ge=0, le=3, description="local retries that feed the verifier's error back"
    )
    max_steps: int = Field(
        2,
        ge=1,
        le=32,
        description="model turns per request: 1 = call only; more = results go back to the model",
    )
    system_prompt: str | None = Field(None, description="extra system instructions")


class EdgeAgentConfig(BaseSettings):
    """The whole configuration. Load with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_AGENT_", env_nested_delimiter="__", extra="forbid"
    )

    model: ModelSettings = Field(default_factory=lambda: ModelSettings())
    agent: AgentSettings = Field(default_factory=lambda: AgentSettings())
    tools_dirs: list[Path] = Field(
        default_factory=list, description="extra folders of tool modules"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file, if any, comes from model_config["toml_file"], set by
        # load_config on a subclass; the environment overrides the file.
        toml = TomlConfigSettingsSource(settings_cls)
        return (init_settings, env_settings, toml)


def state_dir() -> Path:
    """Where durable state lives: ``$EDGE_AGENT_STATE_DIR``, else
    ``$XDG_STATE_HOME/edge-agent`` (``~/.local/state/edge-agent``)."""
    if env := os.environ.get("EDGE_AGENT_STATE_DIR"):
        return Path(env).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "edge-agent"


def load_config(path: Path | None = None, **overrides: Any) -> EdgeAgentConfig:
    """Config from ``path`` (TOML) and the environment; errors name the key."""
    cls: type[EdgeAgentConfig] = EdgeAgentConfig
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        settings = SettingsConfigDict(**{**EdgeAgentConfig.model_config, "toml_file": path})
        cls = type("EdgeAgentConfigFile", (EdgeAgentConfig,), {"model_config": settings})  # type: ignore[assignment]
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(_first_problem(exc, path)) from exc
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"{path}: {exc}") from exc


def _first_problem(exc: ValidationError, path: Path | None) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    where = f"{path}: " if path else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}{key}: {err['msg']}{more}"
