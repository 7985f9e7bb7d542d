"""ProcessSandbox in-process: results, limits, each layer on its own, the
pure pieces (BPF program, bwrap argv, Landlock rights), and the CLI's
``tools`` and ``doctor`` commands through ``edge_agent.cli.main``."""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

import edge_agent.cli
from edge_agent.errors import SandboxError
from edge_agent.sandbox import (
    ProcessSandbox,
    Sandbox,
    SandboxLimits,
    SandboxResult,
    containment,
    detect_layers,
    landlock,
    seccomp,
)
from edge_agent.sandbox import bwrap as bwrap_mod
from edge_agent.toolbox.registry import Registry, Tool
from tests.sandbox.conftest import ESCAPE_TOOLS, OUR_MODULES, Runner, _nobody_runner

ALL_OPTIONAL = ("privdrop", "seccomp", "landlock", "bwrap", "cgroup")
LAYERS = detect_layers()


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.from_dirs(ESCAPE_TOOLS, builtin=False)


def trusted(item: Tool) -> Tool:
    return dataclasses.replace(item, policy=dataclasses.replace(item.policy, trusted=True))


def run(
    registry: Registry, name: str, sandbox: ProcessSandbox | None = None, **args: Any
) -> SandboxResult:
    return (sandbox or ProcessSandbox()).run(registry.get(name), args)


def needs(*layers: str) -> pytest.MarkDecorator:
    off = [name for name in layers if not LAYERS[name].active]
    reason = "; ".join(f"{name}: {LAYERS[name].detail}" for name in off)
    return pytest.mark.skipif(bool(off), reason=f"layer off on this machine: {reason}")


# -- results -------------------------------------------------------------------------


def test_value_comes_back_with_the_layers_used(registry: Registry) -> None:
    sandbox: Sandbox = ProcessSandbox()  # the one-method interface, checked by mypy
    result = sandbox.run(registry.get("scratch"), {"text": "hello"})
    assert result.ok and result.error is None and result.exit_code == 0
    assert result.value["text"] == "hello"
    assert {"rlimits", "env", "workdir", "no_new_privs", "reaper"} <= set(result.layers)
    for name in ("seccomp", "landlock", "bwrap", "cgroup"):
        assert (name in result.layers) == LAYERS[name].active
    assert not Path(result.value["cwd"]).exists(), "the work folder outlived the call"


def test_each_call_gets_a_fresh_work_folder(registry: Registry) -> None:
    first, second = run(registry, "scratch", text="a"), run(registry, "scratch", text="b")
    assert first.value["cwd"] != second.value["cwd"]


def test_tool_exception_is_a_structured_failure(registry: Registry) -> None:
    result = run(registry, "delete_file", path="/nonexistent/file")
    assert not result.ok and result.error_type == "FileNotFoundError"
    assert "/nonexistent/file" in (result.error or "") and result.killed_by is None


def test_arguments_are_validated_in_the_child(registry: Registry) -> None:
    result = run(registry, "echo", text=123)
    assert not result.ok and result.error_type == "ValidationError"


def test_wall_timeout(registry: Registry) -> None:
    sandbox = ProcessSandbox(SandboxLimits(wall_s=0.5))
    result = run(registry, "infinite_loop", sandbox)
    assert result.killed_by == "timeout" and result.error_type == "Timeout"
    assert result.duration_s < 5


def test_cpu_limit(registry: Registry) -> None:
    sandbox = ProcessSandbox(SandboxLimits(cpu_s=1, wall_s=20))
    result = run(registry, "infinite_loop", sandbox)
    assert result.killed_by == "cpu", result
    assert result.duration_s < 10


def test_output_limit_is_configurable(registry: Registry) -> None:
    sandbox = ProcessSandbox(SandboxLimits(max_output_bytes=1000))
    result = run(registry, "echo", sandbox, text="x" * 2000)
    assert result.killed_by == "output" and "result is larger than 1000 bytes" in str(result.error)


