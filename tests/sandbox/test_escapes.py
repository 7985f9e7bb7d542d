"""The escape suite: each attack is a real tool, run through the real CLI
(``edge-agent tools run NAME --args JSON --tools-dir escape_tools``) in a
subprocess, as the current user (root in CI) and, for a representative
subset, as ``nobody`` (the systemd service's case).

Every test asserts on the harm itself (the file outside is untouched, the
listener got no connection, the victim lives, the secret is not in any
output), that the tool failed with a clear one-line error in time, and
that the next call still works. The autouse fixture in conftest checks that
no sandbox process outlives a test.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from tests.sandbox.conftest import ESCAPE_TOOLS, REPO, SECRET, Completed, Runner

pytestmark = pytest.mark.slow  # each escape attempt starts a real sandboxed process (2-4 s)

BOTH = pytest.mark.parametrize("runner", ["self", "nobody"], indirect=True)
SELF = pytest.mark.parametrize("runner", ["self"], indirect=True)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_dirs(ESCAPE_TOOLS, builtin=False)


@pytest.fixture
def still_works(registry: Registry) -> Iterator[None]:
    """After the attack, the next tool call runs normally."""
    yield
    result = ProcessSandbox().run(registry.get("echo"), {"text": "still here"})
    assert result.ok and result.value == "still here", result


def args(**values: object) -> str:
    return json.dumps(values)


def assert_failed(done: Completed, *needles: str, within: float = 20) -> None:
    """The CLI says the tool failed, on one line, in time, and names the reason."""
    assert done.returncode == 1, done.text
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent: error: tool"), done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert done.seconds < within, f"took {done.seconds:.1f} s"


@pytest.fixture
def outside(runner: Runner, shared_tmp: Path) -> Path:
    """A folder outside the sandbox that the runner's user owns (so only the sandbox stops it)."""
    folder = shared_tmp / "outside"
    folder.mkdir()
    return runner.own(folder)


# -- network -------------------------------------------------------------------


@pytest.fixture
def tcp_listener() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        yield server


def no_connection(server: socket.socket) -> bool:
    try:
        conn, _ = server.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


@BOTH
def test_tcp_connect_with_network_off(
    runner: Runner, tcp_listener: socket.socket, still_works: None
) -> None:
    done = runner.run_tool("tcp_connect", args(port=tcp_listener.getsockname()[1]))
    assert_failed(done, "PermissionError")
    assert no_connection(tcp_listener)


