"""bubblewrap (Debian package ``bubblewrap``): namespaces without a daemon.

The tool sees a fresh root holding only the system folders, the Python it
runs on (read-only) and its own work folder (read-write); its own PID
namespace, so no other process is visible or signalable and every process
of the call dies with it; and, with the network off, a network namespace
holding only a loopback device of its own.

As root, bwrap needs no user namespace; the supervisor inside then drops to
an unprivileged uid itself (the folders bwrap creates are 0755, so a Python
installed under a private home such as ``/root/.pyenv`` stays reachable).
Otherwise bwrap needs unprivileged user namespaces
(``kernel.unprivileged_userns_clone``, AppArmor's
``apparmor_restrict_unprivileged_userns`` on Ubuntu 24.04+).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path

SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")


def find() -> str | None:
    return shutil.which("bwrap", path="/usr/local/bin:/usr/bin:/bin")


def command(  # noqa: PLR0913 - each is one mount decision
    bwrap: str,
    *,
    read: Iterable[Path],
    workdir: Path,
    network: bool,
    as_root: bool,
    inner: Sequence[str],
    write: Sequence[Path] = (),
) -> list[str]:
    """The bwrap argv that runs ``inner`` inside the sandbox."""
    argv = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
    argv += ["--unshare-uts", "--unshare-cgroup-try", "--hostname", "edge-agent-sandbox"]
    if as_root:  # the supervisor needs these two to drop to its uid, nothing else
        argv += ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user"]
    if not network:
        argv += ["--unshare-net"]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += _mounts(read, [workdir, *write])
    return [*argv, "--chdir", "/", "--", *inner]  # the supervisor enters workdir as its uid


def _mounts(read: Iterable[Path], writable: Sequence[Path]) -> list[str]:
    argv: list[str] = []
    covered = [Path("/dev"), Path("/proc")]  # bwrap's own --dev and --proc
    made: set[Path] = set()
    for name in SYSTEM_DIRS:
        path = Path(name)
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), name]
            covered.append(path)
        elif path.is_dir():
            argv += ["--ro-bind", name, name]
            covered.append(path)
    extra = {p for p in read if p.exists()} | {p.resolve() for p in read if p.exists()}
    for path in sorted(extra, key=lambda p: len(p.parts)):
        if not any(path.is_relative_to(c) for c in covered):
            argv += [*_parents(path, made), "--ro-bind", str(path), str(path)]
            covered.append(path)
    for path in writable:
        argv += [*_parents(path, made), "--bind", str(path), str(path)]
    return argv


def _parents(path: Path, made: set[Path]) -> list[str]:
    """``--dir`` for each missing parent, world-traversable (bwrap's default is 0700)."""
    argv: list[str] = []
    for parent in reversed(path.parents[:-1]):  # without "/"
        if parent not in made:
            made.add(parent)
            argv += ["--perms", "0755", "--dir", str(parent)]
    return argv


@cache
def probe() -> tuple[bool, str]:
    """Whether bwrap can build a sandbox here, as this user."""
    path = find()
    if path is None:
        return False, "bwrap is not installed (Debian package bubblewrap)"
    as_root = os.geteuid() == 0
    true = shutil.which("true", path="/usr/bin:/bin") or "/bin/true"
    try:
        with tempfile.TemporaryDirectory(prefix="edge-agent-probe-") as tmp:
            argv = command(
                path, read=(), workdir=Path(tmp), network=False, as_root=as_root, inner=[true]
            )
            done = subprocess.run(argv, capture_output=True, timeout=10, check=False, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"bwrap failed to start: {exc}"
    if done.returncode != 0:
        why = done.stderr.decode(errors="replace").strip().splitlines()
        hint = "" if as_root else " (are unprivileged user namespaces enabled?)"
        return False, f"bwrap cannot create namespaces: {why[-1] if why else done.returncode}{hint}"
    mode = "as root, no user namespace" if as_root else "with an unprivileged user namespace"
    return True, f"{path} {mode}: pid, net, ipc, uts namespaces"


__all__ = ["command", "find", "probe"]
