"""Escape attempts on processes: forks, signals, ptrace, namespaces, orphans."""

from __future__ import annotations

import ctypes
import os
import signal
import time

from edge_agent.toolbox.registry import tool

PTRACE_ATTACH = 16
CLONE_NEWUSER = 0x10000000
SYS_IO_URING_SETUP = 425


@tool("Fork without end.", timeout_s=2)
def fork_bomb() -> str:
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.001)


@tool("Loop forever.", timeout_s=2)
def infinite_loop() -> str:
    while True:
        pass


@tool("SIGKILL the process that started this one.", timeout_s=5)
def kill_parent() -> str:
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(0.5)
    return "parent killed"


@tool("SIGKILL another process by pid.", timeout_s=5)
def kill_pid(pid: int) -> str:
    os.kill(pid, signal.SIGKILL)
    return "killed"


@tool("SIGKILL every process this uid may signal.", timeout_s=5)
def kill_everything() -> str:
    os.kill(-1, signal.SIGKILL)
    return "killed all"


@tool("Read another process's environment from /proc.", timeout_s=5)
def read_environ(pid: int) -> str:
    with open(f"/proc/{pid}/environ", "rb") as handle:
        return handle.read().decode(errors="replace")


@tool("PTRACE_ATTACH to another process.", timeout_s=5)
def ptrace_attach(pid: int) -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.ptrace(PTRACE_ATTACH, pid, None, None) != 0:
        err = ctypes.get_errno()
        raise PermissionError(err, os.strerror(err))
    return "attached"


@tool("Create a new user namespace (the first step to mount or chroot).", timeout_s=5)
def new_user_namespace() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUSER) != 0:
        err = ctypes.get_errno()
        raise PermissionError(err, os.strerror(err))
    return "unshared"


@tool("Create an io_uring (it can reach sockets without the socket syscall).", timeout_s=5)
def io_uring() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(SYS_IO_URING_SETUP, 8, params)
    if fd < 0:
        err = ctypes.get_errno()
        raise PermissionError(err, os.strerror(err))
    return "created"


@tool("Leave a double-forked setsid process behind, running /bin/sleep.", timeout_s=5)
def setsid_orphan(seconds: str) -> str:
    ready_r, ready_w = os.pipe()
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.write(ready_w, b"x")
            os.execv("/bin/sleep", ["sleep", seconds])
        os._exit(0)
    os.read(ready_r, 1)
    time.sleep(0.2)  # the exec has happened
    return "orphan running"
