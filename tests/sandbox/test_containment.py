"""One rule for "can an untrusted tool be contained here": the pure verdict on
machines built from facts, then the real built-in ``set_light`` through
ProcessSandbox as root without bwrap, as root with bwrap and as ``nobody``,
and ``doctor`` agreeing with the sandbox through the real CLI.

"Without bwrap" is ``EDGE_AGENT_SANDBOX_DISABLE=bwrap`` (or ``disable=``),
the same switch a user has; on this CI machine Python lives under a 0700
``/root``, so root without bwrap is exactly the first-run case of issue 13.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from edge_agent.errors import ConfigError, SandboxError
from edge_agent.sandbox import ProcessSandbox, containment, detect_layers
from edge_agent.sandbox.probe import DISABLE_ENV, Host, LayerStatus, detect_host, disabled_from_env
from edge_agent.toolbox.registry import Registry
from tests.sandbox.conftest import ESCAPE_TOOLS, REPO, Runner, _current_runner, _nobody_runner

pytestmark = pytest.mark.slow  # real sandboxed processes, as root and as nobody

INSTALL = "install bubblewrap (apt install bubblewrap)"
FORK_BOMB = "a fork bomb would not be contained"
PRIVATE = Path("/root/.pyenv/versions/3.11/bin/python3.11")


def host(*on: str, root: bool = True, installed: bool = True, **facts: object) -> Host:
    """A machine with the named optional layers active and the rest off."""
    names = ("rlimits", "privdrop", "seccomp", "landlock", "bwrap", "cgroup")
    layers = {n: LayerStatus(n, n in on or n == "rlimits", f"{n} detail") for n in names}
    defaults: dict[str, object] = {"pids_max": False, "private_path": None}
    return Host(layers, root, installed, **{**defaults, **facts})  # type: ignore[arg-type]


# -- the rule, pure ------------------------------------------------------------------


def test_first_run_case_root_landlock_no_bwrap_private_python() -> None:
    verdict = containment((), host("landlock", "seccomp", installed=False, private_path=PRIVATE))
    assert not verdict.contained and FORK_BOMB in verdict.reason
    assert verdict.hint == INSTALL  # the one missing piece, not a list
    assert "privdrop" not in verdict.layers and "landlock" in verdict.layers


def test_root_with_bwrap_drops_to_a_throwaway_uid() -> None:
    verdict = containment((), host("privdrop", "bwrap", installed=True, private_path=PRIVATE))
    assert verdict.contained and verdict.hint == ""
    assert "bwrap" in verdict.reason and "throwaway uid" in verdict.reason
    assert {"bwrap", "privdrop"} <= verdict.layers


def test_root_without_bwrap_and_a_readable_python_drops_uid() -> None:
    verdict = containment((), host("privdrop", "landlock", installed=False))
    assert verdict.contained and "privdrop" in verdict.layers


def test_root_bounded_by_cgroup_pids_max() -> None:
    machine = host("landlock", "cgroup", installed=False, private_path=PRIVATE, pids_max=True)
    verdict = containment((), machine)
    assert verdict.contained and "pids.max" in verdict.reason


def test_bwrap_turned_off_by_the_user_is_named_as_the_missing_piece() -> None:
    machine = host("privdrop", "landlock", "bwrap", private_path=PRIVATE)
    verdict = containment({"bwrap"}, machine)
    assert not verdict.contained and verdict.hint == f"remove bwrap from {DISABLE_ENV}"
    assert "privdrop" not in verdict.layers  # the uid drop needed bwrap here


def test_bwrap_installed_but_broken_names_the_private_path() -> None:
    verdict = containment((), host("landlock", installed=True, private_path=PRIVATE))
    assert not verdict.contained and str(PRIVATE) in verdict.hint


def test_normal_user_needs_only_filesystem_isolation() -> None:
    assert containment((), host("landlock", root=False, installed=False)).contained
    assert containment((), host("bwrap", root=False)).contained


def test_normal_user_without_isolation_gets_one_hint() -> None:
    missing = containment((), host(root=False, installed=False))
    assert not missing.contained and missing.hint == INSTALL
    assert "no filesystem isolation" in missing.reason
    no_userns = containment((), host(root=False, installed=True))
    assert "user namespaces" in no_userns.hint


def test_disable_switch_from_the_environment() -> None:
    assert disabled_from_env({DISABLE_ENV: " bwrap, privdrop ,"}) == {"bwrap", "privdrop"}
    assert disabled_from_env({}) == frozenset()
    with pytest.raises(ConfigError, match="apparmor"):
        disabled_from_env({DISABLE_ENV: "apparmor"})


# -- the real built-in set_light through ProcessSandbox ---------------------------------

LIGHT = {"room": "kitchen", "on": True, "brightness": 100}


@pytest.fixture(scope="module")
def builtins() -> Registry:
    return Registry.from_dirs()


@pytest.fixture(scope="module")
def third_party() -> Registry:
    return Registry.from_dirs(ESCAPE_TOOLS, builtin=False)


def test_the_registry_marks_only_its_own_tools_builtin(builtins: Registry) -> None:
    assert builtins.get("set_light").builtin
    assert not any(t.builtin for t in Registry.from_dirs(ESCAPE_TOOLS, builtin=False))


def test_root_with_bwrap_runs_set_light_contained(builtins: Registry, tmp_path: Path) -> None:
    if os.geteuid() != 0 or not detect_layers()["bwrap"].active:
        pytest.skip("needs root and a working bwrap")
    notes: list[str] = []
    sandbox = ProcessSandbox(state_root=tmp_path, notice=notes.append)
    result = sandbox.run(builtins.get("set_light"), LIGHT)
    assert result.ok and result.value["on"] is True, result
    assert "bwrap" in result.layers and not notes


@pytest.mark.parametrize("off", [("bwrap",), ("bwrap", "privdrop")])
def test_without_bwrap_set_light_runs_and_says_so_once(
    builtins: Registry, third_party: Registry, tmp_path: Path, off: tuple[str, ...]
) -> None:
    """The issue's first run: bwrap absent. The built-in tool runs either way;
    where the machine cannot contain a tool, one note says what is missing,
    and a third-party tool is refused with the same reason and hint."""
    notes: list[str] = []
    sandbox = ProcessSandbox(disable=off, state_root=tmp_path, notice=notes.append)
    for _ in range(2):
        result = sandbox.run(builtins.get("set_light"), LIGHT)
        assert result.ok and result.value["on"] is True, result
        assert "bwrap" not in result.layers
    verdict = containment(sandbox.disable)
    if verdict.contained:
        assert not notes
        return
    [note] = notes
    assert verdict.reason in note and verdict.hint in note
    with pytest.raises(SandboxError) as refused:
        sandbox.run(third_party.get("echo"), {"text": "x"})
    line = refused.value.one_line()
    assert verdict.reason in line and verdict.hint in line and "trusted=True" in line


def test_root_without_bwrap_or_uid_drop_is_the_first_run_case() -> None:
    if os.geteuid() != 0:
        pytest.skip("the fork-bomb rule is root's")
    if detect_host().pids_max:
        pytest.skip("a cgroup with pids.max bounds root here")
    verdict = containment({"bwrap", "privdrop"})
    assert not verdict.contained and FORK_BOMB in verdict.reason
    assert verdict.hint == f"remove privdrop from {DISABLE_ENV}"


NOBODY_RUN = """
import json, sys
from pathlib import Path
from edge_agent.toolbox.registry import Registry
from edge_agent.sandbox import ProcessSandbox, containment
notes = []
sandbox = ProcessSandbox(state_root=Path(sys.argv[1]), notice=notes.append)
result = sandbox.run(Registry.from_dirs().get("set_light"), json.loads(sys.argv[2]))
verdict = containment(sandbox.disable)
print(json.dumps({"ok": result.ok, "value": result.value, "error": result.error,
                  "layers": result.layers, "notes": notes, "contained": verdict.contained}))
