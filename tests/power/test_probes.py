"""Energy probes on real files: a fake sysfs tree under a temporary directory
stands in for /sys, and the CPU model reads this process's real CPU time."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil  # imported up front: the permission test drops privileges
import pytest

from edge_agent.errors import ConfigError
from edge_agent.power import (
    PROFILES,
    CpuModelProbe,
    EnergySample,
    HwmonProbe,
    RaplProbe,
    Reading,
    SysPaths,
    best_probe,
    cpu_model_name,
    detect_profile,
    measure,
)
from edge_agent.power.hwmon import open_hwmon
from edge_agent.power.rapl import open_rapl

X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"


def burn(cpu_seconds: float) -> None:
    """Spend about this much CPU time in this process."""
    end = time.process_time() + cpu_seconds
    x = 0
    while time.process_time() < end:
        x += 1


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def fake_paths(root: Path, *, board: str = "", cpuinfo: str = X86_CPUINFO) -> SysPaths:
    """A sysfs/procfs stand-in; sensors are added by each test."""
    (root / "powercap").mkdir(parents=True, exist_ok=True)
    (root / "hwmon").mkdir(parents=True, exist_ok=True)
    model = root / "device-tree-model"
    if board:
        model.write_bytes(board.encode() + b"\x00")
    return SysPaths(
        powercap=root / "powercap",
        hwmon=root / "hwmon",
        device_tree_model=model,
        cpuinfo=write(root / "cpuinfo", cpuinfo),
    )


def rapl_zone(powercap: Path, zone: str, name: str, energy_uj: int, range_uj: int) -> Path:
    path = powercap / zone
    write(path / "name", f"{name}\n")
    write(path / "energy_uj", f"{energy_uj}\n")
    write(path / "max_energy_range_uj", f"{range_uj}\n")
    return path / "energy_uj"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --------------------------------------------------------------------------- CPU model


def test_cpu_model_joules_grow_with_cpu_work() -> None:
    probe = CpuModelProbe(PROFILES["generic-x86"])
    with measure(probe) as less:
        burn(0.05)
    with measure(probe) as more:
        burn(0.3)
    assert less.energy is not None and more.energy is not None
    assert more.energy.joules > less.energy.joules
    assert more.energy.source == less.energy.source == "cpu-model:generic-x86"


def test_best_probe_here_records_its_source_and_grows() -> None:
    probe = best_probe()
    start = probe.sample()
    burn(0.05)
    middle = probe.sample()
    burn(0.3)
    end = probe.sample()
    less, more = EnergySample.between(start, middle), EnergySample.between(middle, end)
    assert more.joules > less.joules
    assert more.source and more.source.split(":")[0] in {"rapl", "hwmon", "cpu-model"}
    assert end.source == start.source


def test_cpu_model_counts_waited_for_children() -> None:
    with_children = CpuModelProbe(PROFILES["raspberry-pi-5"])
    own_only = CpuModelProbe(PROFILES["raspberry-pi-5"], include_children=False)
    a, b = with_children.sample(), own_only.sample()
    code = "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert with_children.sample().joules - a.joules > own_only.sample().joules - b.joules


def test_profiles_are_complete_and_named_by_their_key() -> None:
    assert {"raspberry-pi-4", "raspberry-pi-5", "jetson-orin-nano", "generic-x86"} <= set(PROFILES)
    for name, profile in PROFILES.items():
        assert profile.name == name
        assert 0 < profile.per_core_w < 20 and 0 < profile.idle_w < 50
        assert profile.basis


@pytest.mark.parametrize(
    ("board", "cpuinfo", "expected"),
    [
        ("Raspberry Pi 4 Model B Rev 1.4", "Hardware\t: BCM2835\n", "raspberry-pi-4"),
        ("Raspberry Pi 5 Model B Rev 1.0", "", "raspberry-pi-5"),
        ("NVIDIA Jetson Orin Nano Developer Kit", "", "jetson-orin-nano"),
        ("", X86_CPUINFO, "generic-x86"),
        ("", "vendor_id\t: GenuineIntel\n", "generic-x86"),
        ("Pine64 RockPro64 v2.1", "", "generic-arm"),
    ],
)
def test_detect_profile(tmp_path: Path, board: str, cpuinfo: str, expected: str) -> None:
    assert detect_profile(fake_paths(tmp_path, board=board, cpuinfo=cpuinfo)).name == expected


def test_cpu_model_name(tmp_path: Path) -> None:
    assert cpu_model_name(fake_paths(tmp_path)) == "AMD EPYC 7B13"
    board = fake_paths(tmp_path / "pi", board="Raspberry Pi 5 Model B Rev 1.0", cpuinfo="")
    assert cpu_model_name(board) == "Raspberry Pi 5 Model B Rev 1.0"


def test_profile_override_by_name(tmp_path: Path) -> None:
    probe = best_probe("cpu-model:jetson-orin-nano", paths=fake_paths(tmp_path))
    reading = probe.sample()
    assert reading.source == "cpu-model:jetson-orin-nano"
    assert reading.note == ""


@pytest.mark.parametrize("prefer", ["watts", "cpu-model:toaster", "rapl:package-0"])
def test_unknown_preference_is_a_config_error(tmp_path: Path, prefer: str) -> None:
    with pytest.raises(ConfigError):
        best_probe(prefer, paths=fake_paths(tmp_path))


# --------------------------------------------------------------------------- fallback


def test_no_sensors_falls_back_to_the_detected_profile_with_a_note(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path, board="Raspberry Pi 5 Model B Rev 1.0", cpuinfo="")
    reading = best_probe(paths=paths).sample()
    assert reading.source == "cpu-model:raspberry-pi-5"
    assert reading.note.startswith("rapl unavailable: no intel-rapl zones")
    assert "hwmon unavailable: no power or energy inputs" in reading.note
    assert reading.note.endswith("; using cpu-model:raspberry-pi-5")


def test_missing_sysfs_roots_fall_back(tmp_path: Path) -> None:
    paths = SysPaths(
        powercap=tmp_path / "nope",
        hwmon=tmp_path / "nope",
        device_tree_model=tmp_path / "nope",
        cpuinfo=write(tmp_path / "cpuinfo", X86_CPUINFO),
    )
    for prefer in (None, "rapl", "hwmon"):
        reading = best_probe(prefer, paths=paths).sample()
        assert reading.source == "cpu-model:generic-x86"
        assert reading.note.endswith("using cpu-model:generic-x86")


def test_zone_without_energy_file_is_unreadable(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    rapl_zone(paths.powercap, "intel-rapl:0", "package-0", 1, 10).unlink()
    reading = best_probe("rapl", paths=paths).sample()
    assert reading.note == (
        "rapl unreadable: no such file or directory (energy_uj); using cpu-model:generic-x86"
    )


@contextmanager
def world_readable_dir() -> Iterator[Path]:
    """A temporary directory an unprivileged user may enter (pytest's tmp_path
    lives under a root-only directory when tests run as root)."""
    with tempfile.TemporaryDirectory() as name:
        os.chmod(name, 0o755)
        yield Path(name)


@contextmanager
def unprivileged() -> Iterator[None]:
    """Run the block as a user that mode 0400 root files refuse (as sysfs
    refuses energy_uj to non-root users since Linux 5.10)."""
    if os.geteuid() != 0:
        yield
        return
    try:
        os.seteuid(65534)
    except OSError as exc:
        pytest.skip(f"cannot drop privileges here: {exc}")
    try:
        yield
    finally:
        os.seteuid(0)


def test_permission_denied_falls_back_with_a_note() -> None:
    with world_readable_dir() as root:
        paths = fake_paths(root)
        energy = rapl_zone(paths.powercap, "intel-rapl:0", "package-0", 5_000_000, 10**9)
        energy.chmod(0o400 if os.geteuid() == 0 else 0)
        assert stat.S_IMODE(energy.stat().st_mode) & 0o004 == 0
        with unprivileged():
            probe = best_probe("rapl", paths=paths)
        reading = probe.sample()
    assert isinstance(probe, CpuModelProbe)
    assert reading.source == "cpu-model:generic-x86"
    assert reading.note == "rapl unreadable: permission denied; using cpu-model:generic-x86"
    assert psutil.Process().uids().effective == os.geteuid()


# --------------------------------------------------------------------------- RAPL


def test_rapl_reads_package_zones_only(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    energy = rapl_zone(paths.powercap, "intel-rapl:0", "package-0", 1_000_000, 262_143_328_850)
    rapl_zone(paths.powercap, "intel-rapl:0:0", "core", 7_000_000, 262_143_328_850)
    rapl_zone(paths.powercap, "intel-rapl:1", "psys", 9_000_000, 262_143_328_850)
    probe = best_probe(paths=paths)
    assert isinstance(probe, RaplProbe)
    first = probe.sample()
    energy.write_text("3500000\n")
    second = probe.sample()
    sample = EnergySample.between(first, second)
    assert sample.joules == pytest.approx(2.5)
    assert sample.source == "rapl:package-0"
    assert sample.note == ""


def test_rapl_handles_wraparound(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    energy = rapl_zone(paths.powercap, "intel-rapl:0", "package-0", 9_000_000, 10_000_000)
    probe = open_rapl(paths.powercap)
    assert isinstance(probe, RaplProbe)
    start = probe.sample()
    energy.write_text("500000\n")  # wrapped: 1.0 J to the top, then 0.5 J
    after_wrap = probe.sample()
    energy.write_text("2500000\n")
    later = probe.sample()
    assert after_wrap.joules - start.joules == pytest.approx(1.5)
    assert later.joules - after_wrap.joules == pytest.approx(2.0)


def test_rapl_sums_packages(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    e0 = rapl_zone(paths.powercap, "intel-rapl:0", "package-0", 0, 10**9)
    e1 = rapl_zone(paths.powercap, "intel-rapl:1", "package-1", 0, 10**9)
    probe = open_rapl(paths.powercap)
    assert isinstance(probe, RaplProbe)
    start = probe.sample()
    e0.write_text("1000000\n")
    e1.write_text("2000000\n")
    end = probe.sample()
    assert end.joules - start.joules == pytest.approx(3.0)
    assert end.source == "rapl:package-0+package-1"


# --------------------------------------------------------------------------- hwmon


def hwmon_chip(hwmon: Path, index: int, name: str, files: dict[str, str]) -> Path:
    chip = hwmon / f"hwmon{index}"
    write(chip / "name", f"{name}\n")
    for file, text in files.items():
        write(chip / file, f"{text}\n")
    return chip


def test_hwmon_power_input_is_integrated(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    chip = hwmon_chip(paths.hwmon, 0, "ina226", {"power1_input": "2000000"})  # 2 W
    clock = FakeClock()
    probe = open_hwmon(paths.hwmon, interval_s=None, clock=clock)
    assert isinstance(probe, HwmonProbe)
    first = probe.sample()
    clock.now = 1.0
    second = probe.sample()
    (chip / "power1_input").write_text("4000000\n")  # 4 W by t = 3 s
    clock.now = 3.0
    third = probe.sample()
    assert second.joules - first.joules == pytest.approx(2.0)
    assert third.joules - second.joules == pytest.approx(6.0)  # trapezoid: (2 + 4) / 2 × 2 s
    assert third.source == "hwmon:ina226"


def test_jetson_ina3221_uses_the_module_input_rail(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path, board="NVIDIA Jetson Orin Nano Developer Kit")
    hwmon_chip(paths.hwmon, 0, "cpu_thermal", {"temp1_input": "45000"})
    hwmon_chip(
        paths.hwmon,
        1,
        "ina3221",
        {
            "in1_label": "VDD_IN", "in1_input": "5000", "curr1_input": "1200",  # 6 W
            "in2_label": "VDD_CPU_GPU_CV", "in2_input": "5000", "curr2_input": "400",
            "in3_label": "VDD_SOC", "in3_input": "5000", "curr3_input": "300",
            "in4_input": "1200", "in7_input": "3000", "in7_label": "sum of shunts",
            "curr4_input": "1900",
        },
    )  # fmt: skip
    clock = FakeClock()
    probe = open_hwmon(paths.hwmon, interval_s=None, clock=clock)
    assert isinstance(probe, HwmonProbe)
    assert [c.label for c in probe.chip.channels] == ["VDD_IN"]
    start = probe.sample()
    clock.now = 2.0
    assert probe.sample().joules - start.joules == pytest.approx(12.0)
    assert start.source == "hwmon:ina3221"


def test_ina3221_without_a_total_rail_sums_connected_channels(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    hwmon_chip(
        paths.hwmon,
        0,
        "ina3221",
        {
            "in1_label": "VDD_GPU_SOC", "in1_input": "5000", "curr1_input": "200",  # 1 W
            "in2_label": "VDD_CPU_CV", "in2_input": "5000", "curr2_input": "400",  # 2 W
            "in3_label": "NC", "in3_input": "0", "curr3_input": "0",
        },
    )  # fmt: skip
    clock = FakeClock()
    probe = open_hwmon(paths.hwmon, interval_s=None, clock=clock)
    assert isinstance(probe, HwmonProbe)
    assert [c.label for c in probe.chip.channels] == ["VDD_GPU_SOC", "VDD_CPU_CV"]
    start = probe.sample()
    clock.now = 1.0
    assert probe.sample().joules - start.joules == pytest.approx(3.0)


def test_hwmon_energy_counter_prefers_the_socket_total(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    hwmon_chip(paths.hwmon, 2, "ina226", {"power1_input": "1000000"})
    chip = hwmon_chip(
        paths.hwmon,
        10,
        "amd_energy",
        {
            "energy1_label": "Ecore000", "energy1_input": "100",
            "energy2_label": "Esocket0", "energy2_input": "1000000",
        },
    )  # fmt: skip
    probe = open_hwmon(paths.hwmon, interval_s=None)
    assert isinstance(probe, HwmonProbe)
    assert probe.chip.name == "amd_energy"
    start = probe.sample()
    (chip / "energy2_input").write_text("4000000\n")
    (chip / "energy1_input").write_text("999999999\n")  # a core, inside the socket
    end = probe.sample()
    assert end.joules - start.joules == pytest.approx(3.0)


def test_gpu_chips_are_not_board_power(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    hwmon_chip(paths.hwmon, 0, "amdgpu", {"power1_input": "50000000"})
    reading = best_probe("hwmon", paths=paths).sample()
    assert reading.source == "cpu-model:generic-x86"
    assert reading.note.startswith("hwmon unavailable: no power or energy inputs")


def test_hwmon_background_integrator_runs_and_stops(tmp_path: Path) -> None:
    paths = fake_paths(tmp_path)
    hwmon_chip(paths.hwmon, 0, "ina219", {"power1_input": "1000000"})
    probe = open_hwmon(paths.hwmon, interval_s=0.01)
    assert isinstance(probe, HwmonProbe)
    try:
        start = probe.sample()
        time.sleep(0.1)
        end = probe.sample()
    finally:
        probe.close()
    assert end.joules > start.joules
    assert probe._thread is None


# --------------------------------------------------------------------------- plain data


def test_energy_sample_between_and_watts() -> None:
    a = Reading(10.0, 100.0, "rapl:package-0")
    b = Reading(16.0, 102.0, "rapl:package-0", "n")
    sample = EnergySample.between(a, b)
    assert sample == EnergySample(6.0, 2.0, "rapl:package-0", "n")
    assert sample.watts == pytest.approx(3.0)
    assert EnergySample(0.0, 0.0, "x").watts == 0.0


def test_measure_fills_the_span_even_when_the_block_fails() -> None:
    probe = CpuModelProbe(PROFILES["generic-arm"])
    with pytest.raises(RuntimeError), measure(probe) as span:
        raise RuntimeError("boom")
    assert span.energy is not None and span.energy.source == "cpu-model:generic-arm"
