"""Typed configuration: one pydantic-settings model, from TOML plus
``EDGE_AGENT_*`` environment variables (nested with ``__``, e.g.
``EDGE_AGENT_MODEL__N_THREADS=2``).

Every field has a default, a description and bounds, and unknown keys are
rejected, so a typo in a config file is an error that names the key rather
than a setting silently ignored. Nothing downstream reads raw dicts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from edge_agent.engine.base import EngineKind
from edge_agent.errors import ConfigError
from edge_agent.iot.automation_settings import AutomationSettings
from edge_agent.mcp_link.settings import McpSettings
from edge_agent.routing.budget import BudgetSettings
from edge_agent.routing.connectivity import ConnectivitySettings
from edge_agent.routing.offload.settings import HttpsOffloadSettings, MqttOffloadSettings
from edge_agent.toolbox.registry import SideEffect

API_TOKEN_ENV = "EDGE_AGENT_API_TOKEN"  # noqa: S105 - a variable name, not a secret

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
    n_gpu_layers: int = Field(
        0,
        ge=-1,
        description=(
            "layers llama.cpp offloads to the GPU (a CUDA build, e.g. EDGE_AGENT_CUDA=1 "
            "on a Jetson); 0 = CPU only, -1 = all"
        ),
    )
    max_tokens: int = Field(256, ge=8, le=8192, description="tokens generated per attempt")
    engine: EngineKind = Field(
        "llguidance",
        description=(
            "how tool-call grammars are enforced: llguidance = token masks with "
            "fast-forward of forced tokens (same output as gbnf, faster); "
            "gbnf = llama.cpp's GBNF sampler, the fallback"
        ),
    )
    call_bias: float | None = Field(
        None,
        ge=-20,
        le=100,
        description="tier 0's call-intent rule, as [[ladder.tiers]] call_bias: with tool_choice "
        "auto, open a call when the best call-opening token plus this many logits beats the "
        "best text token; None: the grammar's plain first choice (llguidance engine only). "
        "None by default: -1, the best bias on the tuning items (benchmarks/"
        "call_bias_replay.py), did no better than the plain rule on BFCL's first 100 "
        "(irrelevance 0.69 both, simple_python 0.69 against 0.71)",
    )
    prefix_cache: bool = Field(
        True,
        description=(
            "ask and the daemon: keep the KV state of the system prompt and tool block "
            "on disk (state dir, kv/), so the next process does not read the tool block again"
        ),
    )


class AgentSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tool_choice: Literal["auto", "required", "none"] = Field(
        "auto", description="auto: call or answer; required: must call; none: never call"
    )
    parallel_calls: bool = Field(
        False,
        description='allow several calls in one answer ("turn off the lights and lock the '
        'door"). Off by default: on the 95 home requests the 0.5B made none of the 11 '
        "multi-call requests right with it on, and a small model forced into a call can "
        "string several wrong ones together (seven, a lock among them, once)",
    )
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
    decline_hint: bool = Field(
        True,
        description="with tool_choice auto, tell the model it may answer in text when no tool fits",
    )
    select_tools_above: int = Field(
        24,
        ge=1,
        description="with more tools than this, offer only the select_tools_k best matches (BM25)",
    )
    select_tools_k: int = Field(6, ge=1, description="how many tools a selection keeps")


class TierSettings(BaseModel):
    """One local model above ``[model]`` on the ladder."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="manifest name or .gguf path")
    threshold: float = Field(
        0.6,
        ge=0,
        le=1,
        description="τ of this tier: below it, a request climbs to the next tier "
        "(unused for the top tier, whose unsure answers the router may offload)",
    )
    n_threads: int | None = Field(
        None, ge=1, le=256, description="llama.cpp threads; None = model.n_threads"
    )
    call_bias: float | None = Field(
        0.0,
        ge=-20,
        le=100,
        description="with tool_choice auto, open a call when the model's best call-opening "
        "token (the tag, or a fence or brace it writes calls with) plus this many logits "
        "beats its best text token; None: the grammar's plain first choice, which pushed the "
        "1.5B into prose (llguidance engine only)",
    )


