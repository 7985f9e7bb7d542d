"""Crash soak: kill -9 the daemon at random moments while it works, restart
it, and count what was lost, what ran twice and what never finished.

Everything runs on loopback: the real daemon (``python -m edge_agent run``,
SmolLM2 by default, so a cycle takes seconds), a real mosquitto with TLS, a
simulated device on MQTT (``firmware_bridge.simulator``), and a cloud
stand-in: a scripted OpenAI-compatible HTTPS server (a fake, named as one:
the daemon's durability is under test here, not a cloud model) that records
every request and its idempotency key.

Each cycle sends API requests (streamed, each with an idempotency key, as a
careful client does), publishes a sensor reading that fires a rule whose
agent actuates the device, lets the router offload requests to the
stand-in, and kills the daemon with SIGKILL after a random delay. It then
restarts the daemon, and every client whose stream broke asks again with
the same key until it has an answer. At the end the three sides are
compared:

* what clients were told was accepted (the stream's first chunk names the
  journaled request) and what the journal shows for each;
* what the journal and the outbox hold (nothing may stay pending);
* what the device executed (by command ``seq``, and per request in the
  audit) and what the stand-in received (by idempotency key).

    python benchmarks/soak.py --cycles 100 --json soak.json

``tests/daemon/test_soak.py`` runs 5 cycles in CI.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sqlite3
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edge_agent.iot.mqtt_link import DeviceMqttLink  # noqa: E402
from firmware_bridge.simulator import SimulatedDevice  # noqa: E402
from tests.daemon.conftest import (  # noqa: E402
    SMOL,
    DaemonProcess,
    free_port,
    run_daemon,
    sse_events,
)
from tests.iot.conftest import NODE, IotBroker, broker_table  # noqa: E402
from tests.offload.conftest import Answer, RawClient, ScriptedLLM, make_pki  # noqa: E402
from tests.offload.conftest import completion as cloud_completion  # noqa: E402

TOKEN = "soak-token-0123456789abcdef"
PROMPTS = (
    "Say hello in five words.",
    "Name three colours.",
    "What is two plus two?",
)
TERMINAL = {"done", "failed", "declined"}


@dataclass
class ClientRecord:
    """One API request as its client saw it."""

    key: str
    request_ids: set[str] = field(default_factory=set)  # every id a response named
    accepted: bool = False  # a stream's first chunk arrived: the request is journaled
    answered: bool = False
    status: int | None = None  # of the final answer
    broken: int = 0  # streams cut by a kill


@dataclass
class SoakReport:
    cycles: int
    kills: int
    api_requests: int
    api_accepted: int
    api_answered: int
    accepted_lost: int
    pending: int
    readings: int
    automation_jobs: int
    actuations: int  # what the device carried out
    actuations_audited: int  # acked actuations the audit names a request for
    duplicate_actuations: int  # a request's actuator acted on more than once
    cloud_requests: int
    cloud_keys_resent: int
    duplicate_cloud_calls: int
    failed: dict[str, int]
    decision_only_failed_by_kills: int
    wall_s: float
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (
            self.accepted_lost
            or self.pending
            or self.duplicate_actuations
            or self.duplicate_cloud_calls
            or self.decision_only_failed_by_kills
            or self.failures
        )


def config_text(broker: IotBroker, cloud: ScriptedLLM, ca_file: Path) -> str:
    return f"""
[model]
name = "{SMOL}"
n_threads = 2
max_tokens = 64
n_ctx = 2048
prefix_cache = false

[agent]
max_steps = 1

[ladder]
enabled = false

[router]
threshold = 0.9

[offload.https]
base_url = "{cloud.base_url}"
ca_bundle = "{ca_file}"
read_timeout_s = 20
max_retries = 0

[server]
request_timeout_s = 3600
drain_timeout_s = 60

[automation]
node_id = "{NODE}"

{broker_table(broker)}

[automation.devices]
mqtt = true

[[automation.sensors]]
topic = "home/sensors/+"
field = "temperature"
unit = "C"

