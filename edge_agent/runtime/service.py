"""The systemd unit that keeps ``edge-agent run`` running, and its installation.

The unit runs the daemon as an unprivileged system user (``edge-agent``),
with the state in ``/var/lib/edge-agent`` (the journal), the models in
``/var/cache/edge-agent/models`` and the config in
``/etc/edge-agent/edge-agent.toml``. Everything else of the file system is
read-only to it, and it gets no capabilities.

Hardening notes, each checked against what the daemon and the tool sandbox
need:

* ``MemoryDenyWriteExecute=yes``: llama.cpp's CPU backend does not JIT, and
  ctypes callbacks work under ``PR_SET_MDWE`` (checked on Linux 6.x with
  llama-cpp-python 0.3). A CUDA build (Jetson) JIT-compiles PTX: set it to
  ``no`` in a drop-in there, with ``PrivateDevices=no``.
* ``SystemCallFilter=@system-service`` does not include ``seccomp``,
  ``landlock_*`` or the ``@mount`` calls, which the tool sandbox uses
  (its seccomp and Landlock layers, and bubblewrap inside its own user
  namespace), so they are added back. ``RestrictNamespaces`` is left unset
  for the same reason.
* ``Delegate=yes`` hands the service its cgroup subtree, so the sandbox can
  give every tool call a cgroup with ``pids.max`` and ``memory.max``.
* ``AF_NETLINK`` is allowed: bubblewrap configures the loopback device of a
  tool's network namespace over netlink.

systemd is not running in CI containers: the tests check the unit text, run
``systemd-analyze verify``, and start the daemon the way ``User=`` does (as
``nobody``, without capabilities). The manual check on a device::

    sudo ./install.sh --service          # or: sudo edge-agent service install
    systemctl status edge-agent          # active (running)
    ps -o user=,cmd= -C edge-agent       # edge-agent  .../edge-agent run --config ...
    curl -s 127.0.0.1:8080/healthz       # {"status":"ok"}
    systemd-analyze security edge-agent  # the exposure score, for the record
    sudo systemctl reload edge-agent     # SIGHUP: "reloaded the config and N tool(s)"
    journalctl -u edge-agent -n 20

and, as the service user, ``edge-agent doctor`` under the same restrictions
(``systemd-run --pty -p User=edge-agent -p ...``) shows which sandbox layers
(cgroup, bwrap, Landlock, seccomp) the unit leaves active.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.errors import EdgeAgentError

SERVICE = "edge-agent"
UNIT_PATH = Path("/etc/systemd/system/edge-agent.service")
CONFIG_PATH = Path("/etc/edge-agent/edge-agent.toml")
STATE_DIR = Path("/var/lib/edge-agent")
MODELS_DIR = Path("/var/cache/edge-agent/models")
_NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false")
_CONFIG_STUB = (
    "# edge-agent daemon config (the systemd service reads this file).\n"
    "# Every option with its default and bounds: edge-agent config example\n"
    "# Validate after editing: edge-agent config check /etc/edge-agent/edge-agent.toml\n"
    "# Apply: systemctl reload edge-agent (tools, config) or restart (model, host, port).\n"
)


@dataclass(frozen=True)
class UnitOptions:
    """What varies between installations; the hardening does not."""

    user: str = SERVICE
    program: tuple[str, ...] = ()  # how to start edge-agent; default: this installation
    config_path: Path = CONFIG_PATH
    models_dir: Path = MODELS_DIR
    state_dir: Path = STATE_DIR
    stop_timeout_s: int = 150  # above the daemon's drain_timeout_s (120 s by default)

    @property
    def exec_start(self) -> tuple[str, ...]:
        program = self.program or this_program()
        return (*program, "run", "--config", str(self.config_path))


def this_program() -> tuple[str, ...]:
    """The running installation's ``edge-agent`` (its venv's console script)."""
    script = Path(sys.executable).with_name("edge-agent")
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (sys.executable, "-m", "edge_agent")


def render_unit(options: UnitOptions) -> str:
    """The unit file's text (pure)."""
    return "\n".join(_unit_lines(options)) + "\n"


def _unit_lines(o: UnitOptions) -> Iterator[str]:
    yield from (
        "[Unit]",
        "Description=edge-agent: on-device agent runtime and its local API",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=exec",
        f"User={o.user}",  # no Group=: systemd takes the user's primary group
        f"ExecStart={_command(o.exec_start)}",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "KillMode=mixed",
        "KillSignal=SIGTERM",
        f"TimeoutStopSec={o.stop_timeout_s}",
        "Restart=on-failure",
        "RestartSec=5",
        f"Environment=EDGE_AGENT_STATE_DIR={o.state_dir}",
        f"Environment=EDGE_AGENT_MODELS_DIR={o.models_dir}",
        "Environment=PYTHONUNBUFFERED=1",
        "StateDirectory=edge-agent",
        "StateDirectoryMode=0700",
        "CacheDirectory=edge-agent",
        "ConfigurationDirectory=edge-agent",
        f"ReadWritePaths={o.state_dir}",
        "UMask=0077",
        "LimitCORE=0",
        "",
    )
    yield from _hardening()
    yield from ("", "[Install]", "WantedBy=multi-user.target")


