"""install.sh's platform checks, run for machines we do not have: the
EDGE_AGENT_TEST_* variables stand in for ``uname -m``, glibc, the Python's
pointer width and the device tree (``--platform`` stops before installing)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO


def install_platform(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_AGENT_")}
    clean.pop("CMAKE_ARGS", None)
    return subprocess.run(
        ["bash", str(REPO / "install.sh"), "--platform"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "EDGE_AGENT_TEST_SYSROOT": str(tmp_path), **env},
        check=False,
    )


def jetson(root: Path, model: str) -> None:
    (root / "proc" / "device-tree").mkdir(parents=True)
    (root / "proc" / "device-tree" / "model").write_bytes(model.encode() + b"\0")


def test_this_machine_is_supported(tmp_path: Path) -> None:
    done = install_platform(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "CMAKE_ARGS=-DGGML_NATIVE=ON" in done.stdout


@pytest.mark.parametrize("machine", ["armv7l", "armv6l"])
def test_32_bit_arm_is_refused_in_one_line(tmp_path: Path, machine: str) -> None:
    done = install_platform(tmp_path, EDGE_AGENT_TEST_MACHINE=machine)
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1
    assert "64-bit Raspberry Pi OS" in done.stderr and machine in done.stderr


def test_a_32_bit_userland_on_a_64_bit_kernel_is_refused(tmp_path: Path) -> None:
    done = install_platform(
        tmp_path, EDGE_AGENT_TEST_MACHINE="aarch64", EDGE_AGENT_TEST_PYTHON_BITS="32"
    )
    assert done.returncode == 1 and "64-bit Raspberry Pi OS" in done.stderr


@pytest.mark.parametrize(("glibc", "ok"), [("2.28", False), ("", False), ("2.31", True)])
def test_aarch64_needs_glibc_2_31(tmp_path: Path, glibc: str, ok: bool) -> None:
    done = install_platform(
        tmp_path,
        EDGE_AGENT_TEST_MACHINE="aarch64",
        EDGE_AGENT_TEST_GLIBC=glibc,
        EDGE_AGENT_TEST_PYTHON_BITS="64",
    )
    assert (done.returncode == 0) is ok, done.stderr
    if not ok:
        assert "glibc >= 2.31" in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("model", "arch"),
    [
        ("NVIDIA Jetson AGX Orin Developer Kit", "87"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "87"),
        ("NVIDIA Jetson Xavier NX Developer Kit", "72"),
        ("NVIDIA Jetson Nano Developer Kit", "53"),
    ],
)
def test_cuda_on_a_jetson_sets_its_architecture(tmp_path: Path, model: str, arch: str) -> None:
    jetson(tmp_path, model)
    done = install_platform(
        tmp_path,
        EDGE_AGENT_CUDA="1",
        EDGE_AGENT_TEST_MACHINE="aarch64",
        EDGE_AGENT_TEST_GLIBC="2.35",
        EDGE_AGENT_TEST_PYTHON_BITS="64",
    )
    assert done.returncode == 0, done.stderr
    assert f"-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES={arch}" in done.stdout


def test_a_jetson_without_cuda_is_told_how(tmp_path: Path) -> None:
    jetson(tmp_path, "NVIDIA Jetson AGX Orin")
    done = install_platform(
        tmp_path,
        EDGE_AGENT_TEST_MACHINE="aarch64",
        EDGE_AGENT_TEST_GLIBC="2.35",
        EDGE_AGENT_TEST_PYTHON_BITS="64",
    )
    assert done.returncode == 0
    assert "GGML_CUDA" not in done.stdout and "EDGE_AGENT_CUDA=1" in done.stderr


def test_cuda_off_a_jetson_leaves_the_architecture_to_cmake(tmp_path: Path) -> None:
    done = install_platform(tmp_path, EDGE_AGENT_CUDA="1")
    assert "-DGGML_CUDA=on" in done.stdout and "CUDA_ARCHITECTURES" not in done.stdout
