"""The power-probe interface: one method, ``sample()``, returning an energy counter.

Why a counter and not ``start()``/``stop()``: every source we support is, or
can cheaply be made into, a monotonically growing joule counter (RAPL and
hwmon ``energy*_input`` are counters in hardware; the CPU model is CPU-seconds
× watts; sampled ``power*_input`` is integrated over time). Given a counter,
the energy of any span is the difference of two readings, so spans can nest
and overlap (one item inside a whole run) without the probe keeping per-span
state or tokens. :func:`measure` and :meth:`EnergySample.between` turn two
readings into the :class:`EnergySample` a benchmark reports.

Limits, said plainly: RAPL and hwmon measure the whole package or board, so
other load on the machine is counted too; the CPU model counts only this
process (and its waited-for children) and is an *estimate* from a device
profile, never a measurement. The source string always says which it was.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


@dataclass(frozen=True)
class Reading:
    """One sample of a probe's energy counter.

    ``joules`` only grows; its zero point is arbitrary (only differences
    mean anything). ``at`` is ``time.monotonic()`` seconds.
    """

    joules: float
    at: float
    source: str
    note: str = ""


@dataclass(frozen=True)
class EnergySample:
    """Energy used over one span, and where the figure came from.

    ``source`` names the sensor or model, e.g. ``rapl:package-0``,
    ``hwmon:ina3221`` or ``cpu-model:generic-x86``; ``note`` says why a
    better source was not used, when one was wanted.
    """

    joules: float
    seconds: float
    source: str
    note: str = ""

    @classmethod
    def between(cls, start: Reading, end: Reading) -> EnergySample:
        """The span from ``start`` to ``end`` of the same probe."""
        joules = max(0.0, end.joules - start.joules)
        return cls(joules, max(0.0, end.at - start.at), end.source, end.note)

    @property
    def watts(self) -> float:
        """Mean power over the span (0 for an empty span)."""
        return self.joules / self.seconds if self.seconds > 0 else 0.0


class PowerProbe(Protocol):
    """Anything that reads a joule counter."""

    def sample(self) -> Reading: ...


@dataclass(frozen=True)
class Unavailable:
    """Why a sensor cannot be used here; a value, not an exception, because a
    missing sensor is the normal case on most machines."""

    reason: str


@dataclass(frozen=True)
class SysPaths:
    """Where the probes look. Tests point these at a fake sysfs tree."""

    powercap: Path = Path("/sys/class/powercap")
    hwmon: Path = Path("/sys/class/hwmon")
    device_tree_model: Path = Path("/proc/device-tree/model")
    cpuinfo: Path = Path("/proc/cpuinfo")


@dataclass
class Span:
    """Filled in by :func:`measure` when its block ends."""

    energy: EnergySample | None = None


@contextmanager
def measure(probe: PowerProbe) -> Iterator[Span]:
    """``with measure(probe) as span: ...`` then read ``span.energy``."""
    span = Span()
    start = probe.sample()
    try:
        yield span
    finally:
        span.energy = EnergySample.between(start, probe.sample())


def now() -> float:
    """The clock every probe stamps readings with."""
    return time.monotonic()
