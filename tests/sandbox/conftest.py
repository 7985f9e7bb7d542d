"""Fixtures for the sandbox tests: the CLI as a real subprocess, run as the
current user (root in CI) and as ``nobody``, and a check that no sandbox
process outlives its test."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

import edge_agent.cli
from edge_agent.sandbox import child
from edge_agent.sandbox.probe import world_reachable

REPO = Path(__file__).resolve().parents[2]
ESCAPE_TOOLS = Path(__file__).resolve().parent / "escape_tools"
NOBODY = 65534
SECRET = "s3cr3t-EDGE-AGENT-TEST"
OUR_MODULES = ("edge_agent.cli.tools", "edge_agent.cli.doctor")
# Until the lead lists our modules in edge_agent.cli._COMMAND_MODULES, the
# subprocess adds them itself; afterwards this is plain `python -m edge_agent`.
_SHIM = (
    "import runpy, edge_agent.cli as c;"
    f"c._COMMAND_MODULES = (*c._COMMAND_MODULES, *{OUR_MODULES!r});"
    "runpy.run_module('edge_agent', run_name='__main__')"
)


def _entry() -> list[str]:
    if all(name in edge_agent.cli._COMMAND_MODULES for name in OUR_MODULES):
        return ["-m", "edge_agent"]
    return ["-c", _SHIM]


@dataclass
class Runner:
    """Runs processes as one user: the current one, or ``nobody`` via setpriv."""

    name: str
    python: str
    pythonpath: list[str]
    uid: int | None = None  # None: the current user
    prefix: list[str] = field(default_factory=list)

    def own(self, path: Path) -> Path:
        """Give ``path`` to this user, so file permissions alone would not stop it."""
        if self.uid is not None:
            os.chown(path, self.uid, self.uid)
        return path

    def env(self, **extra: str) -> dict[str, str]:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
        env["PYTHONPATH"] = os.pathsep.join(self.pythonpath)
        return {**env, **extra}

    def popen(self, code: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [*self.prefix, self.python, "-c", code],
            env=self.env(**extra_env),
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> Completed:
        started = time.monotonic()
        done = subprocess.run(
            [*self.prefix, self.python, *_entry(), *args],
            env=self.env(**(env or {})),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        return Completed(done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def run_tool(self, name: str, args: str = "{}", **extra_env: str) -> Completed:
        command = ("tools", "run", name, "--args", args, "--tools-dir", str(ESCAPE_TOOLS))
        return self.cli(*command, env=extra_env)


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def text(self) -> str:
        return self.stdout + self.stderr


def _current_runner() -> Runner:
    name = "root" if os.geteuid() == 0 else "user"
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return Runner(name, sys.executable, [str(REPO), *inherited])


def _nobody_runner() -> Runner | str:
    """``nobody`` needs a Python and packages it can read; else a skip reason."""
    if os.geteuid() != 0:
        return "switching to nobody needs root"
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return "setpriv (util-linux) is not installed"
    prefix = [setpriv, "--reuid", str(NOBODY), "--regid", str(NOBODY), "--clear-groups",
              "--inh-caps=-all", "--bounding-set=-all", "--"]  # fmt: skip
    site = sysconfig.get_paths()["purelib"]
    if not (world_reachable(REPO / "edge_agent") and world_reachable(Path(site))):
        return f"{REPO} or {site} is not readable by other users"
    python = Path(sys.executable)
    if not world_reachable(python.resolve()):  # e.g. pyenv under /root: the system Python
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        python = Path("/usr/bin", version)
        if not world_reachable(python):
            return f"no {version} that nobody may run ({sys.executable} is private)"
    return Runner("nobody", str(python), [str(REPO), site], NOBODY, prefix)


@pytest.fixture(params=["self", "nobody"])
def runner(request: pytest.FixtureRequest) -> Runner:
    if request.param == "self":
        return _current_runner()
    found = _nobody_runner()
    if not isinstance(found, Runner):
        pytest.skip(f"cannot run as nobody: {found}")
    return found


@pytest.fixture
def shared_tmp(tmp_path: Path) -> Path:
    """A tmp folder every user may enter (pytest's own is 0700)."""
    for folder in [tmp_path, *tmp_path.parents]:
        if folder == Path(os.sep) or folder.stat().st_uid != os.geteuid():
            break
        folder.chmod(folder.stat().st_mode | 0o711)
    return tmp_path


def sandbox_processes(since: float) -> list[psutil.Process]:
    """Processes of the sandbox (by the marker in their command line) started after ``since``."""
    found = []
    for proc in psutil.process_iter(["cmdline", "create_time"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["create_time"] >= since - 1 and child.MARKER in cmdline:
            found.append(proc)
    return found


@pytest.fixture(autouse=True)
def no_stray_processes() -> Iterator[None]:
    """Every test must leave no sandbox process behind."""
    since = time.time()
    yield
    deadline = time.monotonic() + 3
    while (left := sandbox_processes(since)) and time.monotonic() < deadline:
        time.sleep(0.05)
    for proc in left:
        proc.kill()
    assert not left, f"sandbox processes outlived the test: {[p.info for p in left]}"
