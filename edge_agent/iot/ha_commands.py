"""What Home Assistant sends: commands on the controllable entities' topics,
turned into actuations that pass the same safety bridge as the agent's tools.

A payload on ``<prefix>/<node>/devices/<device>/<actuator>/set`` becomes the
one device value the bridge takes (:func:`command_value`: ``OFF`` → 0,
``40`` → brightness 40, ``UNLOCK`` → false, ``21.5`` → 21.5). Nothing here
decides whether it may run: ``actuate`` (the automation engine's, over
:meth:`edge_agent.iot.bridge.Bridge.actuate`) applies the allowlist, the
ranges, the rate limit and the owner's confirmation for dangerous kinds, and
writes the audit record with the source ``home-assistant``.

A payload that cannot be a command (not UTF-8, a word the entity does not
take, not a finite number, oversized, retained, or for an entity that is not
controllable) is dropped and counted as ``ha.malformed.<reason>``; it never
raises. A retained command is refused because the broker would deliver it
again on every reconnect.

Commands run on a few worker threads, never on paho's network thread: a
lock waiting up to a minute for the owner must not hold up a light. For one
entity, a newer command replaces one still waiting (``ha.coalesced``: a
dragged slider ends at its last value), and commands never overtake each
other. A full queue drops the command (``ha.dropped``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_agent.iot.ha_discovery import HaTopics, control_component

if TYPE_CHECKING:
    from firmware_bridge.protocol import ActuatorCap, Announce, Value

__all__ = ["HaCommand", "HaCommands", "Malformed", "command_value"]

log = logging.getLogger("edge_agent.iot.automation")

SOURCE = "home-assistant"
MAX_PAYLOAD = 64
# The words each component sends (as configured in its discovery payload).
_WORDS: dict[str, dict[str, bool | None]] = {
    "light": {"ON": None, "OFF": None},  # None: the cap's bounds decide
    "lock": {"LOCK": True, "UNLOCK": False},
    "switch": {"ON": True, "OFF": False},
}


@dataclass(frozen=True)
class Malformed:
    """Why a payload is not a command."""

    reason: str


@dataclass(frozen=True)
class HaCommand:
    """One command from Home Assistant, as the bridge will be asked it."""

    device: str
    actuator: str
    value: Value
    topic: str
    payload: str
    received_at: float  # epoch s

    @property
    def key(self) -> tuple[str, str]:
        return self.device, self.actuator

    def to_json(self) -> dict[str, object]:
        """What the audit records as the cause of the actuation."""
        return {"source": SOURCE, "topic": self.topic, "payload": self.payload,
                "at": round(self.received_at, 3)}  # fmt: skip


def command_value(component: str, cap: ActuatorCap, payload: bytes) -> Value | Malformed:
    """The device value a payload asks for (pure). Ranges are not checked
    here: an out-of-range number is the bridge's to refuse, and audit."""
    if len(payload) > MAX_PAYLOAD:
        return Malformed("oversized")
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        return Malformed("not_utf8")
    words = _WORDS.get(component, {})
    if text in words:
        value = words[text]
        if value is not None:
            return value
        assert cap.max is not None
        return _number(cap, 0.0 if text == "OFF" else cap.max)
    if component in ("lock", "switch"):
        return Malformed("unknown_word")
    try:
        number = float(text)
    except ValueError:
        return Malformed("not_a_number")
    return _number(cap, number) if math.isfinite(number) else Malformed("not_a_number")


def _number(cap: ActuatorCap, number: float) -> Value:
    """An integer actuator gets an int when the number is whole; a fraction
    stays a float, for the bridge to refuse with its reason."""
    if cap.value == "integer" and number.is_integer():
        return int(number)
    return number


