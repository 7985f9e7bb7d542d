"""Automation inside the daemon: the ``[automation]`` section brought to life.

The daemon owns one model and one queue; automation must not get a second
way to the model. So a rule that asks the agent becomes an ordinary job
(source ``automation``, which outranks chat), journaled like any other, and
the engine's agent lane *waits* for that job to settle. While it waits, new
firings of the same rule and sensor are coalesced in the lane, so a burst
of readings never floods the queue.

The firmware bridge lives here too: its device tools (and ``notify``) are
offered to automation jobs only, run in this process through
:class:`~edge_agent.iot.bridge.HostRunner` (everything else still runs in
the sandbox), and every actuation happens inside the job's
:meth:`~edge_agent.iot.bridge.Bridge.context`, so the audit log names the
request and the reading, and a reading with text in it makes any actuation
ask the owner first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from edge_agent.errors import BusyError, ConfigError, EdgeAgentError
from edge_agent.records.jobs import Failure, Job, JobHost
from edge_agent.toolbox.registry import Registry, Tool

if TYPE_CHECKING:
    from edge_agent.agent import Confirm
    from edge_agent.iot.automation import AgentRequest, AutomationEngine
    from edge_agent.iot.automation_settings import AutomationSettings
    from edge_agent.iot.bridge import Bridge, HostRunner
    from edge_agent.iot.mqtt_link import MqttConfirmer
    from edge_agent.sandbox.base import Sandbox

__all__ = ["AutomationCollector", "AutomationHost"]

log = logging.getLogger("edge_agent.iot.automation")
SUBMIT_TIMEOUT_S = 30.0
# After a start, devices announce themselves again within seconds (the
# bridge greets each one it hears). A job resumed from the journal may run
# before that: it waits this long for its device tools instead of failing.
DEVICES_SETTLE_S = 20.0


class AutomationHost:
    """The engine, the bridge and its links, for one daemon."""

    def __init__(self, daemon: JobHost, settings: AutomationSettings) -> None:
        self.daemon = daemon
        self.settings = settings
        self.bridge: Bridge | None = None
        self.engine: AutomationEngine | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._notify: Tool | None = None
        self._confirmer: MqttConfirmer | None = None
        self._started_at = time.monotonic()

    # -- lifecycle (called by Daemon.serve, off the event loop)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Connect the broker, open the serial ports, subscribe to the
        sensors. Raises ConfigError/OffloadError when a part cannot start."""
        from edge_agent.iot.automation import AutomationEngine
        from edge_agent.iot.bridge import Bridge

        self._loop = loop
        self._started_at = time.monotonic()
        devices = self.settings.devices
        broker = self.settings.broker
        self.bridge = Bridge(devices.safety, audit=self.daemon.journal)
        self.engine = AutomationEngine(
            self.settings, agent_submit=self._submit, commander=self.bridge, catalog=self.catalog
        )
        self._notify = self.engine.notify_tool()
        self.bridge.subscribe(self.engine.on_device_event)
        try:
            self.engine.start()
            if broker is not None and devices.confirm_over_mqtt:
                from edge_agent.iot.mqtt_link import MqttConfirmer

                confirmer = MqttConfirmer(broker, node_id=self.settings.node_id)
                self._confirmer = confirmer
                confirmer.connect()
                self.bridge.confirm = confirmer
            self._attach_links()
        except BaseException:
            self.stop()
            raise
        log.info(
            "automation %s: %d rule(s), %d sensor topic(s), devices over %s",
            self.settings.node_id, len(self.settings.rules), len(self.settings.sensors),
            self._links_text(),
        )  # fmt: skip

    def _attach_links(self) -> None:
        from edge_agent.iot.mqtt_link import MqttLink
        from firmware_bridge.serial_link import SerialLink

        assert self.bridge is not None
        devices = self.settings.devices
        if devices.mqtt:
            if self.settings.broker is None:
                raise ConfigError("automation.devices.mqtt needs automation.broker")
            self.bridge.attach(MqttLink(self.settings.broker))
        for port in devices.serial:
            try:
                self.bridge.attach(SerialLink(str(port.path), baudrate=port.baudrate))
            except OSError as exc:
                raise ConfigError(
                    f"cannot open the serial port {port.path}: {exc}",
                    hint="is the device plugged in, and may this user open it (dialout group)?",
                ) from exc

    def _links_text(self) -> str:
        devices = self.settings.devices
        parts = ["mqtt"] if devices.mqtt else []
        parts += [str(p.path) for p in devices.serial]
        return ", ".join(parts) or "nothing"

    def stop(self) -> None:
        """Publish ``offline``, stop the lanes, close the links."""
        if self.engine is not None:
            self.engine.stop()
        if self._confirmer is not None:
            self._confirmer.close()
            self._confirmer = None
        if self.bridge is not None:
            self.bridge.close()

    # -- rules → jobs (on the engine's agent lane)

    def _submit(self, request: AgentRequest) -> None:
        """Queue the request as a daemon job and wait for it to settle, so
        that the lane coalesces what arrives meanwhile. A full queue drops
        the request, counted and logged (never silently)."""
        assert self._loop is not None and self.engine is not None
        submit = self.daemon.submit(
            request.payload(), source="automation", idempotency_key=request.key
        )
        try:
            ticket = asyncio.run_coroutine_threadsafe(submit, self._loop).result(SUBMIT_TIMEOUT_S)
        except BusyError as exc:
            self.engine.stats["agent.busy"] += 1
            log.warning("rule %s: the daemon refused the job: %s", request.rule, exc.one_line())
            return
        wait = self.daemon.live.config.server.request_timeout_s + 60
        settled = asyncio.run_coroutine_threadsafe(_settled(ticket.future), self._loop)
        outcome = settled.result(wait)
        if isinstance(outcome, Failure):
            self.engine.stats["agent.failed_jobs"] += 1
            log.warning("rule %s: job %s %s: %s", request.rule, outcome.request_id,
                        outcome.kind, outcome.reason)  # fmt: skip

    def catalog(self) -> list[str]:
        """Tool names a rule may offer: the devices', ``notify``, then the registry's."""
        names = [t.name for t in self._own_tools()]
        return [*names, *(t.name for t in self.daemon.live.registry)]

    # -- automation jobs (on the daemon's worker thread)

    def handles(self, job: Job) -> bool:
        return job.source == "automation" and self.bridge is not None

    def registry_for(self, names: Iterable[str], registry: Registry) -> Registry:
        """The job's tools by name: device tools and ``notify`` from here,
        the rest from the daemon's registry. A device that went away since
        the rule fired just has no tool now; right after a start, a job
        waits for its devices to announce themselves again (a job the last
        process left unfinished runs first, before any device is back)."""
        names = list(names)
        own = self._device_tools({n for n in names if n not in registry})
        chosen: list[Tool] = []
        for name in names:
            found = own.get(name) or (registry.get(name) if name in registry else None)
            if found is None:
                log.warning("automation job: tool %s is not available now", name)
            elif found not in chosen:
                chosen.append(found)
        return Registry(chosen)

    def _device_tools(self, wanted: set[str]) -> dict[str, Tool]:
        """The bridge's tools and ``notify``, by name, once ``wanted`` are all
        there or the settling time after the start has passed."""
        deadline = self._started_at + DEVICES_SETTLE_S
        while True:
            own = {t.name: t for t in self._own_tools()}
            if wanted <= own.keys() or time.monotonic() >= deadline:
                return own
            time.sleep(0.1)

    def runner(self, fallback: Sandbox | None) -> HostRunner:
        from edge_agent.iot.bridge import HostRunner

        runner = HostRunner(self.bridge, fallback=fallback)
        if self._notify is not None:
            runner.add(self._notify)
        return runner

    @property
    def confirm(self) -> Confirm | None:
        return self.bridge.confirm_call if self.bridge is not None else None

    @contextlib.contextmanager
    def context(self, job: Job) -> Iterator[None]:
        """Actuations in this job name it and the reading that caused it;
        untrusted unless the reading was plain numbers."""
        assert self.bridge is not None
        auto = job.options.automation
        untrusted = bool(auto.get("untrusted", True))
        with self.bridge.context(request_id=job.request_id, source="automation",
                                 reading=auto.get("reading"), untrusted=untrusted):  # fmt: skip
            yield

    def _own_tools(self) -> list[Tool]:
        tools = list(self.bridge.tools()) if self.bridge is not None else []
        return [*tools, self._notify] if self._notify is not None else tools

    def metrics(self) -> dict[str, dict[str, float]]:
        """Flat counters of the engine and the bridge."""
        out: dict[str, dict[str, float]] = {"automation": {}, "bridge": {}}
        if self.engine is not None:
            out["automation"] = _numbers(self.engine.metrics())
        if self.bridge is not None:
            out["bridge"] = _numbers(self.bridge.metrics())
        return out


