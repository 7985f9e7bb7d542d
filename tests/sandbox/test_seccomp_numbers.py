"""The seccomp filter's syscall numbers, checked against the kernel's own
headers (``linux-libc-dev``, installed by ``install.sh --dev``).

The filter's table is written by hand for x86_64 and aarch64; a wrong
number would deny a harmless call and let the dangerous one through, and
no behavioural test notices unless it happens to call that syscall.
aarch64 uses the kernel's generic table (``asm-generic/unistd.h``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.sandbox.seccomp import _SYSCALLS

INCLUDE = Path("/usr/include")
_DEFINE = re.compile(r"^#define __NR(?:3264)?_(\w+)\s+(\d+)\s*$", re.MULTILINE)


def header_numbers(header: Path) -> dict[str, int]:
    return {name: int(number) for name, number in _DEFINE.findall(header.read_text())}


def x86_64_header() -> Path:
    found = sorted(INCLUDE.glob("*/asm/unistd_64.h")) + sorted(INCLUDE.glob("asm/unistd_64.h"))
    if not found:
        pytest.fail("no asm/unistd_64.h: install linux-libc-dev (./install.sh --dev does)")
    return found[0]


def generic_header() -> Path:
    header = INCLUDE / "asm-generic" / "unistd.h"
    if not header.exists():
        pytest.fail("no asm-generic/unistd.h: install linux-libc-dev (./install.sh --dev does)")
    return header


@pytest.mark.parametrize(
    ("arch", "header"), [("x86_64", x86_64_header), ("aarch64", generic_header)]
)
def test_syscall_numbers_match_the_kernel_headers(arch: str, header: object) -> None:
    assert callable(header)
    kernel = header_numbers(header())
    ours = _SYSCALLS[arch]
    missing = sorted(name for name in ours if name not in kernel)
    assert not missing, f"{arch}: not in the kernel headers: {missing}"
    wrong = {name: (n, kernel[name]) for name, n in ours.items() if kernel[name] != n}
    assert not wrong, f"{arch}: (ours, kernel's) differ: {wrong}"
