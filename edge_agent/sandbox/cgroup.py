"""One cgroup v2 per call: kill every process of the call, cap pids and memory.

Used where the daemon may create children in its own cgroup: as root, or as
a systemd service with ``Delegate=yes``. ``cgroup.kill`` (Linux 5.14) ends
the whole call at once, double-forked ``setsid`` orphans included, which no
process walk can promise. ``pids.max`` and ``memory.max`` are set when those
controllers are enabled for our subtree; on hybrid cgroup v1/v2 hosts they
are usually not, and the cgroup then only serves to kill. cgroup v1 is not
used.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import time
from functools import cache
from pathlib import Path

_COUNTER = itertools.count()


@cache
def _base() -> tuple[Path | None, str]:
    """Our own cgroup v2 folder, if we may create children in it."""
    mount = _cgroup2_mount()
    if mount is None:
        return None, "no cgroup v2 hierarchy is mounted"
    own = _own_path()
    if own is None:
        return None, "this process has no cgroup v2 path"
    base = mount / own.lstrip("/")
    if not os.access(base, os.W_OK):
        return None, f"{base} is not writable (run as root or as a service with Delegate=yes)"
    _enable_controllers(base)
    return base, str(base)


def _cgroup2_mount() -> Path | None:
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split(" ", 1)[0] == "cgroup2":
            return Path(left.split()[4])
    return None


def _own_path() -> str | None:
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    return None


def _enable_controllers(base: Path) -> None:
    wanted = {"pids", "memory"} & set(_read(base / "cgroup.controllers").split())
    missing = wanted - set(_read(base / "cgroup.subtree_control").split())
    if missing:
        # Fails (EBUSY) when our own cgroup holds processes: then kill-only.
        with contextlib.suppress(OSError):
            (base / "cgroup.subtree_control").write_text(" ".join(f"+{c}" for c in missing))


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def delegated_controllers() -> set[str]:
    """The controllers a per-call cgroup gets (``pids``, ``memory``) here."""
    base, _ = _base()
    if base is None:
        return set()
    return {"pids", "memory"} & set(_read(base / "cgroup.subtree_control").split())


def probe() -> tuple[bool, str]:
    """Whether per-call cgroups work here, and what they can do."""
    base, reason = _base()
    if base is None:
        return False, reason
    try:
        group = CallCgroup.create(max_procs=8, memory_mb=64)
    except OSError as exc:
        return False, f"cannot create a cgroup under {base}: {exc.strerror}"
    caps = group.controllers
    killable = (group.path / "cgroup.kill").exists()
    group.remove()
    if not killable:
        return False, "kernel without cgroup.kill (needs Linux 5.14)"
    extra = "kill, " + ", ".join(caps) if caps else "kill only (pids/memory not delegated)"
    return True, f"cgroup v2 under {base}: {extra}"


class CallCgroup:
    """A cgroup holding one tool call."""

    def __init__(self, path: Path, controllers: tuple[str, ...]) -> None:
        self.path = path
        self.controllers = controllers

    @classmethod
    def create(cls, *, max_procs: int, memory_mb: int) -> CallCgroup:
        base, reason = _base()
        if base is None:
            raise OSError(reason)
        path = base / f"edge-agent-{os.getpid()}-{next(_COUNTER)}-{secrets.token_hex(3)}"
        path.mkdir(mode=0o755)
        controllers = []
        if (path / "pids.max").exists():
            (path / "pids.max").write_text(str(max_procs))
            controllers.append("pids")
        if (path / "memory.max").exists():
            (path / "memory.max").write_text(str(memory_mb << 20))
            if (path / "memory.swap.max").exists():
                (path / "memory.swap.max").write_text("0")
            controllers.append("memory")
        return cls(path, tuple(controllers))

    def attach(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def oom_killed(self) -> bool:
        for line in _read(self.path / "memory.events").splitlines():
            name, _, count = line.partition(" ")
            if name == "oom_kill" and count.strip() != "0":
                return True
        return False

    def kill(self) -> None:
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError:
            for pid in _read(self.path / "cgroup.procs").split():
                with contextlib.suppress(OSError):
                    os.kill(int(pid), signal.SIGKILL)

    def remove(self, wait_s: float = 2.0) -> bool:
        """Kill what is left and delete the cgroup; False if it would not go."""
        deadline = time.monotonic() + wait_s
        while True:
            if "populated 1" in _read(self.path / "cgroup.events"):
                self.kill()
            else:
                try:
                    self.path.rmdir()
                    return True
                except FileNotFoundError:
                    return True
                except OSError:
                    pass
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)


__all__ = ["CallCgroup", "delegated_controllers", "probe"]