class HaCommands:
    """The controllable entities of every device, and the workers that run
    their commands through ``actuate`` (which must never raise for a refusal:
    a refused actuation is an outcome, recorded by the bridge)."""

    def __init__(  # noqa: PLR0913 - keyword-only parts of the engine
        self,
        topics: HaTopics,
        actuate: Callable[[HaCommand], None],
        *,
        stats: Counter[str],
        workers: int = 4,
        limit: int = 64,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.topics = topics
        self._actuate = actuate
        self._stats = stats
        self._clock = clock
        self._entities: dict[tuple[str, str], tuple[str, ActuatorCap]] = {}
        self._lock = threading.Lock()
        self._queue = _KeyedQueue(self._run, workers, limit, stats)

    def start(self) -> None:
        self._queue.start()

    def stop(self) -> None:
        self._queue.stop()

    def idle(self) -> bool:
        return self._queue.idle()

    # -- which entities exist

    def register(self, device: str, announce: Announce) -> None:
        """The device's controllable actuators replace what it had before."""
        entities = {
            (device, cap.id): (component, cap)
            for cap in announce.actuators
            if (component := control_component(cap)) is not None
        }
        with self._lock:
            self._drop(device)
            self._entities |= entities

    def forget(self, device: str) -> None:
        """A refused device has no controllable entities."""
        with self._lock:
            self._drop(device)

    def _drop(self, device: str) -> None:
        for key in [k for k in self._entities if k[0] == device]:
            del self._entities[key]

    # -- commands in (on paho's network thread: quick, never raises)

    def receive(self, topic: str, payload: bytes, *, retained: bool) -> None:
        target = self.topics.command_target(topic)
        if target is None:
            return self._malformed(topic, "not_a_command_topic")
        if retained:
            return self._malformed(topic, "retained")
        with self._lock:
            entity = self._entities.get(target)
        if entity is None:
            return self._malformed(topic, "not_controllable")
        component, cap = entity
        value = command_value(component, cap, payload)
        if isinstance(value, Malformed):
            return self._malformed(topic, value.reason)
        self._stats["ha.commands"] += 1
        text = payload.decode("utf-8").strip()
        self._queue.put(HaCommand(*target, value, topic, text, self._clock()))
        return None

    def _run(self, command: HaCommand) -> None:
        self._actuate(command)

    def _malformed(self, topic: str, reason: str) -> None:
        self._stats[f"ha.malformed.{reason}"] += 1
        total = sum(v for k, v in self._stats.items() if k.startswith("ha.malformed."))
        level = logging.WARNING if total <= 10 or total % 100 == 0 else logging.DEBUG
        log.log(level, "dropped a Home Assistant command on %s: %s (%d so far)",
                topic, reason, total)  # fmt: skip


class _KeyedQueue:
    """Bounded, coalescing per entity, drained by a few threads; one entity's
    commands run one at a time and in order."""

    def __init__(
        self, handle: Callable[[HaCommand], None], workers: int, limit: int, stats: Counter[str]
    ) -> None:
        self._handle = handle
        self._workers = workers
        self._limit = limit
        self._stats = stats
        self._items: OrderedDict[tuple[str, str], HaCommand] = OrderedDict()
        self._busy: set[tuple[str, str]] = set()
        self._cond = threading.Condition()
        self._stop = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self._cond:
            self._stop = False
        for i in range(self._workers):
            thread = threading.Thread(target=self._run, name=f"ha-commands-{i}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop taking commands; what still waits is dropped and counted."""
        with self._cond:
            self._stop = True
            self._stats["ha.dropped"] += len(self._items)
            self._items.clear()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout_s  # shared: a worker may be waiting for the owner
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = []

    def put(self, command: HaCommand) -> None:
        with self._cond:
            if command.key in self._items:
                self._stats["ha.coalesced"] += 1
            elif len(self._items) >= self._limit or self._stop:
                self._stats["ha.dropped"] += 1
                log.warning("Home Assistant commands queue full: dropped %s", command.topic)
                return
            self._items[command.key] = command
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return not self._items and not self._busy

    def _next(self) -> HaCommand | None:
        """The oldest waiting command whose entity is not busy (under the lock)."""
        for key, command in self._items.items():
            if key not in self._busy:
                del self._items[key]
                self._busy.add(key)
                return command
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                command = self._next()
                while command is None and not self._stop:
                    self._cond.wait()
                    command = self._next()
                if command is None:
                    return
            try:
                self._handle(command)
            except Exception:  # one bad command must not stop a worker
                self._stats["ha.failed"] += 1
                log.exception("a Home Assistant command on %s failed", command.topic)
            finally:
                with self._cond:
                    self._busy.discard(command.key)
                    self._cond.notify_all()
