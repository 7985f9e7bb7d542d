"""The systemd unit (systemd does not run in CI containers): its text,
``systemd-analyze verify``, and the daemon started the way the unit starts
it — as an unprivileged user — answering a request."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

from edge_agent.models import entry_for, models_dir
from edge_agent.runtime.service import UnitOptions, install, render_unit
from tests.conftest import run_cli
from tests.daemon.conftest import SMOL, DaemonProcess, chat_body, free_port
from tests.sandbox.conftest import Runner, _nobody_runner

HARDENING = (
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "StateDirectory=edge-agent",
    "CacheDirectory=edge-agent",
    "ReadWritePaths=/var/lib/edge-agent",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "LockPersonality=yes",
    "MemoryDenyWriteExecute=yes",
    "CapabilityBoundingSet=\n",
    "SystemCallFilter=@system-service",
    "Environment=EDGE_AGENT_MODELS_DIR=/var/cache/edge-agent/models",
    "ExecReload=/bin/kill -HUP $MAINPID",
)


def test_unit_runs_edge_agent_run_as_a_non_root_user_with_hardening() -> None:
    unit = render_unit(UnitOptions())
    assert "User=edge-agent\n" in unit
    assert "User=root" not in unit and "Group=" not in unit  # the user's own primary group
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith(" run --config /etc/edge-agent/edge-agent.toml")
    for directive in HARDENING:
        assert directive in unit, directive
    # the tool sandbox's own layers must stay possible under the filter
    assert "seccomp landlock_create_ruleset landlock_add_rule landlock_restrict_self" in unit
    assert "RestrictNamespaces" not in unit


def test_service_install_print_matches_and_refuses_root() -> None:
    proc = run_cli("service", "install", "--print", "--user", "agent", timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == render_unit(UnitOptions(user="agent"))
    proc = run_cli("service", "install", "--print", "--user", "root", timeout=60)
    assert proc.returncode == 1 and "must not run as root" in proc.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "edge-agent.service"
    unit.write_text(render_unit(UnitOptions()))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # not one warning: every directive is known and parses
    bad = tmp_path / "bad.service"
    bad.write_text(render_unit(UnitOptions()).replace("ProtectHome=yes", "ProtectHome=maybe"))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, check=False
    )
    assert "ignoring: maybe" in proc.stderr  # so verify does read (and judge) our directives


@pytest.mark.skipif(os.geteuid() != 0, reason="installing the service needs root")
def test_install_into_a_temp_root_for_an_existing_user(tmp_path: Path) -> None:
    """`edge-agent service install` (and so `install.sh --service`) minus the
    fixed paths: the user exists already, systemd is not running here."""
    options = UnitOptions(
        user="nobody",  # an existing account whose group is not named like it
        config_path=tmp_path / "etc" / "edge-agent.toml",
        models_dir=models_dir(),  # the models are there already: nothing to copy
        state_dir=tmp_path / "state",
    )
    unit_path = tmp_path / "systemd" / "edge-agent.service"
    done = install(options, unit_path=unit_path)
    assert done[0] == "user nobody exists"
    assert f"wrote {unit_path}" in done
    assert unit_path.read_text() == render_unit(options)
    assert stat.S_IMODE(unit_path.stat().st_mode) == 0o644
    config = options.config_path.stat()
    assert stat.S_IMODE(config.st_mode) == 0o640
    assert (config.st_uid, config.st_gid) == (0, pwd.getpwnam("nobody").pw_gid)
    assert "edge-agent config check" in options.config_path.read_text()
    again = install(options, unit_path=unit_path)  # idempotent: the config is kept
    assert f"kept {options.config_path}" in again
    if shutil.which("systemd-analyze"):
        proc = subprocess.run(
            ["systemd-analyze", "verify", str(unit_path)],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr


def _nobody() -> Runner | None:
    found = _nobody_runner()
    return found if isinstance(found, Runner) else None


def _shared_models(root: Path) -> Path:
    """The test model where the service user can read it (hard links: no copy)."""
    entry = entry_for(SMOL)
    folder = root / "models"
    folder.mkdir()
    for name in (entry.file, entry.file + ".verified"):
        source = models_dir() / name
        if source.is_file():
            try:
                os.link(source, folder / name)
            except OSError:  # another file system
                shutil.copy2(source, folder / name)
    return folder


@pytest.mark.model
@pytest.mark.slow
@pytest.mark.skipif(_nobody() is None, reason="needs root, setpriv and a Python nobody can run")
def test_daemon_serves_and_runs_tools_as_an_unprivileged_user(
    tmp_path: Path, models_ready: Any
) -> None:
    """What User= does: the same command under another uid, without capabilities,
    in systemd's plain environment and without a config file; a tool runs in the
    sandbox. A private folder on the import path (like a venv under a 0700 home)
    must not stop the sandbox: the service user cannot even stat it."""
    nobody = _nobody()
    assert nobody is not None and nobody.uid is not None
    # pytest's tmp_path sits in a 0700 folder; the service user gets its own
    root = Path(tempfile.mkdtemp(prefix="edge-agent-service-"))
    root.chmod(0o755)
    state = root / "state"
    state.mkdir()
    os.chown(state, nobody.uid, nobody.uid)
    private = tmp_path / "private"
    (private / "lib").mkdir(parents=True)
    private.chmod(0o700)
    port = free_port()
    env = nobody.env(
        PYTHONPATH=os.pathsep.join([*nobody.pythonpath, str(private / "lib")]),
        PYTHONUNBUFFERED="1",
        EDGE_AGENT_STATE_DIR=str(state),
        HOME=str(state),
        EDGE_AGENT_MODELS_DIR=str(_shared_models(root)),
        EDGE_AGENT_MODEL__NAME=SMOL,
        EDGE_AGENT_MODEL__N_THREADS="2",
        EDGE_AGENT_MODEL__MAX_TOKENS="96",
    )
    log_path = tmp_path / "daemon.log"
    command = [
        *nobody.prefix, nobody.python, "-m", "edge_agent", "run", "--port", str(port),
    ]  # fmt: skip
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=root
    )  # fmt: skip
    daemon = DaemonProcess(proc, port, state, log_path, None, log_file)
    try:
        daemon.wait_healthy()
        assert psutil_uids(proc.pid) == nobody.uid
        # read_sensor's arguments are enums: the 135M model cannot write an
        # invalid call (with calculate it once wrote a string that never closed)
        choice = {"type": "function", "function": {"name": "read_sensor"}}
        body = chat_body(
            "What is the temperature in the kitchen?",
            x_edge_agent_tools=["read_sensor"],
            tool_choice=choice,
        )
        with daemon.client() as client:
            response = client.post(
                "/v1/chat/completions", json=body, headers={"x-edge-agent-execute": "true"}
            )
        assert response.status_code == 200, response.text + daemon.log()
        steps = response.json()["x_edge_agent"]["steps"]
        assert steps and steps[0]["name"] == "read_sensor", steps
        # The sandbox ran the tool, with its state folder, as the service user:
        # a reading came back. A sandbox that cannot start fails the step.
        step = steps[0]
        assert step["status"] == "done", (steps, daemon.log())
        assert isinstance(step["result"]["value"], int | float | bool | str), steps
    finally:
        code = daemon.stop(signal.SIGTERM)
        journal = state / "journal.db"
        owner = journal.stat().st_uid if journal.exists() else None
        shutil.rmtree(root)
    assert code == 0, daemon.log()
    assert owner == nobody.uid


def psutil_uids(pid: int) -> int:
    import psutil

    return int(psutil.Process(pid).uids().effective)
