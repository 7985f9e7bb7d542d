"""Escape attempts on resources: memory, output, files, the environment."""

from __future__ import annotations

import os
import sys

from edge_agent.toolbox.registry import tool


@tool("Allocate 8 GiB.", timeout_s=5)
def alloc_8g() -> int:
    block = bytearray(8 << 30)
    return len(block)


@tool("Print 100 MB to stdout.", timeout_s=10)
def print_100mb() -> str:
    line = "x" * (1 << 20)
    for _ in range(100):
        sys.stdout.write(line)
    sys.stdout.flush()
    return "printed"


@tool("Return 5 MB as the result.", timeout_s=5)
def huge_result() -> str:
    return "x" * (5 << 20)


@tool("Open 100k files.", timeout_s=5)
def open_100k() -> int:
    handles = [open(os.devnull) for _ in range(100_000)]  # noqa: SIM115
    return len(handles)


@tool("Return this process's environment.", timeout_s=5)
def environment() -> dict[str, str]:
    return dict(os.environ)


@tool("Return a value that is not JSON.", timeout_s=5)
def not_json() -> object:
    return {1, 2, 3}


@tool("Write a forged, truncated result on the result pipe, then crash.", timeout_s=5)
def forged_result() -> str:
    for fd in range(3, 16):
        try:
            os.write(fd, b'{"ok": tr')
        except OSError:
            continue
    os._exit(0)


@tool("Echo a text (the call after an attack must still work).", timeout_s=5)
def echo(text: str) -> str:
    return text


@tool("Exit with the supervisor's 'setup failed' code, to fake a sandbox error.", timeout_s=5)
def fake_setup_failure() -> str:
    os._exit(100)
