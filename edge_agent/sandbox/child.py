"""The sandbox child: a supervisor, and the tool process it forks.

:class:`~edge_agent.sandbox.process.ProcessSandbox` starts this module as
``python -I -B -c BOOT edge-agent-sandbox RESULT_FD IMPORT_PATH...``
(inside bwrap where available). Nothing untrusted runs until every layer
is in place:

1. The supervisor writes ``R`` on the result fd, then reads the setup
   (JSON) from stdin until EOF; the parent sends it once the process is in
   its cgroup.
2. The supervisor drops to the call's uid (when started as root), sets the
   rlimits, ``no_new_privs``, the seccomp filter, and becomes a *child
   subreaper*, so every orphan the tool leaves is re-parented to it.
3. It forks the tool process, which adds Landlock (outside the
   supervisor's domain, so with Landlock ABI 6 the tool cannot signal it),
   imports the tool module, validates the arguments, calls the function
   and writes ``{"ok": ...}`` JSON on the result fd.
4. The supervisor enforces the wall timeout, kills every process still
   left below it, and exits with a status the parent decodes.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import resource
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn, TypedDict

from pydantic import BaseModel

from edge_agent.sandbox import landlock, seccomp
from edge_agent.toolbox import registry

MARKER = "edge-agent-sandbox"
READY = b"R"
EXIT_SETUP = 100
EXIT_TIMEOUT = 101
EXIT_CPU = 102
EXIT_SIGNAL = 128  # + the signal that ended the tool process
_MAX_ERROR = 2000
BOOT = (
    "import sys;sys.path[:0]=sys.argv[3:];"
    "from edge_agent.sandbox.child import main;sys.exit(main())"
)


class Setup(TypedDict):
    """What the parent sends on stdin."""

    module_file: str
    function: str
    arguments: dict[str, Any]
    timeout_s: float
    cpu_s: int
    rlimits: dict[str, int]
    uid: int | None
    workdir: str
    network: bool
    unix_sockets: bool
    seccomp: bool
    landlock: bool
    read: list[str]
    write: list[str]


def main() -> int:
    result_fd = int(sys.argv[2])
    os.write(result_fd, READY)
    _warm_up()  # while the parent moves us into the cgroup
    setup: Setup = json.loads(sys.stdin.buffer.read())
    try:
        _confine_supervisor(setup)
    except OSError as exc:
        print(f"edge-agent sandbox: supervisor setup failed: {exc}", file=sys.stderr)
        return EXIT_SETUP
    armed_r, armed_w = os.pipe()  # the tool process says "confined" before any tool code
    pid = os.fork()
    if pid == 0:
        os.close(armed_r)
        _tool_process(setup, result_fd, armed_w)
    os.close(result_fd)
    os.close(armed_w)
    code = _supervise(pid, setup)
    if os.read(armed_r, 1) != b"1":  # it died before Landlock was in place
        return EXIT_SETUP
    return code


def _sample(number: int, text: str = "") -> None:
    """A stand-in tool for :func:`_warm_up`."""


def _warm_up() -> None:
    """pydantic's first model costs ~40 ms of lazy imports; pay it before the clock runs."""
    registry.args_model_for(_sample, "sample").model_validate({"number": 1})


def _confine_supervisor(setup: Setup) -> None:
    seccomp.prctl(seccomp.PR_SET_PDEATHSIG, signal.SIGKILL)
    os.umask(0o077)
    if setup["uid"] is not None:
        os.setgroups([])
        os.setgid(setup["uid"])
        os.setuid(setup["uid"])
    os.chdir(setup["workdir"])
    os.environ.pop("PWD", None)  # bwrap's; the environment is what the parent passed
    for name, value in setup["rlimits"].items():
        _set_rlimit(getattr(resource, name), value)
    seccomp.prctl(seccomp.PR_SET_CHILD_SUBREAPER, 1)
    seccomp.set_no_new_privs()
    if setup["seccomp"]:
        seccomp.install(network=setup["network"], unix=setup["unix_sockets"])


