"""prctl helpers and a hand-written seccomp filter (classic BPF, via ctypes).

The filter is a deny list: the syscalls a tool never needs and an attacker
loves (ptrace, mount, keyrings, bpf, kexec, kernel modules, namespaces,
io_uring, ...) return ``EPERM``; everything else is allowed. With the network
off, ``socket()`` is refused for every family but ``AF_UNIX``, and for that
one too unless bubblewrap hides the host's sockets (Landlock cannot stop a
connect to a world-writable pathname socket such as the D-Bus system bus);
``socketpair()`` stays allowed.
``clone3`` returns ``ENOSYS`` so that libc falls back to ``clone``, whose
flags a classic filter can inspect (namespace flags are refused).

Only x86_64 and aarch64 are described. A syscall made through another
architecture's ABI (32-bit compat: ``int 0x80`` on x86_64) kills the
process, since our numbers mean nothing there; an x32 syscall on x86_64
(the same architecture, numbers with bit 30 set) returns ``EPERM``. A deny list stops the known
escapes, not the unknown ones: this sandbox stops accidents and common
attacks; it is not a VM.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import socket
import struct
from functools import cache

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_SECCOMP = 21
PR_SET_SECCOMP = 22
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
SECCOMP_MODE_FILTER = 2

_RET_KILL_PROCESS = 0x80000000
_RET_ERRNO = 0x00050000
_RET_ALLOW = 0x7FFF0000
# BPF opcodes: ld word abs, jeq/jset/jge immediate, ret immediate.
_LD_ABS = 0x20
_JEQ = 0x15
_JSET = 0x45
_JGE = 0x35
_RET = 0x06
# struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (low word first).
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16
_X32_BIT = 0x40000000
# CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET (NEWTIME is clone3-only).
_CLONE_NS_FLAGS = 0x7E020000

# name, x86_64 number (asm/unistd_64.h), aarch64 number (asm-generic/unistd.h).
# Every row but the last three is denied; those three are inspected.
_TABLE = """
ptrace             101 117
process_vm_readv   310 270
process_vm_writev  311 271
pidfd_getfd        438 438
kcmp               312 272
process_madvise    440 440
mount              165  40
umount2            166  39
pivot_root         155  41
chroot             161  51
fsopen             430 430
fsconfig           431 431
fsmount            432 432
move_mount         429 429
open_tree          428 428
fspick             433 433
mount_setattr      442 442
keyctl             250 219
add_key            248 217
request_key        249 218
bpf                321 280
perf_event_open    298 241
userfaultfd        323 282
kexec_load         246 104
kexec_file_load    320 294
reboot             169 142
init_module        175 105
finit_module       313 273
delete_module      176 106
unshare            272  97
setns              308 268
io_uring_setup     425 425
io_uring_enter     426 426
io_uring_register  427 427
open_by_handle_at  304 265
name_to_handle_at  303 264
swapon             167 224
swapoff            168 225
acct               163  89
quotactl           179  60
syslog             103 116
lookup_dcookie     212  18
settimeofday       164 170
clock_settime      227 112
clock_adjtime      305 266
adjtimex           159 171
personality        135  92
clone               56 220
clone3             435 435
socket              41 198
"""
_ROWS = [line.split() for line in _TABLE.strip().splitlines()]
_SYSCALLS = {
    "x86_64": {name: int(x86) for name, x86, _ in _ROWS},
    "aarch64": {name: int(arm) for name, _, arm in _ROWS},
}
_DENIED = [name for name, _, _ in _ROWS if name not in ("clone", "clone3", "socket")]
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_MACHINE_ALIASES = {"amd64": "x86_64", "arm64": "aarch64"}


@cache
def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def prctl(option: int, arg2: int = 0, arg3: int = 0) -> int:
    """``prctl(2)``; raises ``OSError`` on failure."""
    fn = libc().prctl
    fn.argtypes = (ctypes.c_int, *(ctypes.c_ulong,) * 4)
    fn.restype = ctypes.c_int
    result: int = fn(option, arg2, arg3, 0, 0)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {errno.errorcode.get(err, err)}")
    return result


def set_no_new_privs() -> None:
    """No setuid binary, file capability or LSM transition can add privileges."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def native_arch() -> str | None:
    """``"x86_64"`` or ``"aarch64"`` when the filter knows this machine, else None."""
    machine = platform.machine().lower()
    machine = _MACHINE_ALIASES.get(machine, machine)
    return machine if machine in _SYSCALLS else None