def _hardening() -> Iterator[str]:
    yield from (
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "ProtectKernelTunables=yes",
        "ProtectKernelModules=yes",
        "ProtectKernelLogs=yes",
        "ProtectClock=yes",
        "ProtectHostname=yes",
        "ProtectProc=invisible",
        "RestrictRealtime=yes",
        "RestrictSUIDSGID=yes",
        "LockPersonality=yes",
        "MemoryDenyWriteExecute=yes",
        "RemoveIPC=yes",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "SystemCallArchitectures=native",
        "SystemCallFilter=@system-service @mount seccomp landlock_create_ruleset"
        " landlock_add_rule landlock_restrict_self",
        "SystemCallFilter=~@clock @cpu-emulation @debug @module @obsolete @raw-io @reboot @swap",
        "SystemCallErrorNumber=EPERM",
        "Delegate=yes",
    )


def _command(argv: Sequence[str]) -> str:
    """systemd quoting: words with spaces in double quotes."""
    return " ".join(f'"{a}"' if any(c.isspace() for c in a) else a for a in argv)


# ---------------------------------------------------------------- installation


def install(options: UnitOptions, *, unit_path: Path = UNIT_PATH) -> list[str]:
    """Create the user, seed the models, write the config stub and the unit,
    and enable the service when systemd runs. Returns what it did, in words."""
    if os.geteuid() != 0:
        raise EdgeAgentError("installing the service needs root", hint="run it with sudo")
    done = [ensure_user(options.user, options.state_dir)]
    done += seed_models(options.models_dir, options.user)
    done.append(_write_config_stub(options.config_path, options.user))
    unit_path.parent.mkdir(parents=True, exist_ok=True)
    unit_path.write_text(render_unit(options), encoding="utf-8")
    unit_path.chmod(0o644)
    done.append(f"wrote {unit_path}")
    done += _warnings(options)
    done.append(_enable(unit_path))
    return done


def ensure_user(name: str, home: Path) -> str:
    """A system user and group ``name`` with no login shell."""
    try:
        pwd.getpwnam(name)
        return f"user {name} exists"
    except KeyError:
        pass
    shell = next((s for s in _NOLOGIN if Path(s).exists()), "/bin/false")
    useradd = shutil.which("useradd")
    if useradd is None:
        raise EdgeAgentError(f"cannot create the user {name}: no useradd", hint="create it by hand")
    subprocess.run(
        [useradd, "--system", "--user-group", "--home-dir", str(home), "--no-create-home",
         "--shell", shell, "--comment", "edge-agent daemon", name],
        check=True,
    )  # fmt: skip
    return f"created the system user {name}"


def seed_models(target: Path, user: str) -> list[str]:
    """Copy the default model from this user's cache into the service's
    model folder, when it is not there yet (the service cannot read /root)."""
    from edge_agent.models import default_model_name, entry_for, models_dir

    entry = entry_for(default_model_name())
    source = models_dir() / entry.file
    if (target / entry.file).is_file() or source.parent.resolve() == target.resolve():
        return [f"models in {target}"]
    if not source.is_file():
        fetch = f"sudo -u {user} env EDGE_AGENT_MODELS_DIR={target} edge-agent models fetch"
        return [f"no model to copy: run `{fetch}`"]
    target.mkdir(parents=True, exist_ok=True)
    for item in (source, source.with_name(source.name + ".verified")):
        if item.is_file():
            shutil.copy2(item, target / item.name)  # keeps mtime: the stamp stays valid
    _chown_tree(target, user)
    return [f"copied {entry.file} to {target}"]


def _write_config_stub(path: Path, user: str) -> str:
    if path.exists():
        return f"kept {path}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_CONFIG_STUB, encoding="utf-8")
    path.chmod(0o640)
    shutil.chown(path, "root", _group_of(user))
    return f"wrote {path}"


def _group_of(user: str) -> str:
    """The user's primary group: an existing account's need not share its name
    (``nobody`` is in ``nogroup`` on Debian)."""
    return grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name


def _chown_tree(root: Path, user: str) -> None:
    group = _group_of(user)
    for path in (root, *root.rglob("*")):
        shutil.chown(path, user, group)


def _warnings(options: UnitOptions) -> list[str]:
    """Paths the service cannot reach: ProtectHome hides /home and /root."""
    hidden = (Path("/home"), Path("/root"), Path("/run/user"))
    paths = [Path(options.exec_start[0]), options.config_path, options.models_dir]
    return [
        f"warning: {p} is under {h}, hidden from the service (ProtectHome); install under /opt"
        for p in paths
        for h in hidden
        if p.is_relative_to(h)
    ]


def _enable(unit_path: Path) -> str:
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        start = f"systemctl enable --now {unit_path.stem}"
        return f"systemd is not running here: start it with `{start}` on the device"
    subprocess.run(["systemctl", "daemon-reload"], check=True)
    subprocess.run(["systemctl", "enable", "--now", unit_path.stem], check=True)
    return f"enabled and started {unit_path.stem}"


__all__ = ["UnitOptions", "ensure_user", "install", "render_unit", "seed_models", "this_program"]
