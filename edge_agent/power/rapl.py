"""Intel/AMD RAPL energy counters, read from the powercap sysfs interface.

Paths: ``/sys/class/powercap/intel-rapl:<N>/{name,energy_uj,max_energy_range_uj}``
for each top-level zone whose ``name`` starts with ``package`` (AMD Zen
exposes its package counter under the same ``intel-rapl`` names). Subzones
(``intel-rapl:0:0`` core, ``intel-rapl:0:1`` uncore/dram) lie inside their
package and would be counted twice; ``psys`` zones overlap the packages too,
so both are skipped. Several packages (two sockets) are summed.

Limits:

* RAPL counts the whole package: every process on the machine, not only us.
* ``energy_uj`` wraps to 0 after ``max_energy_range_uj``. Each sample adds
  the delta since the previous one and adds the range back when the value
  went down, so one wrap between two samples is handled; two are not (at
  least tens of minutes apart at full load with typical ranges).
* Since Linux 5.10 (CVE-2020-8694, "Platypus") ``energy_uj`` is readable by
  root only. As a normal user this source is unavailable with the reason
  "permission denied"; a udev rule or a root service can grant access.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from pathlib import Path

from edge_agent.power.base import Reading, Unavailable, now

_TOP_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass
class _Zone:
    name: str
    energy: Path
    range_uj: int
    last_uj: int


class RaplProbe:
    """A joule counter summed over the RAPL package zones, wraparound-safe."""

    def __init__(self, zones: list[_Zone], *, note: str = "") -> None:
        self._zones = zones
        self._total_uj = 0
        self._lock = threading.Lock()
        self.note = note
        self.source = "rapl:" + "+".join(z.name for z in zones)

    def sample(self) -> Reading:
        with self._lock:
            for zone in self._zones:
                raw = _read_int(zone.energy)
                delta = raw - zone.last_uj
                if delta < 0:  # the counter wrapped since the last sample
                    delta += zone.range_uj
                zone.last_uj = raw
                self._total_uj += delta
            return Reading(self._total_uj / 1e6, now(), self.source, self.note)


def open_rapl(root: Path) -> RaplProbe | Unavailable:
    """The RAPL probe under ``root`` (normally /sys/class/powercap), or why not."""
    dirs = sorted(p for p in _list(root) if _TOP_ZONE.match(p.name))
    if not dirs:
        return Unavailable(f"rapl unavailable: no intel-rapl zones under {root}")
    zones: list[_Zone] = []
    for path in dirs:
        zone = _open_zone(path)
        if isinstance(zone, Unavailable):
            return zone
        if zone is not None:
            zones.append(zone)
    if not zones:
        return Unavailable(f"rapl unavailable: no package zone under {root}")
    return RaplProbe(zones)


def _open_zone(path: Path) -> _Zone | Unavailable | None:
    """A package zone, read once to prove it is readable; None for other zones."""
    try:
        name = (path / "name").read_text(encoding="ascii").strip()
        if not name.startswith("package"):
            return None
        energy = path / "energy_uj"
        last = _read_int(energy)
        range_uj = _read_int(path / "max_energy_range_uj")
    except PermissionError:
        return Unavailable("rapl unreadable: permission denied")
    except (OSError, ValueError) as exc:
        return Unavailable(f"rapl unreadable: {_why(exc)}")
    return _Zone(name, energy, range_uj, last)


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="ascii").strip())


def _list(root: Path) -> list[Path]:
    try:
        return list(root.iterdir())
    except OSError:
        return []


def _why(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        name = Path(exc.filename).name if exc.filename else ""
        return f"{exc.strerror.lower()}{f' ({name})' if name else ''}"
    return str(exc)