def available() -> tuple[bool, str]:
    """Whether a filter can be installed here, and why not."""
    arch = native_arch()
    if arch is None:
        return False, f"no syscall table for {platform.machine()}"
    try:
        prctl(PR_GET_SECCOMP)
    except OSError as exc:
        return False, f"kernel without seccomp ({exc.strerror})"
    return True, f"deny-list filter for {arch}"


class _Program:
    """A tiny assembler: instructions with symbolic forward jump targets."""

    def __init__(self) -> None:
        self.code: list[tuple[int, int | str, int | str, int]] = []
        self.labels: dict[str, int] = {}

    def op(self, code: int, k: int, jt: int | str = 0, jf: int | str = 0) -> None:
        self.code.append((code, jt, jf, k))

    def label(self, name: str) -> None:
        self.labels[name] = len(self.code)

    def assemble(self) -> bytes:
        out = bytearray()
        for index, (code, jt, jf, k) in enumerate(self.code):
            out += struct.pack("=HBBI", code, self._off(index, jt), self._off(index, jf), k)
        return bytes(out)

    def _off(self, index: int, target: int | str) -> int:
        if isinstance(target, int):
            return target
        offset = self.labels[target] - index - 1
        if not 0 <= offset <= 255:
            raise ValueError(f"seccomp jump to {target} out of range")
        return offset


def build_filter(arch: str, *, network: bool, unix: bool = True) -> bytes:
    """The BPF program for ``arch`` as raw ``struct sock_filter`` bytes.

    ``network=False`` refuses ``socket()`` except, with ``unix``, for AF_UNIX."""
    table = _SYSCALLS[arch]
    p = _Program()
    p.op(_LD_ABS, _OFF_ARCH)
    p.op(_JEQ, _AUDIT_ARCH[arch], jt=1)
    p.op(_RET, _RET_KILL_PROCESS)
    p.op(_LD_ABS, _OFF_NR)
    if arch == "x86_64":
        p.op(_JGE, _X32_BIT, jt="deny")
    for name in _DENIED:
        p.op(_JEQ, table[name], jt="deny")
    p.op(_JEQ, table["clone3"], jt="enosys")
    p.op(_JEQ, table["clone"], jt="clone")
    if not network:
        p.op(_JEQ, table["socket"], jt="socket")
    p.op(_RET, _RET_ALLOW)
    p.label("clone")
    p.op(_LD_ABS, _OFF_ARG0)
    p.op(_JSET, _CLONE_NS_FLAGS, jt="deny")
    p.op(_RET, _RET_ALLOW)
    if not network:
        p.label("socket")
        if unix:
            p.op(_LD_ABS, _OFF_ARG0)
            p.op(_JEQ, socket.AF_UNIX, jf="deny")
            p.op(_RET, _RET_ALLOW)
        else:
            p.op(_RET, _RET_ERRNO | errno.EPERM)
    p.label("enosys")
    p.op(_RET, _RET_ERRNO | errno.ENOSYS)
    p.label("deny")
    p.op(_RET, _RET_ERRNO | errno.EPERM)
    return p.assemble()


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


def install(*, network: bool, unix: bool = True) -> None:
    """Install the filter on the calling thread (no_new_privs must be set)."""
    arch = native_arch()
    if arch is None:
        raise OSError(errno.ENOSYS, f"no seccomp syscall table for {platform.machine()}")
    program = build_filter(arch, network=network, unix=unix)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


__all__ = ["available", "build_filter", "install", "prctl", "set_no_new_privs"]