def _default_tiers() -> list[TierSettings]:
    return [TierSettings(name="qwen2.5-coder-1.5b")]


class LadderSettings(BaseModel):
    """The ``[ladder]`` table: bigger local models a request climbs to when
    the model below is unsure (see ``edge_agent/ladder.py``)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(
        True,
        description="the bigger local models in `tiers` may answer; off: tier 0 answers "
        "alone and no tier is ever loaded",
    )
    dangerous: bool = Field(
        True,
        description="a call to a dangerous tool (a lock, a valve) that tier 0 proposes is "
        "decided again by the top tier: a valid but wrong call there is the worst outcome. "
        "Measured (benchmarks/home_requests.py): wrong lock/valve calls 6 -> 1 on the 95 "
        "held-out home requests, 8 -> 2 on the 40 tuning ones; 17% of requests climb",
    )
    parallel_calls: bool = Field(
        False,
        description='the tiers above tier 0 may make several calls in one answer ("lock the '
        'front and the back door"), whatever agent.parallel_calls says for tier 0. Off: on '
        "the held-out home requests it made 3 more of them right (two-call requests 0 -> 3 "
        "of 11) but once added a main water valve opened to 100% to a bedtime request",
    )
    draft: bool = Field(
        True,
        description="a tier that climbs from a call reads the call below it as a draft: it "
        "checks the draft in one batch and decodes only from where it disagrees, so its "
        "answer is its own, for fewer decode steps (llguidance engine only)",
    )
    keep_declines: bool = Field(
        True,
        description="with climb_unsure, a tier's valid text answer (it says no tool fits) ends "
        "the climb, however unsure: the 1.5B declines even less often than the 0.5B. "
        "Measured on tuning items at τ0 0.88 (bench bfcl --mode ladder): irrelevance 100-149 "
        "0.76 -> 0.80, simple_python 100-129 0.967 either way",
    )
    climb_unsure: bool = Field(
        False,
        description="also climb when tier 0 is unsure (P(success) < threshold) or its call "
        "is still invalid after its repair. Off by default for now: with the shipped "
        "confidence model most requests climb (mean model time 12.1 s against 2.2 s on the "
        "held-out home requests; README, The local ladder)",
    )
    threshold: float = Field(
        0.88,
        ge=0,
        le=1,
        description="τ of tier 0 (model): below it, the request climbs. 0.88 is the "
        "lowest τ whose wrong kept answers stay within an error budget of 2% of requests "
        "(conformal risk control on 150 BFCL tuning items, 100-149 of simple_python, "
        "multiple and irrelevance; benchmarks/ladder_replay.py --tune)",
    )
    tiers: list[TierSettings] = Field(
        default_factory=_default_tiers,
        description="local models above [model], in order; a tier whose file is missing "
        "or that does not fit in free memory is off (edge-agent doctor says why)",
    )
    shadow_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="in the daemon, the share of answers tier 0 was sure of that tier 1 "
        "answers too, only to compare; journaled as labels for "
        "`edge-agent router calibrate --from-journal`",
    )
    memory_headroom_mb: int = Field(
        300,
        ge=0,
        le=65536,
        description="memory that must stay free after a tier's model file is loaded",
    )


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
        None,
        description="confidence model: JSON logistic weights, or .onnx (needs edge-agent[onnx]); "
        "None = models/confidence.json when present, else the built-in min-logprob heuristic",
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


class ServerSettings(BaseModel):
    """The ``[server]`` table: the local API and the request queue."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1",
        min_length=1,
        max_length=253,
        description="address the API binds to; anything but loopback requires an API token",
    )
    port: int = Field(8080, ge=1, le=65535, description="TCP port of the API")
    token_file: Path | None = Field(
        None,
        description=f"API bearer token file, mode 0600; {API_TOKEN_ENV} takes precedence",
    )
    max_body_bytes: int = Field(
        1 << 20, ge=1024, le=64 << 20, description="largest request body accepted (413 above)"
    )
    queue_size: int = Field(
        32, ge=1, le=10_000, description="requests that may wait for the model (429 above)"
    )
    automation_reserve: int = Field(
        8, ge=0, le=1_000, description="extra queue places only automation events may take"
    )
    request_timeout_s: float = Field(
        300.0,
        ge=1,
        le=86_400,
        description="an accepted request not started within this time fails, with a reason",
    )
    drain_timeout_s: float = Field(
        120.0, ge=1, le=3_600, description="on SIGTERM, how long the request in progress may take"
    )
    keepalive_s: float = Field(
        15.0, ge=1, le=300, description="SSE keep-alive interval while a streamed request waits"
    )
    allow_execute: bool = Field(
        True, description="let API requests run registry tools (x_edge_agent_execute)"
    )
    journal_keep_days: float = Field(
        30.0,
        ge=0,
        le=36_500,
        description="finished requests older than this leave the journal (at start, then "
        "hourly), so it does not fill an SD card; audit rows stay; 0 keeps everything",
    )
    journal_keep_mb: float = Field(
        256.0,
        ge=0,
        le=1_000_000,
        description="past this much data the oldest finished requests leave the journal too "
        "(at start, then hourly); unfinished requests and audit rows stay; 0: no size bound",
    )


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
    ladder: LadderSettings = Field(
        default_factory=lambda: LadderSettings(), description="bigger local models, in order"
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
    server: ServerSettings = Field(
        default_factory=lambda: ServerSettings(), description="the daemon's local HTTP API"
    )
    tools_dirs: list[Path] = Field(
        default_factory=list, description="extra folders of tool modules"
    )
    automation: AutomationSettings | None = Field(
        None, description="sensor topics, rules and firmware devices; None = no automation"
    )
    mcp: McpSettings = Field(
        default_factory=lambda: McpSettings(), description="MCP servers to use, and edge-agent mcp"
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
    """Config from ``path`` (TOML) and the environment; an error names the
    file, the line (when found) and the key."""
    cls: type[EdgeAgentConfig] = EdgeAgentConfig
    if path is not None:
        if not _readable_file(path):
            raise ConfigError(f"config file {path} does not exist")
        settings = SettingsConfigDict(**{**EdgeAgentConfig.model_config, "toml_file": path})
        cls = type("EdgeAgentConfigFile", (EdgeAgentConfig,), {"model_config": settings})
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_problem(exc, path)) from exc
    except ValueError as exc:  # TOML syntax errors
        raise ConfigError(f"{path}: {exc}") from exc
    except RecursionError as exc:  # tomllib recurses once per nested array or table
        raise ConfigError(f"{path}: values nested too deeply to read") from exc
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc


def _readable_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc.strerror or exc}") from exc


def describe_problem(exc: ValidationError, path: Path | None) -> str:
    """``FILE:LINE: key.path: message`` for the first problem."""
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    line = _line_of(path, err["loc"]) if path is not None else None
    where = f"{path}:{line}: " if line else (f"{path}: " if path else "")
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}{key}: {err['msg']}{more}"


def _line_of(path: Path, loc: Sequence[str | int]) -> int | None:
    keys = [p for p in loc if isinstance(p, str)]
    if not keys:
        return None
    table, key = ".".join(keys[:-1]), keys[-1]
    current = ""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        header = re.match(r"^\[\[?([^\]]+)\]\]?", line)
        if header:
            current = re.sub(r"[\s\"']", "", header.group(1))
            if current == ".".join(keys):
                return number
        elif current == table and re.match(rf"^[\"']?{re.escape(key)}[\"']?\s*=", line):
            return number
    return None
