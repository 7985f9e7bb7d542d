"""Nothing accepted is lost: kill -9, SIGTERM drain, restart, SIGHUP reload,
and the refusal to serve a non-loopback address without a token."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.daemon.conftest import (
    DaemonProcess,
    chat_body,
    free_port,
    smol_config,
    sse_events,
    toml,
)

pytestmark = [pytest.mark.model, pytest.mark.slow]
LONG = "Write a long story about a robot who learns to paint."
TERMINAL = {"done", "failed", "declined"}


class Stream:
    """A streamed request held open: accepted (role chunk read), answer pending."""

    def __init__(self, stack: ExitStack, daemon: DaemonProcess, body: dict, key: str) -> None:
        client = stack.enter_context(daemon.client())
        request = client.build_request(
            "POST", "/v1/chat/completions", json=body, headers={"idempotency-key": key}
        )
        self.response = client.send(request, stream=True)
        stack.callback(self.response.close)
        assert self.response.status_code == 200, self.response.read()
        self.request_id = self.response.headers["x-edge-agent-request-id"]
        self.lines = self.response.iter_lines()
        first = next(sse_events(self.lines))
        assert first["choices"][0]["delta"] == {"role": "assistant"}

    def rest(self) -> list[Any]:
        return list(sse_events(self.lines))


def open_streams(stack: ExitStack, daemon: DaemonProcess, count: int) -> list[Stream]:
    streams = []
    for n in range(count):
        body = chat_body(LONG, stream=True, max_tokens=64)
        streams.append(Stream(stack, daemon, body, key=f"durable-{n}-{time.time_ns()}"))
    return streams


def running(rows: list[dict[str, Any]]) -> bool:
    return any(r["status"] == "running" for r in rows)


def settled(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(r["status"] in TERMINAL for r in rows)


def test_kill_9_mid_request_then_restart_settles_everything(spawn: Any, tmp_path: Path) -> None:
    daemon = spawn(smol_config())
    with ExitStack() as stack:
        streams = open_streams(stack, daemon, 3)
        daemon.wait_rows(running)
        daemon.stop(signal.SIGKILL)
    before = {r["id"]: r["status"] for r in daemon.rows()}
    assert set(before) == {s.request_id for s in streams}  # all three were journaled
    assert "running" in before.values() and not settled(daemon.rows())

    again = spawn(smol_config(), state_dir=daemon.state_dir, name="restarted")
    rows = again.wait_rows(settled)
    assert {r["id"] for r in rows} == set(before)
    for row in rows:
        assert row["status"] == "done" or row["reason"], row  # answered, or failed with a reason
    cut_off = [r for r in rows if before[r["id"]] == "running"]
    assert all(r["recoveries"] == 1 for r in cut_off)
    assert "resumed 3 unfinished request(s)" in again.log()


def test_a_decision_survives_any_number_of_outside_kills(spawn: Any) -> None:
    """kill -9 three times while the same request runs (a flaky power
    supply): no tool can have run, so each restart runs it again, past the
    two tries a request gets when the daemon crashed by itself."""
    daemon = spawn(smol_config(), name="run-0")
    body = chat_body(LONG, stream=True, max_tokens=256)  # seconds of decoding to cut into
    with ExitStack() as stack:
        stream = Stream(stack, daemon, body, key=f"flaky-power-{time.time_ns()}")
        daemon.wait_rows(running)
        daemon.stop(signal.SIGKILL)
    for n in range(1, 4):
        daemon = spawn(smol_config(), state_dir=daemon.state_dir, name=f"run-{n}")
        if n < 3:
            daemon.wait_rows(running)
            daemon.stop(signal.SIGKILL)
    (row,) = daemon.wait_rows(settled)
    assert row["id"] == stream.request_id
    assert row["status"] == "done" and row["recoveries"] == 3, row
    assert "fatal signal" not in daemon.log()


def test_kill_9_before_any_tool_started_runs_it_again(spawn: Any) -> None:
    """An executing request cut off while the model still decides has run no
    tool (``acted_at`` is empty): after the restart it runs again, to the end."""
    daemon = spawn(smol_config())
    body = chat_body(LONG, x_edge_agent_execute=True, x_edge_agent_tools=["calculate"])
    with ExitStack() as stack:
        Stream(stack, daemon, {**body, "stream": True}, key="not-yet-acted")
        (row,) = daemon.wait_rows(running)
        assert row["acted_at"] is None
        daemon.stop(signal.SIGKILL)
    again = spawn(smol_config(), state_dir=daemon.state_dir, name="restarted")
    (row,) = again.wait_rows(settled)
    assert row["status"] == "done", row
    assert row["recoveries"] == 1


def slow_switch_folder(tmp_path: Path) -> Path:
    """A tool that acts (side effect ``actuate``) and takes its time."""
    tools = tmp_path / "slow_tools"
    tools.mkdir()
    (tools / "switch.py").write_text(
        "import time\n\nfrom edge_agent import tool\n\n\n"
        "@tool('Switch the pump on or off.', side_effect='actuate', timeout_s=60)\n"
        "def switch_pump(on: bool) -> str:\n"
        "    time.sleep(30)\n"
        "    return 'on' if on else 'off'\n"
    )
    return tools


def test_kill_9_while_a_tool_acts_fails_it_with_a_reason(spawn: Any, tmp_path: Path) -> None:
    """Once a tool that may change something has started, the journal says
    so (before the tool runs); a kill then fails the request rather than
    run the tool twice."""
    top = {"tools_dirs": [str(slow_switch_folder(tmp_path))]}
    daemon = spawn(smol_config(), top=top)
    choice = {"type": "function", "function": {"name": "switch_pump"}}
    body = chat_body("Switch the pump on.", x_edge_agent_execute=True,
                     x_edge_agent_tools=["switch_pump"], tool_choice=choice)  # fmt: skip
    with ExitStack() as stack:
        Stream(stack, daemon, {**body, "stream": True}, key="side-effects")
        daemon.wait_rows(lambda rows: any(r["acted_at"] is not None for r in rows))
        daemon.stop(signal.SIGKILL)
    again = spawn(smol_config(), top=top, state_dir=daemon.state_dir, name="restarted")
    (row,) = again.wait_rows(settled)
    assert row["status"] == "failed"  # the tool may have acted: never run it twice
    assert "interrupted by a restart" in row["reason"]


def test_sigterm_drains_the_current_request_and_keeps_the_queue(spawn: Any) -> None:
    daemon = spawn(smol_config())
    with ExitStack() as stack:
        first, *queued = open_streams(stack, daemon, 3)
        daemon.wait_rows(running)
        daemon.send(signal.SIGTERM)
        answer = first.rest()  # the request in progress is finished and delivered
        kept = [s.rest() for s in queued]
    assert answer[-1] == "[DONE]"
    assert answer[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    for events in kept:  # the queued ones are told they are kept, not dropped
        error = events[0]["error"]
        assert error["code"] == "shutting_down"
        assert "kept" in error["message"]
    assert daemon.stop() == 0
    statuses = {r["id"]: r["status"] for r in daemon.rows()}
    assert statuses[first.request_id] == "done"
    assert [statuses[s.request_id] for s in queued] == ["accepted", "accepted"]

    again = spawn(smol_config(), state_dir=daemon.state_dir, name="restarted")
    rows = again.wait_rows(settled)
    assert {r["status"] for r in rows} == {"done"}
    # a client retrying with its idempotency key now gets the stored answer
    key = next(r["idempotency_key"] for r in rows if r["id"] == queued[0].request_id)
    with again.client() as client:
        response = client.post(
            "/v1/chat/completions", json=chat_body(LONG), headers={"idempotency-key": key}
        )
    assert response.status_code == 200
    assert response.json()["x_edge_agent"]["request_id"] == queued[0].request_id


def shout_tool_folder(tmp_path: Path) -> Path:
    """A tool folder the running daemon has not seen, with one tool: shout."""
    tools = tmp_path / "more_tools"
    tools.mkdir()
    (tools / "shout.py").write_text(
        "from edge_agent import tool\n\n\n"
        "@tool('Say a word loudly.')\n"
        "def shout(word: str) -> str:\n"
        "    return word.upper()\n"
    )
    return tools


def test_sighup_reloads_the_config_and_the_tools(spawn: Any, tmp_path: Path) -> None:
    daemon = spawn(smol_config())
    body = chat_body("Say hi.", x_edge_agent_tools=["shout"], tool_choice="none", max_tokens=8)
    with daemon.client() as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 400
        tools = shout_tool_folder(tmp_path)
        config = tmp_path / "daemon.toml"
        config.write_text(toml(smol_config(), top={"tools_dirs": [str(tools)]}))
        daemon.send(signal.SIGHUP)
        response = _until(lambda: client.post("/v1/chat/completions", json=body), 200)
        assert response.json()["choices"][0]["message"]["content"] is not None

        config.write_text("[server]\nqueue_size = 0\n")  # out of bounds: refused, old one kept
        daemon.send(signal.SIGHUP)
        _until(lambda: "reload failed" in daemon.log() or None, True)
        assert "server.queue_size" in daemon.log()
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    assert daemon.alive()


def test_sighup_with_new_tools_reads_their_tool_block_before_the_next_request(
    spawn: Any, tmp_path: Path
) -> None:
    config = smol_config()
    config["model"]["prefix_cache"] = True
    daemon = spawn(config)
    assert daemon.log().count("tool block:") == 1, daemon.log()
    tools = shout_tool_folder(tmp_path)
    (tmp_path / "daemon.toml").write_text(toml(config, top={"tools_dirs": [str(tools)]}))
    daemon.send(signal.SIGHUP)
    _until(lambda: daemon.log().count("tool block:"), 2)
    sizes = [int(line.split("tool block: ")[1].split()[0]) for line in _block_lines(daemon)]
    assert sizes[1] > sizes[0], daemon.log()  # one more tool in the block
    assert "read and saved" in _block_lines(daemon)[1]
    assert len(list((daemon.state_dir / "kv").glob("*.kv"))) == 2
    assert daemon.alive()


def _block_lines(daemon: Any) -> list[str]:
    return [line for line in daemon.log().splitlines() if "tool block:" in line]


def _until(probe: Any, want: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        got = value.status_code if isinstance(value, httpx.Response) else value
        if got == want:
            return value
        time.sleep(0.2)
    raise AssertionError(f"never got {want!r}")


# ---------------------------------------------------------------- refusals (no model load)


def run_refused(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    environ = {k: v for k, v in os.environ.items() if k != "EDGE_AGENT_API_TOKEN"}
    environ.update({"EDGE_AGENT_STATE_DIR": str(tmp_path / "state"), **(env or {})})
    proc = subprocess.run(
        [sys.executable, "-m", "edge_agent", "run", "--port", str(free_port()), *args],
        capture_output=True, text=True, env=environ, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edge-agent: error: "), proc.stderr
    assert not (tmp_path / "state").exists()  # refused before touching anything
    return lines[0]


def test_non_loopback_bind_without_token_is_refused(tmp_path: Path) -> None:
    line = run_refused(tmp_path, "--host", "0.0.0.0")
    assert "refusing to listen on 0.0.0.0 without an API token" in line
    assert "EDGE_AGENT_API_TOKEN" in line


@pytest.mark.parametrize(("mode", "message"), [(0o644, "mode 0644"), (0o600, None)])
def test_token_file_must_be_private(tmp_path: Path, mode: int, message: str | None) -> None:
    token = tmp_path / "token"
    token.write_text("short\n")
    token.chmod(mode)
    config = tmp_path / "c.toml"
    config.write_text(toml({"server": {"host": "0.0.0.0", "token_file": str(token)}}))
    line = run_refused(tmp_path, "--config", str(config))
    assert (message or "use at least 16") in line


def test_short_token_is_refused(tmp_path: Path) -> None:
    line = run_refused(tmp_path, env={"EDGE_AGENT_API_TOKEN": "abc"})
    assert "has 3 characters; use at least 16" in line
    assert "'abc'" not in line  # the token itself is never echoed


def test_busy_port_is_reported_before_loading_the_model(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        environ = {**os.environ, "EDGE_AGENT_STATE_DIR": str(tmp_path / "state")}
        proc = subprocess.run(
            [sys.executable, "-m", "edge_agent", "run", "--port", str(port)],
            capture_output=True, text=True, env=environ, timeout=60, check=False,
        )  # fmt: skip
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def test_a_restart_restores_the_tool_block_from_disk(spawn: Any) -> None:
    config = smol_config()
    config["model"]["prefix_cache"] = True
    first = spawn(config, name="first")
    first.stop()
    assert "tool block:" in first.log() and "read and saved" in first.log(), first.log()
    assert len(list((first.state_dir / "kv").glob("*.kv"))) == 1
    second = spawn(config, state_dir=first.state_dir, name="second")
    assert "restored from disk" in second.log(), second.log()
    body = chat_body("Turn on the kitchen light", x_edge_agent_execute=True)
    with second.client() as client:
        answer = client.post("/v1/chat/completions", json=body)
    assert answer.status_code == 200, answer.text
