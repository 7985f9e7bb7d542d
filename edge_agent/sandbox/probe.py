"""Which sandbox layers this machine grants, why the others are off, and
whether that contains a tool not marked ``trusted``.

``edge-agent doctor`` prints this; :class:`ProcessSandbox` uses it to plan
each call. Both read :func:`containment`, the one rule, so doctor's verdict
and the sandbox's refusal cannot disagree. Probing starts bwrap once and
creates one cgroup, so the answer is cached for the life of the process.

``EDGE_AGENT_SANDBOX_DISABLE=bwrap,privdrop`` (any of ``privdrop``,
``seccomp``, ``landlock``, ``bwrap``, ``cgroup``) turns layers off for doctor
and every sandbox alike: for a layer that misbehaves on a machine, or to see
what a machine without it does.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from edge_agent.errors import ConfigError
from edge_agent.sandbox import bwrap, cgroup, landlock, seccomp

DISABLE_ENV = "EDGE_AGENT_SANDBOX_DISABLE"
OPTIONAL_LAYERS = frozenset({"privdrop", "seccomp", "landlock", "bwrap", "cgroup"})
_INSTALL_BWRAP = "install bubblewrap (apt install bubblewrap)"


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


def disabled_from_env(environ: Mapping[str, str] | None = None) -> frozenset[str]:
    """Layers this machine's owner turned off: ``EDGE_AGENT_SANDBOX_DISABLE=bwrap``
    (comma-separated), for a layer that misbehaves here, or to see what a
    machine without it does. ``doctor`` and every sandbox read the same value."""
    raw = (os.environ if environ is None else environ).get(DISABLE_ENV, "")
    names = frozenset(n.strip() for n in raw.split(",") if n.strip())
    unknown = names - OPTIONAL_LAYERS
    if unknown:
        raise ConfigError(
            f"{DISABLE_ENV} names unknown sandbox layers: {sorted(unknown)}",
            hint="use a comma-separated list of: " + ", ".join(sorted(OPTIONAL_LAYERS)),
        )
    return names


@dataclass(frozen=True)
class Host:
    """The facts the containment rule reads; :func:`detect_host` fills them,
    tests build any machine they like."""

    layers: Mapping[str, LayerStatus]
    root: bool
    bwrap_installed: bool
    pids_max: bool  # a per-call cgroup gets pids.max here
    private_path: Path | None  # the first path a dropped uid could not read


@cache
def detect_host() -> Host:
    """This machine, probed once per process."""
    return Host(
        layers=detect_layers(),
        root=os.geteuid() == 0,
        bwrap_installed=bwrap.find() is not None,
        pids_max="pids" in cgroup.delegated_controllers(),
        private_path=_private_path(),
    )


@dataclass(frozen=True)
class Containment:
    """Can a tool not marked ``trusted`` be contained here? The one rule that
    ``doctor`` prints and :class:`ProcessSandbox` enforces.

    It needs filesystem isolation (Landlock or bwrap) and, as root, a bound
    on processes (a throwaway uid or a cgroup with ``pids.max``), because
    rlimits on processes do not bind root. ``reason`` says what contains a
    call, or what is missing; ``hint`` names the one missing piece on this
    machine. ``layers`` are the optional layers calls get here.
    """

    contained: bool
    reason: str
    hint: str
    layers: frozenset[str]


def containment(disabled: Iterable[str] = (), host: Host | None = None) -> Containment:
    """The verdict for this machine (or ``host``) with ``disabled`` layers off."""
    host = host or detect_host()
    off = frozenset(disabled)
    on = {name for name, layer in host.layers.items() if layer.active} & OPTIONAL_LAYERS
    on -= off
    drop = host.root and "privdrop" not in off and ("bwrap" in on or host.private_path is None)
    on = (on - {"privdrop"}) | ({"privdrop"} if drop else set())
    isolation = [name for name in ("landlock", "bwrap") if name in on]
    pids = "cgroup" in on and host.pids_max
    layers = frozenset(on)
    if not isolation:
        reason = "no filesystem isolation: " + "; ".join(
            _why_off(host, name, off) for name in ("landlock", "bwrap")
        )
        return Containment(False, reason, _isolation_hint(host, off), layers)
    if host.root and not (drop or pids):
        reason = (
            "running as root, a call can neither drop to another uid nor get a cgroup "
            "with pids.max, so a fork bomb would not be contained"
        )
        return Containment(False, reason, _bound_hint(host, off), layers)
    reason = "filesystem isolation by " + " and ".join(isolation)
    if host.root:
        reason += "; processes bounded by " + ("a throwaway uid" if drop else "cgroup pids.max")
    return Containment(True, reason, "", layers)


def _why_off(host: Host, name: str, off: frozenset[str]) -> str:
    if name in off:
        return f"{name} is disabled by {DISABLE_ENV}"
    return f"{name}: {host.layers[name].detail}"


def _isolation_hint(host: Host, off: frozenset[str]) -> str:
    """The cheapest way to get Landlock or bwrap back, on this machine."""
    for name in ("bwrap", "landlock"):
        if name in off and host.layers[name].active:
            return f"remove {name} from {DISABLE_ENV}"
    if not host.bwrap_installed:
        return _INSTALL_BWRAP
    if not host.root:
        return (
            "let bwrap create user namespaces (sysctl kernel.unprivileged_userns_clone=1; "
            "on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0)"
        )
    return "enable Landlock (add landlock to the lsm= kernel parameter)"


def _bound_hint(host: Host, off: frozenset[str]) -> str:
    """As root with isolation but no process bound: the cheapest bound here."""
    if "privdrop" in off:
        return f"remove privdrop from {DISABLE_ENV}"
    if "bwrap" in off and host.layers["bwrap"].active:
        return f"remove bwrap from {DISABLE_ENV}"
    if not host.bwrap_installed:
        return _INSTALL_BWRAP
    return (
        f"{host.private_path} is not readable by other users, so a call cannot drop to "
        "another uid: move the venv (and Python) somewhere world-readable, "
        "or run edge-agent as a normal user"
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
    private = _private_path()
    if bwrap.probe()[0] or private is None:
        return LayerStatus("privdrop", True, "root: each call runs as its own throwaway uid")
    return LayerStatus(
        "privdrop",
        False,
        f"root, but {private} is not readable by other users, so Python could not "
        "start as another uid (rlimits on processes do not bind root)",
    )


@cache
def _private_path() -> Path | None:
    """The first path a child needs that a user with no rights could not read."""
    needed = python_paths() + import_paths(landlocked=True)
    return next((p for p in needed if not world_reachable(p)), None)


def python_paths() -> list[Path]:
    """What a child needs to start Python and import edge-agent."""
    import edge_agent

    paths = [Path(sys.executable).resolve(), Path(edge_agent.__file__).resolve().parent]
    for prefix in {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}:
        paths.append(Path(prefix))
    return paths


def import_paths(*, landlocked: bool = False) -> list[Path]:
    """The daemon's import path for the child: edge-agent first, then sys.path
    without the current folder. With ``landlocked``, a source checkout is
    narrowed to its ``edge_agent`` package (the child imported it already)."""
    import edge_agent

    package = Path(edge_agent.__file__).resolve().parent
    root = package.parent
    cwd = Path.cwd()
    paths = [root]
    for entry in sys.path:
        path = Path(entry)
        if entry and path.is_absolute() and path != cwd and present(path):
            paths.append(path)
    paths = list(dict.fromkeys(paths))
    if landlocked and root.name not in ("site-packages", "dist-packages"):
        paths = [package if p == root else p for p in paths]
    return paths


def present(path: Path) -> bool:
    """Whether ``path`` exists for this process. A non-root daemon (the
    systemd unit's user) may meet paths it cannot even stat, such as an
    interpreter resolved through a 0700 home: those are left out rather than
    failing the call, since this process could not grant them anyway."""
    try:
        return path.exists()
    except OSError:
        return False


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


__all__ = [
    "DISABLE_ENV",
    "Containment",
    "Host",
    "LayerStatus",
    "containment",
    "describe",
    "detect_host",
    "detect_layers",
    "disabled_from_env",
    "import_paths",
    "present",
]
