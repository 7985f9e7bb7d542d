"""The CPU-time power model: process CPU seconds × per-core active watts.

This is an *estimate*, used when no sensor can be read. It charges a request
for the CPU time this process (all its threads, llama.cpp's included) and its
waited-for children (sandboxed tool runs) spent, at the marginal power one
busy core adds on the device. Idle power is not charged to requests; it is in
the profile for whole-device budgets. Memory, GPU and I/O energy are not
modelled. Profiles are picked from ``/proc/device-tree/model`` (ARM boards)
and ``/proc/cpuinfo``, or by name.

Where the figures come from (all at the board's power input, so they include
regulator losses; treat them as ±30 %):

* ``raspberry-pi-4``: about 2.7 W idle and 6.4 W with ``stress`` on all four
  Cortex-A72 cores in published USB-meter measurements (e.g. the Pi Dramble
  power benchmarks; chipwired.com's 36 readings give 2.2-3.0 W idle and
  5.1-6.3 W high load) → (6.4 - 2.7) / 4 ≈ 0.9 W per core.
* ``raspberry-pi-5``: about 3 W idle and 7.5-9 W with all four Cortex-A76
  cores loaded in published reviews (official 27 W supply, active cooler) →
  ≈ 1.3 W per core at the midpoint.
* ``jetson-orin-nano``: NVIDIA rates the module at 7 W or 15 W (power
  modes); an all-core CPU load on the six Cortex-A78AE cores in 15 W mode
  moves the ``VDD_CPU_GPU_CV`` rail by roughly 3.5 W → ≈ 0.6 W per core;
  about 4.5 W idle at the developer kit's DC input.
* ``generic-x86``: rated power per core of mainstream parts spans desktop
  65 W / 8 cores ≈ 8 W, laptop 15-28 W / 4 cores ≈ 4-7 W and server
  225-280 W / 64 cores ≈ 3.5-4.4 W; 5 W per core and 10 W idle sit in that
  range. On x86, RAPL is the better source whenever it is readable.
* ``generic-arm``: other Cortex-A boards, 1 W per core and 3 W idle, between
  the Pi 4 and Pi 5 figures.
"""

from __future__ import annotations

import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.errors import ConfigError
from edge_agent.power.base import Reading, SysPaths, now

if TYPE_CHECKING:
    import psutil


@dataclass(frozen=True)
class DeviceProfile:
    """The power figures of one kind of device (see the module docstring)."""

    name: str
    per_core_w: float
    idle_w: float
    basis: str


PROFILES: dict[str, DeviceProfile] = {
    p.name: p
    for p in (
        DeviceProfile("raspberry-pi-4", 0.9, 2.7, "USB-C meter: 2.7 W idle, 6.4 W 4-core stress"),
        DeviceProfile("raspberry-pi-5", 1.3, 3.0, "USB-C meter: ~3 W idle, 7.5-9 W 4-core load"),
        DeviceProfile("jetson-orin-nano", 0.6, 4.5, "15 W mode, ~3.5 W CPU rail over 6 cores"),
        DeviceProfile("generic-x86", 5.0, 10.0, "rated W per core of mainstream x86 parts"),
        DeviceProfile("generic-arm", 1.0, 3.0, "between the Pi 4 and Pi 5 figures"),
    )
}

# Substrings of /proc/device-tree/model, most specific first.
_BOARDS = (
    ("raspberry pi 5", "raspberry-pi-5"),
    ("raspberry pi 4", "raspberry-pi-4"),
    ("raspberry pi compute module 4", "raspberry-pi-4"),
    ("jetson orin nano", "jetson-orin-nano"),
)
_X86_VENDOR = re.compile(r"^vendor_id\s*:\s*(GenuineIntel|AuthenticAMD|HygonGenuine)", re.M)
_MODEL_NAME = re.compile(r"^(?:model name|Model|Hardware)\s*:\s*(.+)$", re.M)


def profile_named(name: str) -> DeviceProfile:
    """A shipped profile by name; an unknown name is a configuration mistake."""
    if name not in PROFILES:
        known = ", ".join(PROFILES)
        raise ConfigError(f"unknown device profile {name!r}", hint=f"known profiles: {known}")
    return PROFILES[name]


def detect_profile(paths: SysPaths | None = None) -> DeviceProfile:
    """The profile for this machine: a known board, else x86 or ARM generic."""
    paths = paths or SysPaths()
    board = _read_text(paths.device_tree_model).lower()
    for needle, name in _BOARDS:
        if needle in board:
            return PROFILES[name]
    if _X86_VENDOR.search(_read_text(paths.cpuinfo)):
        return PROFILES["generic-x86"]
    machine = platform.machine().lower()
    if board or machine.startswith(("arm", "aarch")):
        return PROFILES["generic-arm"]
    return PROFILES["generic-x86"]


def cpu_model_name(paths: SysPaths | None = None) -> str:
    """A human-readable CPU or board name, for benchmark records."""
    paths = paths or SysPaths()
    board = _read_text(paths.device_tree_model).strip()
    if board:
        return board
    match = _MODEL_NAME.search(_read_text(paths.cpuinfo))
    if match:
        return match.group(1).strip()
    return platform.processor() or platform.machine() or "unknown"


def _read_text(path: Path) -> str:
    """File text with device-tree NULs stripped; '' if it cannot be read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace").replace("\x00", "")
    except OSError:
        return ""


class CpuModelProbe:
    """Energy counter = (user + system CPU seconds) × ``profile.per_core_w``.

    Children count only once they have exited and been waited for (that is
    when the kernel adds their time to ours), which is how tool runs end.
    """

    def __init__(
        self, profile: DeviceProfile, *, note: str = "", include_children: bool = True
    ) -> None:
        import psutil

        self.profile = profile
        self.note = note
        self.include_children = include_children
        self.source = f"cpu-model:{profile.name}"
        self._process: psutil.Process = psutil.Process()

    def cpu_seconds(self) -> float:
        times = self._process.cpu_times()
        total = times.user + times.system
        if self.include_children:
            total += times.children_user + times.children_system
        return total

    def sample(self) -> Reading:
        return Reading(self.cpu_seconds() * self.profile.per_core_w, now(), self.source, self.note)