async def _settled(future: asyncio.Future[Any]) -> Any:
    return await asyncio.shield(future)


def _numbers(counters: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in counters.items():
        if isinstance(value, Mapping):
            out |= _numbers(value, f"{prefix}{key}.")
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out[f"{prefix}{key}"] = float(value)
    return out


class AutomationCollector:
    """``/metrics`` for automation: ``edge_agent_automation_events{counter}``
    (readings, malformed by reason, fired, coalesced, dispatched, dropped…)
    and ``edge_agent_bridge_events{counter}`` (frames, rejections,
    actuations by status). Empty while the daemon runs no automation."""

    def __init__(self, daemon: object) -> None:
        self.daemon = daemon  # anything with an ``automation`` attribute (the daemon)

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        host = getattr(self.daemon, "automation", None)
        if host is None:
            return
        try:
            metrics = host.metrics()
        except EdgeAgentError:
            return
        helps = {
            "automation": "automation counters: readings, malformed payloads, rule firings, lanes",
            "bridge": "firmware bridge counters: frames, rejections by reason, actuations",
        }
        for name, counters in metrics.items():
            family = GaugeMetricFamily(f"edge_agent_{name}_events", helps[name], labels=["counter"])
            for key, value in sorted(counters.items()):
                family.add_metric([key], value)
            yield family