def test_configured_environment_only(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAEMON_ONLY", "not for tools")
    sandbox = ProcessSandbox(env={"EDGE_AGENT_HTTP_ALLOWLIST": "example.org", "HOME": "/root"})
    env = run(registry, "environment", sandbox).value
    assert env["EDGE_AGENT_HTTP_ALLOWLIST"] == "example.org" and "DAEMON_ONLY" not in env
    assert env["HOME"] != "/root"  # always the work folder
    assert set(env) == {"PATH", "LANG", "HOME", "EDGE_AGENT_HTTP_ALLOWLIST"}


def test_result_record_is_json() -> None:
    result = SandboxResult(ok=True, value=[1], duration_s=0.123456, layers=("a",))
    assert json.loads(json.dumps(result.to_json()))["duration_s"] == 0.1235


def test_concurrent_calls(registry: Registry) -> None:
    results: list[SandboxResult] = []
    threads = [
        threading.Thread(target=lambda i=i: results.append(run(registry, "echo", text=str(i))))
        for i in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.value for r in results) == ["0", "1", "2"]


# -- refusal ---------------------------------------------------------------------------


def test_untrusted_tool_refused_without_isolation(registry: Registry) -> None:
    sandbox = ProcessSandbox(disable=("landlock", "bwrap"))
    with pytest.raises(SandboxError, match="refusing to run untrusted tool 'echo'") as info:
        sandbox.run(registry.get("echo"), {"text": "x"})
    assert "trusted=True" in info.value.one_line()


def test_trusted_tool_runs_without_isolation(registry: Registry) -> None:
    sandbox = ProcessSandbox(disable=("landlock", "bwrap"))
    result = sandbox.run(trusted(registry.get("echo")), {"text": "x"})
    assert result.ok and result.value == "x"
    assert "landlock" not in result.layers and "bwrap" not in result.layers


@pytest.mark.skipif(os.geteuid() != 0, reason="only root escapes RLIMIT_NPROC")
def test_root_without_a_process_bound_is_refused(registry: Registry) -> None:
    from edge_agent.sandbox import cgroup

    if "pids" in cgroup.delegated_controllers():
        pytest.skip("a cgroup with pids.max bounds root here")
    sandbox = ProcessSandbox(disable=("privdrop",))
    with pytest.raises(SandboxError, match="fork bomb would not be contained"):
        sandbox.run(registry.get("fork_bomb"), {})


def test_without_isolation_the_verdict_names_what_is_missing() -> None:
    verdict = containment({"landlock", "bwrap"})
    assert not verdict.contained and "no filesystem isolation" in verdict.reason
    if LAYERS["bwrap"].active:  # the cheapest piece to get back is the one turned off
        assert verdict.hint == "remove bwrap from EDGE_AGENT_SANDBOX_DISABLE"


def test_unknown_layer_name() -> None:
    with pytest.raises(ValueError, match="unknown sandbox layers"):
        ProcessSandbox(disable=("apparmor",))


# -- each layer alone ----------------------------------------------------------------


def only(*layers: str) -> ProcessSandbox:
    return ProcessSandbox(disable=[n for n in ALL_OPTIONAL if n not in layers])


def test_control_without_layers_the_harm_is_real(registry: Registry, tmp_path: Path) -> None:
    """With every optional layer off, the write outside does happen: the
    escape tests' assertions can fail."""
    target = tmp_path / "written.txt"
    result = only().run(trusted(registry.get("write_file")), {"path": str(target)})
    assert result.ok and target.read_text() == "escaped"


@needs("landlock")
def test_landlock_alone_confines_files(registry: Registry, tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    result = only("landlock").run(trusted(registry.get("write_file")), {"path": str(target)})
    assert result.error_type == "PermissionError" and not target.exists()


@needs("landlock")
def test_landlock_alone_blocks_tcp(registry: Registry) -> None:
    if landlock.abi_version()[0] < 4:
        pytest.skip("Landlock ABI < 4 has no network rules")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = only("landlock").run(trusted(registry.get("tcp_connect")), {"port": port})
    assert result.error_type == "PermissionError"


@needs("bwrap")
def test_bwrap_alone_confines_files_and_network(registry: Registry, tmp_path: Path) -> None:
    target = tmp_path / "written.txt"
    result = only("bwrap").run(trusted(registry.get("write_file")), {"path": str(target)})
    assert not result.ok and not target.exists()
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        result = only("bwrap").run(trusted(registry.get("tcp_connect")), {"port": port})
    assert result.error_type == "ConnectionRefusedError"  # its own, empty loopback


@needs("seccomp")
def test_seccomp_alone_blocks_sockets_and_ptrace(registry: Registry) -> None:
    sandbox = only("seccomp")
    result = sandbox.run(trusted(registry.get("udp_send")), {"port": 9})
    assert result.error_type == "PermissionError"
    result = sandbox.run(trusted(registry.get("ptrace_attach")), {"pid": os.getpid()})
    assert result.error_type == "PermissionError"


@needs("seccomp")
def test_without_bwrap_unix_sockets_are_refused(registry: Registry, tmp_path: Path) -> None:
    """Landlock cannot stop a connect to a world-writable socket file: seccomp does."""
    path = tmp_path / "bus.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        result = only("seccomp", "landlock").run(
            trusted(registry.get("unix_connect")), {"path": str(path)}
        )
    assert result.error_type == "PermissionError", result


@needs("privdrop")
def test_privdrop_runs_as_a_throwaway_uid(registry: Registry) -> None:
    shell = registry.get("shell")
    result = ProcessSandbox().run(shell, {"command": "id -u"})
    uid = int(result.value["stdout"])
    assert uid >= 0x78000000


@needs("cgroup")
def test_cgroup_alone_kills_orphans(registry: Registry) -> None:
    result = only("cgroup").run(trusted(registry.get("setsid_orphan")), {"seconds": "3600.42"})
    assert result.ok  # the autouse fixture checks the orphan is gone


# -- pure pieces -------------------------------------------------------------------------


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("network", [False, True])
def test_seccomp_program_is_well_formed(arch: str, network: bool) -> None:
    assert len(seccomp.build_filter(arch, network=False, unix=False)) < len(
        seccomp.build_filter(arch, network=False, unix=True)
    )
    program = seccomp.build_filter(arch, network=network)
    assert len(program) % 8 == 0
    instructions = [struct.unpack("=HBBI", program[i : i + 8]) for i in range(0, len(program), 8)]
    assert instructions[0] == (0x20, 0, 0, 4)  # load the arch first
    for index, (code, jt, jf, _) in enumerate(instructions):
        if code & 0x07 == 0x05:  # a jump: both targets inside the program
            assert index + 1 + max(jt, jf) < len(instructions)
    assert instructions[-1][0] == 0x06  # ends with a return
    socket_checks = [i for i in instructions if i[0] == 0x15 and i[3] == 1]  # == AF_UNIX
    assert bool(socket_checks) != network


def test_bwrap_argv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    venv.mkdir()
    work = tmp_path / "work"
    read = [Path("/usr/lib"), venv, tmp_path / "missing"]
    off = bwrap_mod.command(
        "bwrap", read=read, workdir=work, network=False, as_root=False, inner=["python"]
    )
    assert "--unshare-net" in off and "--unshare-user" in off and off[-2:] == ["--", "python"]
    assert "/usr/lib" not in off  # under /usr, which is bound already
    assert str(tmp_path / "missing") not in off
    bind = off.index("--ro-bind", off.index(str(tmp_path)))
    assert off[bind : bind + 3] == ["--ro-bind", str(venv), str(venv)]
    top = str(tmp_path.parents[-2])  # e.g. /tmp: created world-traversable
    assert off[off.index(top) - 3 : off.index(top) + 1] == ["--perms", "0755", "--dir", top]
    assert off[off.index(str(work)) - 1] == "--bind"
    on = bwrap_mod.command(
        "bwrap", read=[], workdir=work, network=True, as_root=True, inner=["python"]
    )
    assert "--unshare-net" not in on and "--unshare-user" not in on and "CAP_SETUID" in on


def test_landlock_rights_by_abi() -> None:
    assert landlock.fs_rights(1) == (1 << 13) - 1
    assert landlock.fs_rights(4) == (1 << 15) - 1
    assert landlock.fs_rights(7) == (1 << 16) - 1


# -- harden_current_process, as an unprivileged user -----------------------------------


HOLDER = """
import sys, time
if sys.argv[1] == "harden":
    from edge_agent.sandbox import harden_current_process
    harden_current_process()
print("up", flush=True)
time.sleep(30)
"""
READER = """
import sys
try:
    print(open(f"/proc/{sys.argv[1]}/environ", "rb").read().decode(errors="replace"))
except OSError as exc:
    print(f"denied: {exc}")
"""


@pytest.mark.parametrize("harden", [False, True])
def test_harden_hides_environ_from_same_uid(harden: bool) -> None:
    """No sandbox here: as nobody, one process reads another's environment
    unless that one called harden_current_process()."""
    nobody = _nobody_runner()
    if not isinstance(nobody, Runner):
        pytest.skip(f"cannot run as nobody: {nobody}")
    secret = "holder-secret-value"
    holder = subprocess.Popen(
        [*nobody.prefix, nobody.python, "-c", HOLDER, "harden" if harden else "plain"],
        env=nobody.env(HOLDER_SECRET=secret),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "up\n"
        reader = subprocess.run(
            [*nobody.prefix, nobody.python, "-c", READER, str(holder.pid)],
            env=nobody.env(), capture_output=True, text=True, check=False, timeout=30,
        )  # fmt: skip
        assert (secret in reader.stdout) != harden, reader.stdout
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


# -- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``edge_agent.cli.main`` with our two command modules registered."""
    modules = tuple(dict.fromkeys((*edge_agent.cli._COMMAND_MODULES, *OUR_MODULES)))
    monkeypatch.setattr(edge_agent.cli, "_COMMAND_MODULES", modules)
    return edge_agent.cli.main


def test_doctor(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["doctor"]) == 0
    out = capsys.readouterr().out
    for name in LAYERS:
        assert f"  {name} " in out
    assert "untrusted tools: " in out


def test_tools_list(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["tools", "list", "--tools-dir", str(ESCAPE_TOOLS)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["NAME", "SIDE", "EFFECT", "NETWORK", "TIMEOUT",
                                           "DESCRIPTION"]  # fmt: skip
    row = next(line for line in out.splitlines() if line.startswith("tcp_connect_allowed"))
    assert row.split()[1:4] == ["read", "yes", "10"]


def test_tools_run_prints_the_value(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["tools", "run", "echo", "--args", '{"text": "hi"}', "--tools-dir",
                str(ESCAPE_TOOLS)])  # fmt: skip
    assert code == 0 and json.loads(capsys.readouterr().out) == "hi"


def test_tools_run_json_record(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli(["tools", "run", "delete_file", "--args", '{"path": "/nonexistent"}', "--json",
                "--tools-dir", str(ESCAPE_TOOLS)])  # fmt: skip
    record = json.loads(capsys.readouterr().out)
    assert code == 1 and record["ok"] is False and record["error_type"] == "FileNotFoundError"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ('{"text": 5}', "invalid arguments for 'echo': text: Input should be a valid string"),
        ('{"txt": "a"}', "invalid arguments for 'echo': text: Field required; txt: Extra"),
        ("[1]", "--args must be a JSON object"),
        ("{", "--args is not valid JSON"),
    ],
)
def test_tools_run_bad_arguments(
    cli: Any, capsys: pytest.CaptureFixture[str], args: str, message: str
) -> None:
    code = cli(["tools", "run", "echo", "--args", args, "--tools-dir", str(ESCAPE_TOOLS)])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert message in err
