"""The router end to end with real parts: Qwen2.5-Coder-0.5B as the SLM, the
llama-cpp-python server over TLS serving Qwen2.5-Coder-1.5B as the cloud
(``tests/offload/conftest.py``), a real journal, tools run in the real
sandbox. Faults the real server cannot make on demand (503s, a reply that
fails verification) come from the offload tests' scripted HTTPS server; the
network going away and coming back is a real TCP relay that is started late.
The policy's other branches (no cloud, offline and broke, the breaker, a reply
that fails verification, a repeated idempotency key) are in
``test_router_logic.py``, with the named scripted engine: what the SLM says
does not matter there.

Both llama.cpp instances run on one thread each (two cores).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import Agent
from edge_agent.config import AgentSettings
from edge_agent.engine.llama import LlamaEngine
from edge_agent.errors import ConfigError
from edge_agent.models import fetch_model, resolve_model
from edge_agent.records.journal import Journal
from edge_agent.routing.budget import Budget, BudgetSettings, ModelPrice
from edge_agent.routing.confidence import HeuristicConfidence
from edge_agent.routing.connectivity import ConnectivitySettings
from edge_agent.routing.ledger import SqliteLedger, SqliteOutbox
from edge_agent.routing.offload.https import HttpsOffloadSettings, HttpsTransport
from edge_agent.routing.offload.mqtt import MqttTransport
from edge_agent.routing.offload.settings import MqttOffloadSettings
from edge_agent.routing.router import (
    Router,
    RouterSettings,
    Store,
    cascade_agent_settings,
    cloud_for,
)
from edge_agent.sandbox import ProcessSandbox
from edge_agent.toolbox.registry import Registry
from tests.offload import conftest as offload
from tests.offload.conftest import (
    LLM_MODEL,
    Broker,
    LlmServer,
    free_port,
)

# The offload tests' real servers, shared as fixtures of this module.
pki = offload.pki
llm_server = offload.llm_server
scripted = offload.scripted
broker = offload.broker
run_bridge = offload.run_bridge

pytestmark = [pytest.mark.model, pytest.mark.slow]

CONFIDENT = "Turn on the kitchen light"
UNCONFIDENT_ACTUATION = "Make the sleeping room bright"  # the SLM is unsure (and wrong)
UNRELATED = "Translate 'hello' into German"  # no tool fits; the SLM calls one anyway

HOUSE_TOOLS = """
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from edge_agent.toolbox.registry import tool

Room = Literal["kitchen", "bedroom", "living_room"]


@tool("Switch a room's light on or off.", side_effect="actuate", state=True)
def set_light(room: Room, on: bool) -> dict[str, Any]:
    log = Path(os.environ["EDGE_AGENT_TOOL_STATE"]) / "actions.log"
    with log.open("a") as out:
        out.write(f"set_light {room} {on}\\n")
    return {"room": room, "on": on}


@tool("Read a room sensor.", side_effect="read")
def read_sensor(sensor: Literal["temperature", "humidity"], room: Room) -> dict[str, Any]:
    return {"sensor": sensor, "room": room, "value": 21.5}
