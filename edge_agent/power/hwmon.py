"""Board power sensors exposed through hwmon (``/sys/class/hwmon/hwmon*/``).

What we look for in each ``hwmonN`` directory (units from the kernel's hwmon
sysfs ABI), best first:

1. ``energy<K>_input`` in µJ: a counter, read directly (e.g. ``amd_energy``).
2. ``power<K>_input`` in µW: instantaneous power, integrated over time
   (e.g. ``ina2xx`` for INA219/INA226/INA260 power HATs).
3. The TI INA3221 (``name`` = ``ina3221``), which reports no power: bus
   voltage ``in<K>_input`` in mV × current ``curr<K>_input`` in mA for
   channels 1-3, skipping channels whose label is ``NC`` or whose
   ``in<K>_enable`` is 0. On a Jetson Orin Nano/NX it sits at
   ``/sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon*`` (also linked from
   ``/sys/class/hwmon``) with rails ``VDD_IN``, ``VDD_CPU_GPU_CV`` and
   ``VDD_SOC``.

Within one chip, a channel labelled as the total (``VDD_IN``, the module
input, or ``Esocket*`` on ``amd_energy``) is used alone, because the other
rails are parts of it; otherwise all channels are summed. GPU chips
(``amdgpu``, ``radeon``, ``nouveau``) are skipped: they say nothing about the
CPU doing our inference.

The Raspberry Pi 5 PMIC (Renesas DA9091) reports its rails through the
firmware (``vcgencmd pmic_read_adc``), not hwmon, on stock kernels; if a
kernel driver exposes them as ``power*_input`` or an INA3221 this probe uses
them, otherwise a Pi 5 falls back to the CPU model.

Power inputs are integrated with the trapezoid rule between readings taken
by a background thread every ``interval_s`` (started on the first
``sample()``) and at each ``sample()``. The sensors measure a whole board
or rail: other load on it is counted too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.power.base import Reading, Unavailable, now

ChannelKind = Literal["energy", "power", "vi"]
_SKIP_CHIPS = frozenset({"amdgpu", "radeon", "nouveau"})
_TOTAL_LABEL = re.compile(r"^(VDD_IN|Esocket\d*)$", re.IGNORECASE)
_INDEX = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Channel:
    """One sensor channel; ``read()`` gives joules (energy) or watts."""

    kind: ChannelKind
    label: str
    paths: tuple[Path, ...]

    def read(self) -> float:
        values = [_read_int(p) for p in self.paths]
        if self.kind == "energy":
            return values[0] / 1e6  # µJ
        if self.kind == "power":
            return values[0] / 1e6  # µW
        return values[0] * values[1] / 1e6  # mV × mA = µW


@dataclass(frozen=True)
class Chip:
    name: str
    path: Path
    channels: tuple[Channel, ...]

    @property
    def kind(self) -> ChannelKind:
        return self.channels[0].kind


class HwmonProbe:
    """A joule counter over one hwmon chip's chosen channels."""

    def __init__(
        self,
        chip: Chip,
        *,
        interval_s: float | None = 0.05,
        clock: Callable[[], float] = now,
    ) -> None:
        self.chip = chip
        self.source = f"hwmon:{chip.name}"
        self.note = ""
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._joules = 0.0
        self._counters: list[float] | None = None  # energy chips: last raw joules
        self._power: tuple[float, float] | None = None  # power chips: (time, watts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> Reading:
        with self._lock:
            at = self._update()
            joules = self._joules
        self._start_polling()
        return Reading(joules, at, self.source, self.note)

    def close(self) -> None:
        """Stop the background integrator, if one is running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _update(self) -> float:
        """Fold the sensors' current values into the counter; the caller holds the lock."""
        at = self._clock()
        if self.chip.kind == "energy":
            self._add_counters([c.read() for c in self.chip.channels])
        else:
            self._add_power(at, sum(c.read() for c in self.chip.channels))
        return at

    def _add_counters(self, raw: list[float]) -> None:
        if self._counters is not None:
            # A counter that went down was reset (driver reload): count from there.
            pairs = zip(raw, self._counters, strict=True)
            self._joules += sum(max(0.0, new - old) for new, old in pairs)
        self._counters = raw

    def _add_power(self, at: float, watts: float) -> None:
        """Trapezoid rule between the previous reading and this one."""
        if self._power is not None:
            last_at, last_w = self._power
            self._joules += (last_w + watts) / 2 * max(0.0, at - last_at)
        self._power = (at, watts)

    def _start_polling(self) -> None:
        needs = self.chip.kind != "energy" and self._interval_s is not None
        if needs and self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._poll, name="hwmon-probe", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        assert self._interval_s is not None
        while not self._stop.wait(self._interval_s):
            try:
                with self._lock:
                    self._update()
            except (OSError, ValueError):
                continue  # a missed reading: the next one spans the gap


