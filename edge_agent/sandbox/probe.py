"""Which sandbox layers this machine grants, and why the others are off.

``edge-agent doctor`` prints this; :class:`ProcessSandbox` uses it to plan
each call. Probing starts bwrap once and creates one cgroup, so the answer
is cached for the life of the process.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edge_agent.sandbox import bwrap, cgroup, landlock, seccomp

ISOLATION_LAYERS = ("landlock", "bwrap")


@dataclass(frozen=True)
class LayerStatus:
    """One layer: whether calls get it here, and a sentence saying why (not)."""

    name: str
    active: bool
    detail: str


@cache
def detect_layers() -> dict[str, LayerStatus]:
    """Every layer by name, in the order they are applied."""
    checks = (
        LayerStatus("rlimits", True, "cpu, address space, files, file size, processes"),
        _privdrop(),
        LayerStatus("no_new_privs", True, "prctl(PR_SET_NO_NEW_PRIVS) on every call"),
        LayerStatus("seccomp", *seccomp.available()),
        _landlock(),
        LayerStatus("bwrap", *bwrap.probe()),
        LayerStatus("cgroup", *cgroup.probe()),
        LayerStatus("reaper", True, "a subreaper supervisor kills what the tool leaves"),
    )
    return {layer.name: layer for layer in checks}


def untrusted_allowed(layers: Mapping[str, LayerStatus]) -> tuple[bool, str]:
    """Tools not marked ``trusted`` need Landlock or bwrap (namespaces)."""
    active = [name for name in ISOLATION_LAYERS if layers[name].active]
    if active:
        return True, "filesystem isolation by " + " and ".join(active)
    return False, (
        "no filesystem isolation: Landlock is off and bwrap cannot create namespaces; "
        "only tools marked trusted=True will run"
    )


def _landlock() -> LayerStatus:
    abi, reason = landlock.abi_version()
    if abi < 1:
        return LayerStatus("landlock", False, reason)
    parts = ["filesystem"]
    if abi >= 4:
        parts.append("tcp bind/connect")
    if abi >= 6:
        parts.append("signal and abstract-socket scoping")
    return LayerStatus("landlock", True, f"{reason}: " + ", ".join(parts))


def _privdrop() -> LayerStatus:
    if os.geteuid() != 0:
        return LayerStatus(
            "privdrop", False, f"not root: tools run as uid {os.geteuid()}, which rlimits bind"
        )
    if bwrap.probe()[0]:
        return LayerStatus("privdrop", True, "root: each call runs as its own throwaway uid")
    blocked = [p for p in python_paths() if not world_reachable(p)]
    if blocked:
        return LayerStatus(
            "privdrop",
            False,
            f"root, but {blocked[0]} is not readable by other users, so Python could not "
            "start as another uid: install bubblewrap or move the venv "
            "(rlimits on processes do not bind root)",
        )
    return LayerStatus("privdrop", True, "root: each call runs as its own throwaway uid")


def python_paths() -> list[Path]:
    """What a child needs to start Python and import edge-agent."""
    import edge_agent

    paths = [Path(sys.executable).resolve(), Path(edge_agent.__file__).resolve().parent]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.append(Path(prefix))
    return paths


def world_reachable(path: Path) -> bool:
    """Whether a user with no special rights can reach (and read) ``path``."""
    try:
        for parent in reversed(path.parents):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        return bool(os.stat(path).st_mode & stat.S_IROTH)
    except OSError:
        return False


def describe(layers: Iterable[LayerStatus]) -> list[tuple[str, str, str]]:
    """Rows for a table: layer, on/off, detail."""
    return [(s.name, "on" if s.active else "off", s.detail) for s in layers]


__all__ = ["LayerStatus", "describe", "detect_layers", "untrusted_allowed"]