def _set_rlimit(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    soft = value
    if which == resource.RLIMIT_CPU:  # SIGXCPU at the soft limit, SIGKILL a second later
        hard = value + 1 if hard == resource.RLIM_INFINITY else min(value + 1, hard)
    else:
        hard = value
    resource.setrlimit(which, (soft, hard))


def _tool_process(setup: Setup, result_fd: int, armed_fd: int) -> NoReturn:
    try:
        seccomp.prctl(seccomp.PR_SET_PDEATHSIG, signal.SIGKILL)
        if setup["landlock"]:
            read = [Path(p) for p in setup["read"]]
            write = [Path(p) for p in setup["write"]]
            landlock.restrict(read, write, network=setup["network"])
    except OSError as exc:
        print(f"edge-agent sandbox: landlock setup failed: {exc}", file=sys.stderr, flush=True)
        os._exit(1)
    os.write(armed_fd, b"1")
    os.close(armed_fd)  # so no tool can forge (or hide) a setup failure
    data = _encode(_call(setup))
    code = 0
    try:
        while data:
            data = data[os.write(result_fd, data) :]
    except OSError:
        code = 3
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _call(setup: Setup) -> dict[str, Any]:
    """Import, validate, call: every failure becomes a structured result."""
    try:
        module = registry.load_module(Path(setup["module_file"]))
        func = getattr(module, setup["function"])
        value = func(**_arguments(func, setup["arguments"]))
        if inspect.iscoroutine(value):
            import asyncio  # only for async tools: it costs 25 ms to import

            value = asyncio.run(value)
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        return {"ok": True, "value": value}
    except BaseException as exc:  # SystemExit too: the tool's failure is data
        return _failure(type(exc).__name__, str(exc))


def _arguments(func: Any, arguments: dict[str, Any]) -> dict[str, Any]:
    """Typed values for a decorated tool (as the registry validated them)."""
    policy = getattr(func, registry._MARK, None)  # set by @tool
    if not isinstance(policy, registry.ToolPolicy):
        return arguments
    model = registry.args_model_for(func, policy.name or func.__name__)
    validated = model.model_validate(arguments)
    return {name: getattr(validated, name) for name in type(validated).model_fields}


def _failure(error_type: str, message: str) -> dict[str, Any]:
    if len(message) > _MAX_ERROR:
        message = message[:_MAX_ERROR] + " [...]"
    return {"ok": False, "error_type": error_type, "error": message}


def _encode(payload: dict[str, Any]) -> bytes:
    try:
        return json.dumps(payload, allow_nan=False).encode()
    except (TypeError, ValueError, RecursionError) as exc:
        failure = _failure("TypeError", f"the tool returned a value that is not JSON: {exc}")
        return json.dumps(failure).encode()
    except MemoryError:
        return json.dumps(_failure("MemoryError", "the result does not fit in memory")).encode()


def _supervise(pid: int, setup: Setup) -> int:
    status, cpu_used = _wait(pid, setup["timeout_s"])
    timed_out = status is None
    if status is None:
        os.kill(pid, signal.SIGKILL)
        _, status, _ = os.wait4(pid, 0)
    _kill_descendants()
    if timed_out:
        return EXIT_TIMEOUT
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_used >= setup["cpu_s"]):
            return EXIT_CPU
        return EXIT_SIGNAL + sig
    return min(os.waitstatus_to_exitcode(status), EXIT_SETUP - 1)


def _wait(pid: int, timeout_s: float) -> tuple[int | None, float]:
    """The tool's wait status and CPU seconds, or ``None`` on timeout."""
    deadline = time.monotonic() + timeout_s
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            if pidfd is not None:
                os.close(pidfd)
            return status, usage.ru_utime + usage.ru_stime
        left = deadline - time.monotonic()
        if left <= 0:
            if pidfd is not None:
                os.close(pidfd)
            return None, 0.0
        if pidfd is not None:
            select.select([pidfd], [], [], left)
        else:
            time.sleep(min(left, 0.01))


def _kill_descendants(limit_s: float = 2.0) -> None:
    """SIGKILL everything below us until nothing is left (orphans come to us)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not _reap():
            return
        for pid in _descendants(os.getpid()):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.001)


def _reap() -> bool:
    """Collect dead children; False once we have none at all."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found