def open_hwmon(
    root: Path, *, interval_s: float | None = 0.05, clock: Callable[[], float] = now
) -> HwmonProbe | Unavailable:
    """The best hwmon chip under ``root`` (normally /sys/class/hwmon), or why not."""
    chips: list[Chip] = []
    problem = ""
    for path in sorted(_list(root), key=_natural):
        found = _open_chip(path)
        if isinstance(found, Unavailable):
            problem = found.reason
        elif found is not None:
            chips.append(found)
    if not chips:
        return Unavailable(problem or f"hwmon unavailable: no power or energy inputs under {root}")
    best = min(chips, key=lambda c: c.kind != "energy")  # stable: first counter chip wins
    return HwmonProbe(best, interval_s=interval_s, clock=clock)


def _open_chip(path: Path) -> Chip | Unavailable | None:
    """The chip's usable channels, each read once; None if it has none."""
    name = _read_text(path / "name") or path.name
    if name in _SKIP_CHIPS:
        return None
    channels = (
        _simple_channels(path, "energy")
        or _simple_channels(path, "power")
        or (_ina3221_channels(path) if name == "ina3221" else [])
    )
    if not channels:
        return None
    try:
        for channel in channels:
            channel.read()
    except PermissionError:
        return Unavailable(f"hwmon unreadable: permission denied ({name})")
    except (OSError, ValueError) as exc:
        return Unavailable(f"hwmon unreadable: {name}: {exc}")
    return Chip(name, path, tuple(_totals(channels)))


def _simple_channels(path: Path, kind: Literal["energy", "power"]) -> list[Channel]:
    found = sorted(path.glob(f"{kind}*_input"), key=_natural)
    return [Channel(kind, _label(p), (p,)) for p in found]


def _ina3221_channels(path: Path) -> list[Channel]:
    channels = []
    for k in (1, 2, 3):
        volts, amps = path / f"in{k}_input", path / f"curr{k}_input"
        label = _read_text(path / f"in{k}_label") or f"in{k}"
        enabled = _read_text(path / f"in{k}_enable") != "0"
        if volts.exists() and amps.exists() and enabled and label.upper() != "NC":
            channels.append(Channel("vi", label, (volts, amps)))
    return channels


def _totals(channels: list[Channel]) -> list[Channel]:
    totals = [c for c in channels if _TOTAL_LABEL.match(c.label)]
    return totals or channels


def _label(path: Path) -> str:
    """``power1_label`` if there is one, else ``power1``."""
    stem = path.name.removesuffix("_input")
    return _read_text(path.with_name(f"{stem}_label")) or stem


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return ""


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="ascii").strip())


def _list(root: Path) -> list[Path]:
    try:
        return list(root.iterdir())
    except OSError:
        return []


def _natural(path: Path) -> tuple[str, int]:
    """hwmon2 before hwmon10."""
    match = _INDEX.search(path.name.split("_")[0])
    return (_INDEX.sub("", path.name.split("_")[0]), int(match.group(1)) if match else -1)