[[automation.rules]]
name = "hot"
sensor = "home/sensors/*"
when = {{ kind = "threshold", above = 28 }}
debounce_s = 0
[[automation.rules.actions]]
do = "agent"
instruction = "It is too warm: set the sim1 light to 40 percent brightness."
tools = ["set_sim1_light"]
"""


class Soak:
    """The rig: broker, device, cloud stand-in and the daemon, restartable."""

    def __init__(self, folder: Path, stack: ExitStack, seed: int) -> None:
        self.folder = folder
        self.rng = random.Random(seed)
        (folder / "pki").mkdir()
        self.pki = make_pki(folder / "pki")
        (folder / "broker").mkdir()
        self.broker = IotBroker(folder / "broker", self.pki)
        self.broker.start()
        stack.callback(self.broker.stop)
        answer = Answer(body=cloud_completion(content="The cloud answers."))
        self.cloud = ScriptedLLM(self.pki.cert_file, self.pki.key_file, [answer])
        stack.callback(self.cloud.close)
        self.device = SimulatedDevice("sim1")
        self.device.serve_link(DeviceMqttLink(self.broker.settings("sim1"), self.device.id))
        stack.callback(self.device.close)
        self.sensors = RawClient(self.broker, "sensors")
        self.config = folder / "soak.toml"
        self.config.write_text(config_text(self.broker, self.cloud, self.pki.ca_file))
        self.state = folder / "state"
        self.port = free_port()
        self.daemon: DaemonProcess | None = None
        self.kills = 0
        self.readings = 0
        stack.callback(self.stop)

    # -- the daemon

    def start(self) -> DaemonProcess:
        log_path = self.folder / "daemon.log"
        self.daemon = run_daemon(self.config, self.state, log_path, token=TOKEN, port=self.port)
        return self.daemon

    def kill(self) -> None:
        assert self.daemon is not None
        self.daemon.proc.send_signal(signal.SIGKILL)
        self.daemon.proc.wait(30)
        self.daemon.log_file.close()
        self.kills += 1

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.alive():
            self.daemon.stop(signal.SIGTERM, timeout=120)

    # -- the work

    def fire_rule(self, cycle: int) -> None:
        """A cool reading, then a hot one: the threshold rule fires once."""
        for value in (20.0, 30.0 + cycle % 5):
            payload = json.dumps({"temperature": value, "ts": time.time()}).encode()
            self.sensors.publish("home/sensors/soak", payload)
        self.readings += 2


def ask(soak: Soak, record: ClientRecord, prompt: str) -> None:
    """One careful client: stream with an idempotency key; if the stream
    breaks, ask again with the same key (after the restart) until answered."""
    body = {
        "model": SMOL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "max_tokens": 24,
    }
    headers = {"authorization": f"Bearer {TOKEN}", "idempotency-key": record.key}
    url = f"http://127.0.0.1:{soak.port}/v1/chat/completions"
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline and not record.answered:
        try:
            with httpx.stream("POST", url, json=body, headers=headers, timeout=600) as response:
                if response.status_code != 200:
                    response.read()
                    if response.status_code in (429, 503):
                        time.sleep(0.5)
                        continue
                    record.status, record.answered = response.status_code, True
                    return
                record.request_ids.add(response.headers["x-edge-agent-request-id"])
                events = list(_events(response, record))
            if events and events[-1] == "[DONE]":
                errors = [e for e in events if isinstance(e, dict) and "error" in e]
                record.status = 500 if errors else 200
                record.answered = True
            else:
                record.broken += 1
        except httpx.HTTPError:
            record.broken += 1
            time.sleep(0.3)


def _events(response: httpx.Response, record: ClientRecord) -> Iterator[Any]:
    for event in sse_events(response.iter_lines()):
        if isinstance(event, dict) and event.get("choices") and not record.accepted:
            record.accepted = True  # the role chunk: journaled before it was sent
        yield event


def run_soak(cycles: int, seed: int, folder: Path) -> SoakReport:
    started = time.monotonic()
    records: list[ClientRecord] = []
    with ExitStack() as stack:
        soak = Soak(folder, stack, seed)
        soak.start()
        assert soak.device.synced.wait(30), "the simulated device never synced"
        for cycle in range(cycles):
            clients = []
            for i in range(soak.rng.randint(1, 3)):
                record = ClientRecord(f"soak-{seed}-{cycle}-{i}")
                records.append(record)
                prompt = soak.rng.choice(PROMPTS)
                thread = threading.Thread(target=ask, args=(soak, record, prompt), daemon=True)
                thread.start()
                clients.append(thread)
            soak.fire_rule(cycle)
            time.sleep(soak.rng.uniform(0.0, 3.0))
            soak.kill()
            soak.start()
            for thread in clients:
                thread.join(900)
        report = _compare(soak, records, cycles, started)
    return report


def _compare(soak: Soak, records: list[ClientRecord], cycles: int, started: float) -> SoakReport:
    daemon = soak.daemon
    assert daemon is not None
    quiet = daemon.wait_rows(lambda rs: all(r["status"] in TERMINAL for r in rs), timeout=900)
    time.sleep(2)  # the last actuation's audit row
    rows = {r["id"]: r for r in quiet}
    failures: list[str] = []
    accepted = [r for r in records if r.accepted]
    lost = [r for r in accepted if not r.answered or not (r.request_ids & rows.keys())]
    failures += [f"accepted but lost: {r.key}" for r in lost]
    failures += [f"no answer: {r.key}" for r in records if not r.answered]
    pending = [r for r in rows.values() if r["status"] not in TERMINAL]
    outbox = _count(daemon, "SELECT COUNT(*) FROM outbox WHERE state = 'pending'")
    failed = Counter(
        str(r["reason"] or r["status"]) for r in rows.values() if r["status"] == "failed"
    )
    by_kills = [
        r for r in rows.values()
        if r["status"] == "failed" and "restart" in str(r["reason"])
        and not json.loads(r["payload"]).get("options", {}).get("execute")
    ]  # fmt: skip
    # Every command the device carried out. Its seq numbers start again with
    # each boot of the host, so a request is what tells a repeat apart.
    executed = list(soak.device.log.executed)
    per_request = Counter(
        (rid, d.get("actuator"))
        for _, rid, d in _audit(daemon)
        if d.get("status") == "done" and rid is not None
    )
    resent = Counter(r.headers.get("idempotency-key") for r in soak.cloud.received)
    cloud_keys_by_client = _cloud_keys_per_client(records, rows, soak.cloud)
    return SoakReport(
        cycles=cycles,
        kills=soak.kills,
        api_requests=len(records),
        api_accepted=len(accepted),
        api_answered=sum(r.answered for r in records),
        accepted_lost=len(lost),
        pending=len(pending) + outbox,
        readings=soak.readings,
        automation_jobs=sum(r["source"] == "automation" for r in rows.values()),
        actuations=len(executed),
        actuations_audited=sum(per_request.values()),
        duplicate_actuations=sum(n - 1 for n in per_request.values() if n > 1),
        cloud_requests=len(soak.cloud.received),
        cloud_keys_resent=sum(n - 1 for n in resent.values() if n > 1),
        duplicate_cloud_calls=sum(len(keys) - 1 for keys in cloud_keys_by_client if len(keys) > 1),
        failed=dict(failed),
        decision_only_failed_by_kills=len(by_kills),
        wall_s=round(time.monotonic() - started, 1),
        failures=failures,
    )


def _cloud_keys_per_client(
    records: list[ClientRecord], rows: dict[str, dict[str, Any]], cloud: ScriptedLLM
) -> list[set[str]]:
    """For each client request, the idempotency keys its offloads carried:
    more than one means the cloud saw the same request as two."""
    sent: Counter[str] = Counter(str(r.headers.get("idempotency-key")) for r in cloud.received)
    out = []
    for record in records:
        keys = {k for k in sent if k == record.key or k in record.request_ids}
        out.append(keys)
    return out


def _count(daemon: DaemonProcess, query: str) -> int:
    with closing(sqlite3.connect(daemon.journal, timeout=10)) as db:
        try:
            return int(db.execute(query).fetchone()[0])
        except sqlite3.OperationalError:
            return 0  # no outbox table: nothing was ever queued


def _audit(daemon: DaemonProcess) -> list[tuple[str, str | None, dict[str, Any]]]:
    with closing(sqlite3.connect(daemon.journal, timeout=10)) as db:
        rows = db.execute("SELECT kind, request_id, detail FROM audit ORDER BY id").fetchall()
    return [(k, r, json.loads(d)) for k, r, d in rows if k == "actuation"]


@contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="edge-agent-soak-") as tmp:
        yield Path(tmp)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write the report here too")
    parser.add_argument("--keep", type=Path, help="keep the rig's files (logs, journal) here")
    args = parser.parse_args()
    with _workdir(args.keep) as folder:
        report = run_soak(args.cycles, args.seed, folder)
    out = {**asdict(report), "ok": report.ok}
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
