"""The one composition root: every entry point gets its parts here.

``ask``, ``run``, ``bench``, ``tools`` and the benchmark scripts build the
pipeline from the typed config through an :class:`Assembly`, so they cannot
drift apart: the same engine kind, the same ladder, the same sandbox with its
state folder, the same journal, the same transport. Parts that are heavy or
reach outside (engines, the sandbox, transports) are made here and passed
down; the pipeline itself constructs none of them. A test hands in its own
by passing ``load=`` (an engine loader) or by building the piece and giving
it to :meth:`Assembly.agent`.

Engines and the sandbox are made on first use and kept, so asking twice
returns the same object. Upper ladder tiers load on first climb.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import psutil

from edge_agent.config import EdgeAgentConfig, TierSettings, load_config, state_dir
from edge_agent.errors import EngineError, McpError, ModelError
from edge_agent.ladder import Ladder, Tier, sampler
from edge_agent.toolbox.registry import BUILTIN_TOOLS_DIR, Registry, tools_from_json_file

if TYPE_CHECKING:
    from edge_agent.agent import Agent, Confirm
    from edge_agent.engine.base import Engine
    from edge_agent.engine.prefix_cache import WarmPrefix
    from edge_agent.mcp_link.settings import McpServerSettings
    from edge_agent.records.journal import Journal
    from edge_agent.records.run import Attempt
    from edge_agent.routing.confidence import ConfidenceModel
    from edge_agent.routing.offload.base import OffloadTransport
    from edge_agent.routing.router import Cloud, Router, Store
    from edge_agent.sandbox.process import ProcessSandbox
    from edge_agent.toolbox.ratelimit import RateLimiter

log = logging.getLogger(__name__)

EngineLoader = Callable[..., "Engine"]
Status = Callable[[str], None]


@dataclass(frozen=True)
class TierStatus:
    """Whether a ladder tier is on here, and a sentence saying why (not)."""

    name: str
    on: bool
    detail: str


class Assembly:
    """Builds every part from one :class:`EdgeAgentConfig`; see the module docstring."""

    def __init__(
        self,
        config: EdgeAgentConfig | None = None,
        *,
        load: EngineLoader | None = None,
        status: Status | None = None,
    ) -> None:
        self.config = config if config is not None else load_config()
        self._load = load
        self._status = status or (lambda _line: None)
        self._engines: dict[str, Engine] = {}
        self._sandbox: ProcessSandbox | None = None
        self._confidence: ConfidenceModel | None = None
        self._ladder: Ladder | None = None
        self._tier_status: list[TierStatus] | None = None

    @classmethod
    def from_file(cls, path: Path | None, *, status: Status | None = None) -> Assembly:
        return cls(load_config(path), status=status)

    # -- tools

    def registry(self, *, dirs: Sequence[Path] = (), tools_file: Path | None = None) -> Registry:
        """The built-in tools (when installed), the config's and ``dirs``'
        tool folders and the ``[[mcp.servers]]``' tools; or only the JSON
        definitions in ``tools_file``."""
        if tools_file is not None:
            return Registry(tools_from_json_file(tools_file))
        folders = [*self.config.tools_dirs, *dirs]
        registry = Registry.from_dirs(*folders, builtin=BUILTIN_TOOLS_DIR.is_dir())
        for server in self.config.mcp.servers:  # listed in the sandbox, like they run
            self._add_mcp_tools(registry, server)
        return registry

    def _add_mcp_tools(self, registry: Registry, server: McpServerSettings) -> None:
        """A server that cannot be listed is left out with a warning: one
        unreachable MCP server must not keep the device's own tools (or the
        daemon) from starting. SIGHUP lists it again."""
        from edge_agent.mcp_link.tools import mcp_tools

        self._status(f"listing the tools of MCP server {server.name}…")
        try:
            tools = mcp_tools(server, self.sandbox())
        except McpError as exc:
            log.warning("%s; its tools are left out until the next reload", exc.one_line())
            return
        for item in tools:
            registry.add(item)

    def sandbox(self) -> ProcessSandbox:
        """The process sandbox, with the state folder ``state=True`` tools
        share between ``ask``, ``tools run`` and the daemon."""
        if self._sandbox is None:
            from edge_agent.sandbox import ProcessSandbox, harden_current_process

            harden_current_process()
            self._sandbox = ProcessSandbox(state_root=state_dir() / "tools")
        return self._sandbox

    # -- models

    def engine(self, model: str | None = None, *, n_threads: int | None = None) -> Engine:
        """The engine of ``model`` (default: ``[model].name``), loaded once."""
        settings = self.config.model
        name = model or settings.name or ""
        if name not in self._engines:
            self._status(f"loading {name or 'the default model'}…")
            engine = self._loader()(
                model or settings.name,
                n_ctx=settings.n_ctx,
                n_threads=n_threads or settings.n_threads,
                engine=settings.engine,
            )
            if model is None:
                engine = with_call_bias(engine, settings.call_bias)
            self._engines[name] = engine
        return self._engines[name]

    def _loader(self) -> EngineLoader:
        if self._load is not None:
            return self._load
        from edge_agent.engine import load_engine

        return load_engine

    def ladder(self, *, warm_tools: Registry | None = None, shadow: bool = False) -> Ladder | None:
        """The tiers above tier 0 that are on here, or None when none is.
        Each loads on its first climb (``warm_tools``: read that registry's
        tool block into the new model's KV cache as it loads). ``shadow``:
        check ``ladder.shadow_rate`` of the sure answers on tier 1 too (the
        daemon; a benchmark must not, it would pay for answers it discards)."""
        if self._ladder is not None:
            return self._ladder
        on = [t for t, s in zip(self._tier_settings(), self.tier_status(), strict=True) if s.on]
        if not on:
            return None
        tiers = tuple(self._tier(t, warm_tools) for t in on)
        settings = self.config.ladder
        # shadow labels calibrate the climb on confidence: without it, they cost for nothing
        rate = settings.shadow_rate if shadow and settings.climb_unsure else 0.0
        self._ladder = Ladder(
            settings.threshold,
            tiers,
            self._judge,
            sampler(rate),
            unsure=settings.climb_unsure,
            dangerous=settings.dangerous,
            parallel=settings.parallel_calls,
            draft=settings.draft,
            keep_declines=settings.keep_declines,
        )
        return self._ladder

    def _tier(self, settings: TierSettings, warm_tools: Registry | None) -> Tier:
        def load() -> Engine:
            engine = self.engine(settings.name, n_threads=settings.n_threads)
            return with_call_bias(engine, settings.call_bias)

        def on_load(engine: Engine) -> None:
            if warm_tools is not None and self.config.model.prefix_cache:
                self._warm_engine(engine, warm_tools)

        return Tier(settings.name, load, threshold=settings.threshold, on_load=on_load)

    def _tier_settings(self) -> list[TierSettings]:
        ladder = self.config.ladder
        return (
            list(ladder.tiers)
            if ladder.enabled and (ladder.climb_unsure or ladder.dangerous)
            else []
        )

    def tier_status(self) -> list[TierStatus]:
        """Each configured tier: on, or off and why (file missing, memory)."""
        if self._tier_status is None:
            self._tier_status = [self._check_tier(t) for t in self._tier_settings()]
        return self._tier_status

    def _check_tier(self, tier: TierSettings) -> TierStatus:
        from edge_agent.models import resolve_model

        try:
            resolved = resolve_model(tier.name)
        except ModelError as exc:
            return TierStatus(tier.name, False, exc.one_line())
        need = resolved.path.stat().st_size + self.config.ladder.memory_headroom_mb * 2**20
        free = _available_memory() - sum(_engine_bytes(e) for e in self._engines.values())
        if free < need:
            return TierStatus(
                tier.name,
                False,
                f"needs {need / 2**20:.0f} MiB free (model file + headroom), "
                f"{max(free, 0) / 2**20:.0f} MiB available: tier 0 answers alone",
            )
        size = resolved.path.stat().st_size / 2**20
        return TierStatus(tier.name, True, f"{resolved.path.name}, {size:.0f} MiB, fits in memory")

    def _judge(self, attempts: Sequence[Attempt]) -> float:
        from edge_agent.routing.confidence import features_from_attempts

        return self.confidence().p_success(features_from_attempts(attempts))

    def confidence(self) -> ConfidenceModel:
        if self._confidence is None:
            from edge_agent.routing.confidence import load_confidence

            self._confidence = load_confidence(self.config.router.confidence_model)
        return self._confidence

    # -- the pipeline

    def agent(  # noqa: PLR0913 - keyword-only parts a caller may hand in
        self,
        tools: Registry | Sequence[Any],
        *,
        engine: Engine | None = None,
        sandbox: Any = None,
        confirm: Confirm | None = None,
        limiter: RateLimiter | None = None,
        settings: Any = None,
        ladder: bool = True,
    ) -> Agent:
        """An agent over ``tools`` with tier 0's engine and the ladder above it.
        No sandbox unless one is passed: proposing calls runs nothing."""
        from edge_agent.agent import Agent

        registry = tools if isinstance(tools, Registry) else None
        return Agent(
            engine or self.engine(),
            tools,
            settings or self.config.agent,
            max_tokens=self.config.model.max_tokens,
            sandbox=sandbox,
            confirm=confirm,
            limiter=limiter,
            ladder=self.ladder(warm_tools=registry) if ladder else None,
        )

    def warm(self, agent: Agent, *, tool_choice: str | None = None) -> WarmPrefix | None:
        """Tier 0's tool block from disk, or read once and saved for the next process."""
        if not self.config.model.prefix_cache:
            return None
        self._status("reading the tool block…")
        return agent.warm(state_dir() / "kv", tool_choice=tool_choice)

    def _warm_engine(self, engine: Engine, registry: Registry) -> None:
        from edge_agent.agent import Agent

        self._status(f"reading the tool block into {engine.model_name}…")
        with contextlib.suppress(EngineError, OSError):  # a cache: requests still run
            Agent(engine, registry, self.config.agent).warm(state_dir() / "kv")

    # -- journal, cloud and router

    def journal(self) -> Journal:
        from edge_agent.records.journal import Journal

        return Journal()

    def transport(self) -> OffloadTransport | None:
        """The configured offload transport (HTTPS first, else MQTT), or None."""
        offload = self.config.offload
        if offload.https is not None:
            from edge_agent.routing.offload.https import HttpsTransport

            return HttpsTransport(offload.https)
        if offload.mqtt is not None:
            from edge_agent.routing.offload.mqtt import MqttTransport

            return MqttTransport(offload.mqtt)
        return None

    def cloud(self, journal: Journal, transport: OffloadTransport | None = None) -> Cloud | None:
        """The offload path with the budget ledger in ``journal``'s file, or
        None when nothing may leave the device."""
        if not self.config.router.offload:
            return None
        transport = transport or self.transport()
        if transport is None:
            return None
        from edge_agent.routing.budget import Budget
        from edge_agent.routing.ledger import SqliteLedger
        from edge_agent.routing.router import cloud_for

        budget = Budget(self.config.budget, SqliteLedger(journal.path))
        return cloud_for(transport, budget, self.config.router.link)

    def router(
        self,
        agent: Agent,
        store: Journal | Store,
        cloud: Cloud | None = None,
        *,
        confidence: ConfidenceModel | None = None,
    ) -> Router:
        """The router over ``agent`` (its settings made the router's: one
        local repair), recording in ``store`` or in a store on that journal."""
        from edge_agent.records.journal import Journal
        from edge_agent.routing.ledger import SqliteOutbox
        from edge_agent.routing.router import Router, Store, cascade_agent_settings

        if isinstance(store, Journal):
            store = Store(store, SqliteOutbox(store.path))
        agent.settings = cascade_agent_settings(agent.settings)
        judge = confidence or self.confidence()
        return Router(agent, judge, self.config.router, cloud=cloud, store=store)


def with_call_bias(engine: Engine, bias: float | None) -> Engine:
    """``engine`` with its call-intent rule at ``bias`` (the llguidance engine
    only; the GBNF engine has no such rule and is returned as it is)."""
    with_options = getattr(engine, "with_options", None)
    if bias is None or with_options is None:
        return engine
    return cast("Engine", with_options(call_bias=bias))


def _available_memory() -> int:
    return int(psutil.virtual_memory().available)


def _engine_bytes(engine: Engine) -> int:
    """Memory an already loaded engine will keep touching (its file)."""
    path = getattr(getattr(engine, "llama", None), "model_path", None)
    with contextlib.suppress(OSError, TypeError):
        return Path(path).stat().st_size if path else 0
    return 0


@contextlib.contextmanager
def stderr_status() -> Iterator[Status]:
    """A one-line status on stderr while slow parts load (seconds on a Pi),
    overwritten in place on a terminal and cleared at the end; silent when
    stderr is not a terminal, so scripts and logs stay clean."""
    shown = [False]

    def show(line: str) -> None:
        if sys.stderr.isatty():
            sys.stderr.write(f"\r\033[Kedge-agent: {line}")
            sys.stderr.flush()
            shown[0] = True

    try:
        yield show
    finally:
        if shown[0]:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


__all__ = ["Assembly", "TierStatus", "stderr_status"]