"""


def test_a_normal_user_runs_set_light(shared_tmp: Path) -> None:
    nobody = _nobody_runner()
    if not isinstance(nobody, Runner):
        pytest.skip(f"cannot run as nobody: {nobody}")
    state = shared_tmp / "state"
    state.mkdir()
    nobody.own(state)
    done = subprocess.run(
        [*nobody.prefix, nobody.python, "-c", NOBODY_RUN, str(state), json.dumps(LIGHT)],
        env=nobody.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["ok"] and out["value"]["on"] is True, out
    assert "privdrop" not in out["layers"]  # already unprivileged
    assert len(out["notes"]) == (0 if out["contained"] else 1)


# -- doctor and the sandbox agree, through the real CLI ---------------------------------


@pytest.mark.parametrize("off", ["", "bwrap", "bwrap,privdrop", "landlock,bwrap"])
def test_doctor_and_the_sandbox_give_one_verdict(off: str) -> None:
    runner = _current_runner()
    env = {DISABLE_ENV: off}
    doctor = runner.cli("doctor", env=env)
    assert doctor.returncode == 0, doctor.text
    refused = runner.run_tool("echo", json.dumps({"text": "x"}), **env)
    builtin = runner.cli("tools", "run", "calculate", "--args", '{"expression": "6*7"}', env=env)
    assert builtin.returncode == 0 and json.loads(builtin.stdout)["result"] == 42, builtin.text
    if "untrusted tools: contained" in doctor.stdout:
        assert refused.returncode == 0, refused.text
        assert "note:" not in builtin.stderr
        return
    hint = doctor.stdout.split("hint: ", 1)[1].splitlines()[0].strip()
    assert refused.returncode == 1 and "refusing to run untrusted tool 'echo'" in refused.stderr
    assert hint in refused.stderr
    [note] = builtin.stderr.strip().splitlines()
    assert note.startswith("edge-agent: note: built-in tools run only partly contained")
    assert hint in note


def test_an_unknown_layer_in_the_switch_is_one_clear_error() -> None:
    done = _current_runner().cli("doctor", env={DISABLE_ENV: "apparmor"})
    assert done.returncode == 1 and "apparmor" in done.stderr and "Traceback" not in done.stderr


def test_detected_host_matches_its_layers() -> None:
    machine = detect_host()
    assert machine.layers == detect_layers()
    assert machine.root == (os.geteuid() == 0)