@SELF
def test_udp_send_with_network_off(runner: Runner, still_works: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        done = runner.run_tool("udp_send", args(port=listener.getsockname()[1]))
        assert_failed(done, "PermissionError")
        with pytest.raises(BlockingIOError):
            listener.recv(100)


@SELF
def test_network_on_when_declared(runner: Runner, tcp_listener: socket.socket) -> None:
    """The control: a tool with network=True does reach the listener."""
    done = runner.run_tool("tcp_connect_allowed", args(port=tcp_listener.getsockname()[1]))
    assert done.returncode == 0 and json.loads(done.stdout) == "connected", done.text
    tcp_listener.setblocking(True)
    tcp_listener.settimeout(5)
    conn, _ = tcp_listener.accept()
    with conn:
        assert conn.recv(100) == b"allowed"


@BOTH
def test_abstract_unix_socket(runner: Runner, still_works: None) -> None:
    name = f"edge-agent-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind("\0" + name)
        server.listen()
        server.setblocking(False)
        done = runner.run_tool("abstract_connect", args(name=name))
        assert_failed(done)
        assert no_connection(server)


@SELF
def test_unix_socket_outside(runner: Runner, shared_tmp: Path, still_works: None) -> None:
    path = shared_tmp / "daemon.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        path.chmod(0o777)  # file permissions would let anyone connect
        server.listen()
        server.setblocking(False)
        done = runner.run_tool("unix_connect", args(path=str(path)))
        assert_failed(done)
        assert no_connection(server)


@BOTH
def test_unix_socket_created_outside(runner: Runner, outside: Path, still_works: None) -> None:
    path = outside / "evil.sock"
    done = runner.run_tool("unix_bind", args(path=str(path)))
    assert_failed(done)
    assert not path.exists()


# -- files -------------------------------------------------------------------------


@BOTH
def test_write_outside(runner: Runner, outside: Path, still_works: None) -> None:
    target = outside / "pwned.txt"
    done = runner.run_tool("write_file", args(path=str(target)))
    assert_failed(done)
    assert not target.exists()


@SELF
@pytest.mark.parametrize("where", ["tmp", "repo"])
def test_write_to_shared_places(runner: Runner, where: str, still_works: None) -> None:
    target = {
        "tmp": Path("/tmp", f"edge-agent-pwned-{secrets.token_hex(4)}"),
        "repo": REPO / "edge_agent" / "sandbox" / "pwned.py",
    }[where]
    try:
        done = runner.run_tool("write_file", args(path=str(target)))
        assert_failed(done)
        assert not target.exists()
    finally:
        target.unlink(missing_ok=True)


@BOTH
def test_delete_outside(runner: Runner, outside: Path, still_works: None) -> None:
    victim = outside / "precious.txt"
    victim.write_text("keep me")
    runner.own(victim)
    done = runner.run_tool("delete_file", args(path=str(victim)))
    assert_failed(done)
    assert victim.read_text() == "keep me"


@BOTH
def test_read_secret_file(runner: Runner, outside: Path, still_works: None) -> None:
    secret = outside / "secret.txt"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    runner.own(secret)
    done = runner.run_tool("read_file", args(path=str(secret)))
    assert_failed(done)
    assert SECRET not in done.text


@SELF
def test_read_etc_shadow(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("read_file", args(path="/etc/shadow"))
    assert_failed(done)
    assert "root:" not in done.text


@BOTH
def test_shell_is_contained(runner: Runner, outside: Path, still_works: None) -> None:
    secret = outside / "secret.txt"
    secret.write_text(SECRET)
    runner.own(secret)
    target = outside / "from-shell.txt"
    command = f"echo pwned > {target}; cat {secret}; id"
    done = runner.run_tool("shell", args(command=command))
    assert not target.exists()
    assert SECRET not in done.text


@SELF
def test_write_2gb_in_workdir(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("write_2gb")
    assert_failed(done, "File too large")


# -- resources -----------------------------------------------------------------------


@BOTH
def test_fork_bomb(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("fork_bomb")
    assert_failed(done, "(timeout)", within=15)


@BOTH
def test_allocate_8gib(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("alloc_8g")
    assert_failed(done, "(memory)", "MemoryError")


@SELF
def test_infinite_loop(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("infinite_loop")
    assert_failed(done, "(timeout)", within=15)


@BOTH
def test_print_100mb(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("print_100mb")
    assert_failed(done, "(output)", "output is larger than 1048576 bytes")
    assert len(done.text) < 10_000


@SELF
def test_huge_result(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("huge_result")
    assert_failed(done, "(output)", "result is larger than 1048576 bytes")


@SELF
def test_open_100k_files(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("open_100k")
    assert_failed(done, "Too many open files")


@BOTH
def test_environment_is_scrubbed(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("environment", EDGE_AGENT_TEST_SECRET=SECRET)
    assert done.returncode == 0, done.text
    assert SECRET not in done.text
    assert set(json.loads(done.stdout)) <= {"PATH", "LANG", "HOME"}


@SELF
def test_result_must_be_json(runner: Runner) -> None:
    assert_failed(runner.run_tool("not_json"), "not JSON")


@SELF
def test_forged_result(runner: Runner) -> None:
    assert_failed(runner.run_tool("forged_result"), "not valid JSON")


@SELF
def test_tool_cannot_fake_a_sandbox_failure(runner: Runner) -> None:
    """Only a failure before the tool's code runs is the sandbox's; this is the tool's."""
    assert_failed(runner.run_tool("fake_setup_failure"), "without a result")


# -- processes -------------------------------------------------------------------------


@pytest.fixture
def victim(runner: Runner) -> Iterator[subprocess.Popen[str]]:
    """A process of the runner's user that a tool might try to kill."""
    proc = runner.popen("import time; print('up', flush=True); time.sleep(60)")
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    yield proc
    stop(proc)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


DAEMON = """
import time
from edge_agent.sandbox import harden_current_process
harden_current_process()
print('up', flush=True)
time.sleep(60)
"""


@pytest.fixture
def daemon(runner: Runner) -> Iterator[subprocess.Popen[str]]:
    """A long-lived hardened process of the runner's user with a secret in its environment."""
    proc = runner.popen(DAEMON, DAEMON_SECRET=SECRET)
    assert proc.stdout is not None and proc.stdout.readline() == "up\n"
    yield proc
    stop(proc)


@BOTH
def test_kill_parent(runner: Runner, still_works: None) -> None:
    done = runner.run_tool("kill_parent")
    assert_failed(done)  # the CLI, the tool's grand-parent, lived to report it


@BOTH
def test_kill_another_process(
    runner: Runner, victim: subprocess.Popen[str], still_works: None
) -> None:
    done = runner.run_tool("kill_pid", args(pid=victim.pid))
    assert_failed(done)
    assert victim.poll() is None


@BOTH
def test_kill_everything(runner: Runner, victim: subprocess.Popen[str], still_works: None) -> None:
    done = runner.run_tool("kill_everything")
    assert done.returncode in (0, 1), done.text  # the CLI itself survived to answer
    assert victim.poll() is None


@BOTH
def test_read_daemon_environ(
    runner: Runner, daemon: subprocess.Popen[str], still_works: None
) -> None:
    done = runner.run_tool("read_environ", args(pid=daemon.pid))
    assert_failed(done)
    assert SECRET not in done.text
    assert daemon.poll() is None


@BOTH
def test_ptrace_daemon(runner: Runner, daemon: subprocess.Popen[str], still_works: None) -> None:
    done = runner.run_tool("ptrace_attach", args(pid=daemon.pid))
    assert_failed(done, "PermissionError")
    assert daemon.poll() is None
    assert psutil.Process(daemon.pid).status() != psutil.STATUS_TRACING_STOP


@BOTH
def test_setsid_orphan_is_killed(runner: Runner, still_works: None) -> None:
    token = f"3600.{secrets.randbelow(10**9)}"  # a unique argument for /bin/sleep
    done = runner.run_tool("setsid_orphan", args(seconds=token))
    assert done.returncode == 0 and json.loads(done.stdout) == "orphan running", done.text
    time.sleep(0.2)
    alive = [p for p in psutil.process_iter(["cmdline"]) if token in (p.info["cmdline"] or [])]
    for proc in alive:
        proc.send_signal(signal.SIGKILL)
    assert not alive, "a double-forked setsid process outlived the call"


@SELF
@pytest.mark.parametrize("attempt", ["new_user_namespace", "io_uring"])
def test_kernel_attack_surface(runner: Runner, attempt: str, still_works: None) -> None:
    assert_failed(runner.run_tool(attempt), "PermissionError")


def test_parent_pid_lives_through_every_attack() -> None:
    """The pytest process is an ancestor of every attack above: still here."""
    assert psutil.pid_exists(os.getpid())
