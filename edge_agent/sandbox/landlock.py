"""Landlock through raw syscalls (ctypes): the filesystem, TCP and signals.

A process that calls :func:`restrict` keeps, for the rest of its life and
that of its children, only the access listed: read (and execute) beneath
the ``read`` paths, everything beneath the ``write`` paths. What the kernel
version can express is used and nothing more:

- ABI 1-3: filesystem (ABI 2 adds rename across folders, 3 truncation);
- ABI 4: TCP ``bind``/``connect`` are denied when the network is off
  (UDP and other families are left to the seccomp filter);
- ABI 5: device ``ioctl``;
- ABI 6: signals and abstract unix sockets are scoped to the sandbox, so a
  tool cannot signal the supervisor or the daemon even under the same uid.

Landlock also keeps a sandboxed process from ptrace-ing anything outside
its domain. It does not hide paths or limit connecting to an existing
pathname unix socket (DAC still applies); bubblewrap hides those.
Raspberry Pi OS builds Landlock but leaves it off: add ``lsm=landlock,...``
to the kernel command line.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edge_agent.sandbox.seccomp import libc

_SYS_CREATE_RULESET = 444  # the same numbers on x86_64 and aarch64
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_TRUNCATE = 1 << 14
FS_IOCTL_DEV = 1 << 15
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_FILE_ONLY = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV
READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


def _syscall(number: int, *args: Any) -> int:
    fn = libc().syscall
    fn.restype = ctypes.c_long
    result: int = fn(ctypes.c_long(number), *args)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def abi_version() -> tuple[int, str]:
    """The Landlock ABI (0 when unusable) and a reason for ``doctor``."""
    try:
        version = _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    except OSError as exc:
        if exc.errno == errno.ENOSYS:
            return 0, "kernel built without Landlock (CONFIG_SECURITY_LANDLOCK)"
        if exc.errno == errno.EOPNOTSUPP:
            return 0, "Landlock is built but disabled: add landlock to the lsm= boot parameter"
        return 0, f"Landlock unusable: {exc.strerror}"
    return version, f"ABI {version}"


def fs_rights(abi: int) -> int:
    """Every filesystem right the kernel knows: what is not granted is denied."""
    best = max(k for k in _FS_BY_ABI if k <= max(abi, 1))
    return _FS_BY_ABI[best]


def restrict(read: Iterable[Path], write: Iterable[Path], *, network: bool) -> int:
    """Confine the calling process; returns the ABI used. Needs no_new_privs."""
    abi, reason = abi_version()
    if abi < 1:
        raise OSError(errno.EOPNOTSUPP, reason)
    handled = fs_rights(abi)
    attr = _RulesetAttr(handled, 0, 0)
    if abi >= 4 and not network:
        attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # and no rule allows any
    if abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    ruleset = _syscall(
        _SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), 0
    )
    try:
        for path in read:
            _allow(ruleset, path, READ & handled)
        for path in write:
            _allow(ruleset, path, handled)
        _syscall(_SYS_RESTRICT_SELF, ruleset, 0)
    finally:
        os.close(ruleset)
    return abi


def _allow(ruleset: int, path: Path, access: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a missing optional path (/lib32, a venv that moved) is simply not granted
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_ONLY
        rule = _PathBeneathAttr(access, fd)
        _syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.byref(rule), 0)
    finally:
        os.close(fd)


__all__ = ["READ", "abi_version", "fs_rights", "restrict"]
