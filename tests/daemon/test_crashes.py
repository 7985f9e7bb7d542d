"""The crash trace tells a daemon that died of a fatal signal of its own
from one killed from outside: real child processes that abort, segfault or
get SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge_agent.runtime.crashes import CrashTrace

CHILD = textwrap.dedent(
    """
    import faulthandler, os, signal, sys, time
    from pathlib import Path
    from edge_agent.runtime.crashes import CrashTrace
    CrashTrace(Path(sys.argv[1])).arm()
    how = sys.argv[2]
    if how == "abort":
        os.abort()
    if how == "segfault":
        faulthandler._sigsegv()
    if how == "clean":
        sys.exit(0)
    print("ready", flush=True)
    time.sleep(60)
    """
)


def run_child(trace: Path, how: str) -> int:
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(trace), how], stdout=subprocess.PIPE, text=True
    ) as proc:
        if how == "kill":
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            proc.send_signal(signal.SIGKILL)
        return proc.wait(timeout=30)


@pytest.mark.parametrize("how", ["abort", "segfault"])
def test_a_fatal_signal_of_its_own_leaves_a_trace(tmp_path: Path, how: str) -> None:
    trace = tmp_path / "crash.trace"
    assert run_child(trace, how) < 0
    assert CrashTrace(trace).died_of_itself()
    assert "Fatal Python error" in (tmp_path / "crash.trace.last").read_text()
    assert not CrashTrace(trace).died_of_itself()  # read once, then kept aside


@pytest.mark.parametrize("how", ["kill", "clean"])
def test_sigkill_or_a_clean_exit_leaves_none(tmp_path: Path, how: str) -> None:
    trace = tmp_path / "crash.trace"
    run_child(trace, how)
    assert trace.exists()
    assert not CrashTrace(trace).died_of_itself()


def test_no_trace_file_means_no_crash(tmp_path: Path) -> None:
    assert not CrashTrace(tmp_path / "never-written").died_of_itself()