"""


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture(scope="module")
def slm() -> Iterator[LlamaEngine]:
    """Qwen2.5-Coder-0.5B on one thread: the LLM server runs beside it."""
    fetch_model("qwen2.5-coder-0.5b", progress=False)
    model = resolve_model("qwen2.5-coder-0.5b")
    yield LlamaEngine(model.path, n_ctx=4096, n_threads=1, name="qwen2.5-coder-0.5b")


def enterable(folder: Path) -> Path:
    """Let the sandbox's unprivileged tool user in (pytest's folders are 0700)."""
    for item in [folder, *folder.parents]:
        if item == Path(os.sep) or item.stat().st_uid != os.geteuid():
            break
        item.chmod(item.stat().st_mode | 0o711)
    return folder


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    folder = enterable(tmp_path_factory.mktemp("house-tools"))
    (folder / "house.py").write_text(HOUSE_TOOLS)
    (folder / "house.py").chmod(0o644)
    return Registry.from_dirs(folder, builtin=False)


@dataclass
class Rig:
    """One router over real parts, and where to look at what it did."""

    router: Router
    journal: Journal
    outbox: SqliteOutbox
    ledger: SqliteLedger
    actions: Path
    link_clock: Clock

    def actions_run(self) -> list[str]:
        return self.actions.read_text().splitlines() if self.actions.exists() else []


@pytest.fixture
def rig(slm: LlamaEngine, registry: Registry, tmp_path: Path) -> Iterator[Callable[..., Rig]]:
    """A factory: ``rig(endpoint=settings, budget=..., link=...)`` builds a router."""
    journal = Journal(tmp_path / "journal.db")
    opened: list[Any] = [journal]
    state = enterable(tmp_path) / "tool-state"

    def build(
        endpoint: HttpsOffloadSettings | MqttOffloadSettings | None,
        *,
        budget: BudgetSettings | None = None,
        link: ConnectivitySettings | None = None,
        threshold: float = 0.6,
    ) -> Rig:
        agent = Agent(
            slm,
            registry,
            cascade_agent_settings(AgentSettings()),
            sandbox=ProcessSandbox(state_root=state),
        )
        link = link or ConnectivitySettings(probe="tcp", timeout_s=1)
        clock = Clock()
        ledger, outbox = SqliteLedger(journal.path), SqliteOutbox(journal.path)
        opened.extend([ledger, outbox])
        cloud = None
        if endpoint is not None:
            transport: HttpsTransport | MqttTransport
            if isinstance(endpoint, HttpsOffloadSettings):
                transport = HttpsTransport(endpoint)
            else:
                transport = MqttTransport(endpoint)
            opened.append(transport)
            cloud = cloud_for(
                transport, Budget(budget or BudgetSettings(), ledger), link, clock=clock
            )
            if isinstance(endpoint, HttpsOffloadSettings):
                assert cloud.model == endpoint.model
        router = Router(
            agent,
            HeuristicConfidence(),
            RouterSettings(threshold=threshold, link=link),
            cloud=cloud,
            store=Store(journal, outbox),
        )
        return Rig(router, journal, outbox, ledger, state / "house" / "actions.log", clock)

    yield build
    for item in reversed(opened):
        item.close()


class Relay:
    """A real TCP relay 127.0.0.1:port → target, started when the test says
    the network is back (TLS passes through it untouched)."""

    def __init__(self, target: int) -> None:
        self.port = free_port()
        self.target = target
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        self._sockets.append(server)
        self._spawn(self._accept, server)

    def _spawn(self, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._sockets += [client, upstream]
            self._spawn(_pipe, client, upstream)
            self._spawn(_pipe, upstream, client)

    def close(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        for thread in self._threads:
            thread.join(5)


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# ---------------------------------------------------------------- the two routes


def test_a_confident_request_stays_local(rig: Callable[..., Rig], llm_server: LlmServer) -> None:
    r = rig(llm_server.settings())
    routed = r.router.ask(CONFIDENT)
    assert routed.route == "local", routed.reason
    assert routed.reason.startswith("local: p=") and "≥τ=0.60" in routed.reason
    assert [c.to_dict() for c in routed.calls] == [
        {"name": "set_light", "arguments": {"room": "kitchen", "on": True}}
    ]
    assert [e.status for e in routed.executions] == ["done"]
    assert r.actions_run() == ["set_light kitchen True"]
    row = r.journal.get(routed.request_id or "")
    assert row.status == "done"
    assert row.result is not None and row.result["route"] == "local"
    assert row.result["reason"] == routed.reason
    assert r.ledger.entries() == []  # nothing was spent


def test_an_unconfident_request_is_offloaded_and_verified(
    rig: Callable[..., Rig], llm_server: LlmServer
) -> None:
    r = rig(llm_server.settings())
    routed = r.router.ask(UNCONFIDENT_ACTUATION)
    assert routed.route == "offload:https", routed.reason
    assert routed.reason.startswith("offload: p=") and "<τ=0.60" in routed.reason
    assert routed.decision.p is not None and routed.decision.p < 0.6
    assert routed.offload is not None and routed.offload.valid, routed.offload
    [call] = routed.calls
    assert call.name == "set_light"
    assert r.actions_run() == [f"set_light {call.arguments['room']} {call.arguments['on']}"]
    out = routed.to_json()
    assert out["route"] == "offload:https" and out["reason"] == routed.reason
    assert out["offload"]["model"] and out["decision"]["cost"]["settled"] > 0


def test_both_routes_over_mqtt(
    rig: Callable[..., Rig], llm_server: LlmServer, broker: Broker, run_bridge: Any
) -> None:
    """The same two requests through mosquitto (TLS, auth, ACL) and the
    cloud-bridge to the real LLM: the confident one never leaves the device."""
    bridge = run_bridge(broker.bridge_settings(llm_server.settings()))
    r = rig(broker.device_settings("dev1", reply_timeout_s=300))
    local = r.router.ask(CONFIDENT)
    assert local.route == "local", local.reason
    assert bridge.stats.answered == 0
    routed = r.router.ask(UNCONFIDENT_ACTUATION)
    assert routed.route == "offload:mqtt", routed.reason
    assert routed.reason.startswith("offload: p=")
    assert routed.offload is not None and routed.offload.valid, routed.offload
    [call] = routed.calls
    assert call.name == "set_light"
    assert r.actions_run() == [
        "set_light kitchen True",
        f"set_light {call.arguments['room']} {call.arguments['on']}",
    ]
    assert bridge.stats.answered == 1
    row = r.journal.get(routed.request_id or "")
    assert row.status == "done" and row.result is not None
    assert row.result["route"] == "offload:mqtt"
    attempts = r.journal.attempts(routed.request_id or "")
    assert [a.record.kind for a in attempts][-1] == "offload"
    assert attempts[-1].record.cost_cloud == pytest.approx(routed.decision.cost)
    [entry] = r.ledger.entries()
    assert entry["state"] == "settled" and entry["idempotency_key"] == routed.idempotency_key


def test_llm_mode_skips_the_slm(rig: Callable[..., Rig], llm_server: LlmServer) -> None:
    r = rig(llm_server.settings())
    routed = r.router.ask(CONFIDENT, mode="llm", execute=False)
    assert routed.route == "offload:https"
    assert routed.reason == "offload: llm mode"
    assert routed.result is None and routed.decision.attempts == 0
    assert [c.name for c in routed.calls] == ["set_light"]
    assert routed.to_json()["attempts"] == []


# ---------------------------------------------------------------- budget and network


def test_an_exhausted_budget_declines_a_read_and_queues_an_actuation(
    rig: Callable[..., Rig], llm_server: LlmServer
) -> None:
    broke = BudgetSettings(
        daily_limit=0,
        monthly_limit=0,
        prices={LLM_MODEL: ModelPrice(input_per_mtok=1, output_per_mtok=2)},
    )
    r = rig(llm_server.settings(), budget=broke)
    declined = r.router.ask(UNRELATED, source="cli")
    assert declined.route == "declined"
    assert declined.reason.startswith("declined: budget 0.00 USD left today")
    assert "<τ=0.60" in declined.reason
    assert r.journal.get(declined.request_id or "").status == "declined"
    queued = r.router.ask(UNCONFIDENT_ACTUATION, source="automation")
    assert queued.route == "queued", queued.reason
    assert queued.reason.startswith("queued: budget 0.00 USD left today")
    assert r.journal.get(queued.request_id or "").status == "queued"
    assert [row.state for row in r.outbox.for_request(queued.request_id or "")] == ["pending"]
    assert r.ledger.entries() == [] and r.actions_run() == []
    [delivery] = r.router.drain_outbox()  # still no money: it waits
    assert delivery.status == "postponed" and "budget 0.00" in delivery.reason


def test_offline_request_is_queued_then_delivered_exactly_once(
    rig: Callable[..., Rig], llm_server: LlmServer
) -> None:
    relay = Relay(port_of(llm_server.base_url))
    endpoint = llm_server.settings(base_url=f"https://127.0.0.1:{relay.port}/v1")
    r = rig(endpoint)
    try:
        queued = r.router.ask(UNCONFIDENT_ACTUATION, source="automation")
        assert queued.route == "queued", queued.reason
        assert queued.reason.startswith("queued: offline (probe failed once")
        rid = queued.request_id or ""
        assert r.journal.get(rid).status == "queued"
        [waiting] = r.router.drain_outbox()
        assert waiting.status == "postponed"  # still offline: nothing waited on the network
        relay.start()  # the network comes back
        r.link_clock.t += 60  # past the probe's back-off
        [delivered] = r.router.drain_outbox()
        assert delivered.status == "delivered", delivered.reason
        assert delivered.idempotency_key == queued.idempotency_key
        assert [c.name for c in delivered.calls] == ["set_light"]
        assert len(r.actions_run()) == 1
        row = r.journal.get(rid)
        assert row.status == "done" and row.result is not None
        assert row.result["route"] == "offload:https"
        assert [o.state for o in r.outbox.for_request(rid)] == ["sent"]
        assert r.router.drain_outbox() == []
        again = rig(endpoint)  # a restart over the same journal
        assert again.router.drain_outbox() == []
        assert len(r.actions_run()) == 1
    finally:
        relay.close()


def test_a_reply_sent_but_not_finished_is_never_run_again(
    rig: Callable[..., Rig], llm_server: LlmServer
) -> None:
    """kill -9 between "the reply was accepted" and "done": the restart
    records a failure instead of running the actuation a second time."""
    r = rig(llm_server.settings())
    accepted = r.journal.accept({"messages": []}, source="automation", idempotency_key="k-1")
    r.journal.queue(accepted.id, "queued: offline")
    request = {
        "v": 1,
        "idempotency_key": "k-1",
        "messages": [{"role": "user", "content": CONFIDENT}],
        "tools": [],
    }
    row = r.outbox.add(accepted.id, "https", {"request": request, "execute": True})
    r.outbox.mark_sent(row)  # ... and then the process died
    assert r.router.drain_outbox() == []
    settled = r.journal.get(accepted.id)
    assert settled.status == "failed" and "not run again" in settled.reason
    assert r.actions_run() == []


# ---------------------------------------------------------------- faults


def test_the_router_refuses_a_second_local_repair(slm: LlamaEngine, registry: Registry) -> None:
    agent = Agent(slm, registry, AgentSettings(repair_attempts=2))
    with pytest.raises(ConfigError, match="one local repair"):
        Router(agent, HeuristicConfidence(), RouterSettings())
    assert cascade_agent_settings(AgentSettings(repair_attempts=3)).repair_attempts == 1


def test_an_unreadable_outbox_entry_is_failed_not_retried(
    rig: Callable[..., Rig], llm_server: LlmServer
) -> None:
    r = rig(llm_server.settings())
    accepted = r.journal.accept({"messages": []}, source="automation", idempotency_key="k-2")
    r.journal.queue(accepted.id, "queued: offline")
    r.outbox.add(accepted.id, "https", {"request": {"v": 99}})
    [delivery] = r.router.drain_outbox()
    assert delivery.status == "failed" and "unreadable outbox entry" in delivery.reason
    assert r.journal.get(accepted.id).status == "failed"
    assert r.router.drain_outbox() == []


# ---------------------------------------------------------------- the benchmark modes


def test_bench_llm_and_cascade_modes_against_the_real_server(
    llm_server: LlmServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bench bfcl --mode llm|cascade` through the CLI against the TLS server:
    every item is scored, offloaded items carry the cloud's price, and the
    cascade records what the SLM would have scored (routing quality)."""
    import json

    from edge_agent import cli

    sample = Path(__file__).resolve().parent.parent / "data" / "bfcl"
    reports = {}
    for mode in ("llm", "cascade"):
        out = tmp_path / f"{mode}.json"
        argv = [
            "bench", "bfcl", "--questions", str(sample / "BFCL_v4_simple_python.json"),
            "--answers", str(sample / "possible_answer" / "BFCL_v4_simple_python.json"),
            "--category", "simple_python", "--limit", "2", "--mode", mode,
            "--model", "qwen2.5-coder-0.5b", "--threads", "1", "--no-progress",
            "--llm-url", llm_server.base_url, "--llm-model", LLM_MODEL,
            "--llm-token-file", str(llm_server.token_file), "--llm-ca", str(llm_server.ca_file),
            "--threshold", "0.99", "--price", "1,2", "--json", str(out),
        ]  # fmt: skip
        assert cli.main(argv) == 0, capsys.readouterr().err
        reports[mode] = json.loads(out.read_text())
    llm, cascade = reports["llm"], reports["cascade"]
    assert llm["offload_rate"] == 1.0 and llm["n"] == 2
    assert all(i["route"] == "offload:https" and i["cloud_cost"] > 0 for i in llm["per_item"])
    assert all(i["slm_correct"] is None for i in llm["per_item"])
    for i in cascade["per_item"]:
        assert i["features"] is not None and 0.0 <= i["p_success"] <= 1.0
        assert isinstance(i["slm_correct"], bool)
        assert (i["cloud_cost"] > 0) == i["route"].startswith("offload")
    offloaded = [i for i in cascade["per_item"] if i["route"].startswith("offload")]
    assert cascade["offload_rate"] == len(offloaded) / 2
    assert llm["cost_per_success"] is None or llm["cost_per_success"] > 0


