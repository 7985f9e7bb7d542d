"""Escape attempts on files outside the work folder."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from edge_agent.toolbox.registry import tool


@tool("Write a file at any path.", timeout_s=5)
def write_file(path: str, text: str = "escaped") -> str:
    Path(path).write_text(text)
    return "written"


@tool("Delete a file at any path.", timeout_s=5)
def delete_file(path: str) -> str:
    os.remove(path)
    return "deleted"


@tool("Read a file at any path.", timeout_s=5)
def read_file(path: str) -> str:
    return Path(path).read_text()


@tool("Run a shell command line.", timeout_s=5)
def shell(command: str) -> dict[str, object]:
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True, text=True, check=False)
    return {"code": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


@tool("Write 2 GB into a file in the work folder.", timeout_s=10)
def write_2gb() -> str:
    chunk = b"\0" * (1 << 20)
    with open("big.bin", "wb") as out:
        for _ in range(2048):
            out.write(chunk)
    return "wrote 2 GB"


@tool("Write and read back a file in the work folder (allowed).", timeout_s=5)
def scratch(text: str) -> dict[str, str]:
    Path("note.txt").write_text(text)
    return {"cwd": os.getcwd(), "text": Path("note.txt").read_text()}
