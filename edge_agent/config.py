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

from edge_agent.budget import BudgetSettings
from edge_agent.connectivity import ConnectivitySettings
from edge_agent.errors import ConfigError
from edge_agent.offload.settings import HttpsOffloadSettings, MqttOffloadSettings
from edge_agent.registry import SideEffect

SourceName = Literal["cli", "api", "mqtt", "automation", "bench"]


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


def _queue_sources() -> list[SourceName]:
    return ["automation"]


def _queue_effects() -> list[SideEffect]:
    return ["actuate", "dangerous"]


class RouterSettings(BaseModel):
    """The routing policy's knobs (the ``[router]`` config section)."""

    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(
        0.6, ge=0, le=1, description="τ: answer locally when P(success) >= τ and verified"
    )
    confidence_model: Path | None = Field(
        None, description="ONNX confidence model; None = the built-in min-logprob heuristic"
    )
    offload: bool = Field(True, description="offload uncertain requests when a cloud is set")
    offload_max_tokens: int = Field(
        512, ge=16, le=8192, description="completion tokens asked of the cloud (and priced)"
    )
    queue_sources: list[SourceName] = Field(
        default_factory=_queue_sources,
        description="request sources whose actuating requests are queued rather than declined",
    )
    queue_side_effects: list[SideEffect] = Field(
        default_factory=_queue_effects,
        description="tool side effects that make a request wait in the outbox",
    )
    outbox_retry_initial_s: float = Field(
        5.0, gt=0, le=3600, description="wait before resending a queued request that failed"
    )
    outbox_retry_max_s: float = Field(
        600.0, gt=0, le=86400, description="longest wait between resends"
    )
    outbox_max_attempts: int = Field(
        10, ge=1, le=1000, description="failed sends after which a queued request is failed"
    )
    link: ConnectivitySettings = Field(
        default_factory=lambda: ConnectivitySettings(),
        description="connectivity probe and circuit breaker",
    )


class OffloadSettings(BaseModel):
    """The cloud LLM, if any. Without ``https`` (or ``mqtt``) nothing leaves
    the device: uncertain requests are queued or declined instead."""

    model_config = ConfigDict(extra="forbid")

    https: HttpsOffloadSettings | None = Field(None, description="OpenAI-compatible endpoint")
    mqtt: MqttOffloadSettings | None = Field(None, description="offload through a broker")


class EdgeAgentConfig(BaseSettings):
    """The whole configuration. Load with :func:`load_config`."""

    model_config = SettingsConfigDict(
        env_prefix="EDGE_AGENT_", env_nested_delimiter="__", extra="forbid"
    )

    model: ModelSettings = Field(
        default_factory=lambda: ModelSettings(), description="the local model and its runtime"
    )
    agent: AgentSettings = Field(
        default_factory=lambda: AgentSettings(), description="how one request is decided"
    )
    router: RouterSettings = Field(
        default_factory=lambda: RouterSettings(), description="local vs offload decisions"
    )
    budget: BudgetSettings = Field(
        default_factory=lambda: BudgetSettings(), description="what the cloud may cost"
    )
    offload: OffloadSettings = Field(
        default_factory=lambda: OffloadSettings(), description="the cloud LLM, if any"
    )
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