# ---------------------------------------------------------------- in the daemon


def daemon_config(llm: LlmServer | None, threshold: float, **https: Any) -> dict[str, Any]:
    """Qwen 0.5B on one thread (the LLM server runs beside it) with offload."""
    config: dict[str, Any] = {
        "model": {"name": "qwen2.5-coder-0.5b", "n_threads": 1, "max_tokens": 96},
        "server": {"drain_timeout_s": 600, "request_timeout_s": 1800},
        "router": {"threshold": threshold},
        # Tier 0 straight to the cloud: the 1.5B runs as the LLM stand-in here.
        "ladder": {"enabled": False},
    }
    if llm is not None:
        config["offload.https"] = {
            "base_url": llm.base_url,
            "model": LLM_MODEL,
            "ca_bundle": str(llm.ca_file),
            "token_file": str(llm.token_file),
            "read_timeout_s": 600,
            "max_retries": 0,
        }
        for key, value in https.items():  # None removes a key (TOML has no null)
            if value is None:
                config["offload.https"].pop(key)
            else:
                config["offload.https"][key] = value
    return config


def light_request(**extra: Any) -> dict[str, Any]:
    return {
        "model": "qwen2.5-coder-0.5b",
        "messages": [{"role": "user", "content": CONFIDENT}],
        "x_edge_agent_tools": ["set_light"],
        # not "required": llama-cpp-python's server answers HTTP 500 to it
        "tool_choice": "auto",
        **extra,
    }


@pytest.fixture
def spawn_daemon(tmp_path: Path) -> Iterator[Callable[..., Any]]:
    from tests.daemon.conftest import start_daemon

    started: list[Any] = []

    def spawn(config: dict[str, Any], **kwargs: Any) -> Any:
        daemon = start_daemon(tmp_path, config, **kwargs)
        started.append(daemon)
        return daemon

    yield spawn
    for daemon in started:
        if daemon.alive() or not daemon.log_file.closed:
            daemon.stop(signal.SIGKILL)


def test_the_daemon_routes_api_requests(
    llm_server: LlmServer, spawn_daemon: Callable[..., Any]
) -> None:
    """τ=0: a verified call stays local; τ=1: every request goes to the cloud,
    and comes back through the API as standard tool_calls, verified."""
    local = spawn_daemon(daemon_config(llm_server, 0.0), name="local")
    with local.client() as client:
        body = client.post("/v1/chat/completions", json=light_request()).json()
    assert body["x_edge_agent"]["route"] == "local", body
    local.stop()

    cloud = spawn_daemon(daemon_config(llm_server, 1.0), name="cloud")
    with cloud.client() as client:
        response = client.post("/v1/chat/completions", json=light_request())
        metrics = client.get("/metrics").text
    body = response.json()
    assert response.status_code == 200, body
    assert body["x_edge_agent"]["route"] == "offload:https", body
    [call] = body["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "set_light"
    assert "edge_agent_budget_left_day" in metrics
    assert 'edge_agent_routed_requests_total{route="offload:https"} 1.0' in metrics


def test_an_unreachable_cloud_declines_an_api_read_with_the_reason(
    spawn_daemon: Callable[..., Any], pki: Any
) -> None:
    """A real refused connection (nothing listens): the request is declined
    at once, 503 with the router's reason, and journaled as such."""
    dead = LlmServer(f"https://127.0.0.1:{free_port()}/v1", "t", Path(os.devnull), pki.ca_file)
    daemon = spawn_daemon(daemon_config(dead, 1.0, token_file=None), name="offline")
    with daemon.client() as client:
        response = client.post("/v1/chat/completions", json=light_request())
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert error["code"] == "offload_declined"
    assert error["message"].startswith("declined: offline")
    [row] = daemon.rows()
    assert row["status"] == "declined" and row["reason"] == error["message"]


def test_kill_9_during_an_offload_then_restart_completes_exactly_once(
    llm_server: LlmServer, spawn_daemon: Callable[..., Any], tmp_path: Path
) -> None:
    """The daemon dies while the cloud is answering. The write-ahead outbox
    row shows no reply was used, so the restart sends the request again (same
    idempotency key) and runs the actuation once."""
    import json
    import sqlite3
    import time

    state = tmp_path / "state"
    first = spawn_daemon(daemon_config(llm_server, 1.0), name="first", state_dir=state)
    request = light_request(x_edge_agent_execute=True)
    headers = {**first.headers, "idempotency-key": "kill-9-offload"}
    sender = threading.Thread(target=_post_quietly, args=(first.url, request, headers))
    sender.start()

    def in_flight() -> list[Any]:
        if not first.journal.exists():
            return []
        with contextlib.closing(sqlite3.connect(first.journal, timeout=10)) as db:
            try:
                return db.execute("SELECT state, payload FROM outbox").fetchall()
            except sqlite3.OperationalError:
                return []  # not created yet

    deadline = time.monotonic() + 600
    while not in_flight() and time.monotonic() < deadline:
        time.sleep(0.05)
    [(state_before, payload)] = in_flight()
    assert state_before == "pending" and json.loads(payload)["in_flight"] is True
    first.stop(signal.SIGKILL)
    [row] = first.rows()
    assert row["status"] == "running"  # cut off mid-offload

    second = spawn_daemon(daemon_config(llm_server, 1.0), name="second", state_dir=state)
    [done] = second.wait_rows(lambda rows: rows and rows[0]["status"] in ("done", "failed"))
    assert done["status"] == "done", done["reason"]
    result = json.loads(done["result"])
    assert result["route"] == "offload:https"
    assert [e["status"] for e in result["executions"]] == ["done"]  # ran once
    with contextlib.closing(sqlite3.connect(second.journal, timeout=10)) as db:
        rows = db.execute("SELECT state, last_error FROM outbox ORDER BY id").fetchall()
    assert [r[0] for r in rows] == ["failed", "sent"]
    assert "cut off by a restart" in rows[0][1]
    # The client's retry with the same key gets the stored answer, nothing reruns.
    with second.client() as client:
        again = client.post(
            "/v1/chat/completions", json=request, headers={"idempotency-key": "kill-9-offload"}
        )
    assert again.status_code == 200
    assert again.json()["x_edge_agent"]["request_id"] == done["id"]
    assert [r["status"] for r in second.rows()] == ["done"]
    sender.join(60)


def _post_quietly(url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
    import httpx

    with contextlib.suppress(httpx.HTTPError):
        httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=600)
