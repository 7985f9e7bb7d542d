"""The connectivity probe cache and the circuit breaker: pure state machines
driven by a settable clock (nothing sleeps), then the real probes against
real sockets on 127.0.0.1."""

from __future__ import annotations

import random
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import trustme
from pydantic import ValidationError

from edge_agent.routing.connectivity import (
    CircuitBreaker,
    Connectivity,
    ConnectivitySettings,
    ProbeCache,
    backoff_delay,
    endpoint_probe,
    head_probe,
    tcp_probe,
    tls_probe,
)


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class ScriptedProbe:
    """The probe's outcomes in order; counts how often it was asked."""

    def __init__(self, *outcomes: bool) -> None:
        self.outcomes = list(outcomes)
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        ok = self.outcomes.pop(0) if len(self.outcomes) > 1 else self.outcomes[0]
        if not ok:
            raise ConnectionRefusedError("refused")


def link_settings(**overrides: Any) -> ConnectivitySettings:
    values: dict[str, Any] = {
        "online_cache_s": 30,
        "backoff_initial_s": 1,
        "backoff_max_s": 8,
        "breaker_failures": 3,
        "breaker_cooldown_s": 60,
    }
    return ConnectivitySettings(**{**values, **overrides})


# ---------------------------------------------------------------- pure parts


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff_delay(n, 1.0, 8.0) for n in range(7)] == [0, 1, 2, 4, 8, 8, 8]
    assert backoff_delay(10_000, 0.5, 300.0) == 300.0  # no overflow


def test_settings_are_checked() -> None:
    with pytest.raises(ValidationError):
        ConnectivitySettings(backoff_initial_s=10, backoff_max_s=1)
    with pytest.raises(ValidationError):
        ConnectivitySettings(probe="ping")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ConnectivitySettings.model_validate({"timeout": 1})
    for name, field in ConnectivitySettings.model_fields.items():
        assert field.description, name


def test_probe_cache_trusts_a_success_for_a_while() -> None:
    cache = ProbeCache(link_settings())
    assert cache.due(0.0)  # never probed
    cache.record(True, 100.0)
    assert not cache.due(129.9)
    assert cache.due(130.0)
    assert cache.view(110.0).ok


def test_probe_cache_backs_off_after_failures() -> None:
    cache = ProbeCache(link_settings(), rand=lambda: 0.0)  # no jitter drawn
    now = 100.0
    waits = []
    for _ in range(5):
        cache.record(False, now, "refused")
        waits.append(cache.next_at - now)
        now = cache.next_at
    assert waits == [1, 2, 4, 8, 8]
    status = cache.view(now - 3)
    assert not status.ok
    assert status.reason == "offline (probe failed 5x: refused; next in 3s)"
    cache.record(True, now)
    assert cache.failures == 0 and cache.view(now).ok


def test_probe_cache_jitter_spreads_a_fleet_of_devices() -> None:
    """Devices that lose the network together must not all re-probe at the
    same instant when it returns: each wait is cut by a random share of up
    to ``backoff_jitter`` (default 0.2)."""
    settings = ConnectivitySettings.model_validate({"backoff_initial_s": 10.0})
    assert settings.backoff_jitter == 0.2
    waits = []
    for seed in range(50):
        cache = ProbeCache(settings, rand=random.Random(seed).random)
        cache.record(False, 0.0, "refused")
        waits.append(cache.next_at)
    assert all(8.0 < w <= 10.0 for w in waits)
    assert len({round(w, 6) for w in waits}) == 50


def test_probe_cache_expire_forgets_only_a_success() -> None:
    cache = ProbeCache(link_settings())
    cache.record(True, 0.0)
    cache.expire()
    assert cache.due(0.0)
    cache.record(False, 0.0)
    cache.expire()
    assert not cache.due(0.5)  # the back-off stands


def test_breaker_opens_after_k_consecutive_failures() -> None:
    clock = Clock()
    breaker = CircuitBreaker(3, 60, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # not consecutive any more
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed" and breaker.allow()
    breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    assert breaker.describe() == "circuit open (3 consecutive failures; retry in 60s)"
    clock.t += 59
    assert not breaker.allow()


def test_half_open_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 10, clock=clock)
    breaker.record_failure()
    clock.t += 10
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.record_failure()  # the trial failed: open again, a fresh cooldown
    assert breaker.state == "open"
    clock.t += 10
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed" and breaker.consecutive == 0
    assert breaker.allow() and breaker.allow()


def test_an_unused_trial_is_released() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5, clock=clock)
    breaker.record_failure()
    clock.t += 5
    assert breaker.allow()
    breaker.release()
    assert breaker.allow()


def test_breaker_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(0, 1)
    with pytest.raises(ValueError):
        CircuitBreaker(1, 0)


def test_connectivity_probes_only_when_due() -> None:
    clock = Clock()
    probe = ScriptedProbe(True)
    link = Connectivity(link_settings(), probe, clock=clock)
    for _ in range(5):
        assert link.status().ok
        clock.t += 5
    assert probe.calls == 1  # 20 s < online_cache_s
    clock.t += 30
    assert link.status().ok
    assert probe.calls == 2


def test_a_bug_in_the_probe_is_not_reported_as_offline(caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> None:
        raise TypeError("create_connection() got an unexpected keyword argument")

    status = Connectivity(link_settings(), broken, clock=Clock()).status()
    assert not status.ok
    assert "probe error, not a network failure: TypeError" in status.reason
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)


def test_a_dead_network_is_answered_from_the_cache() -> None:
    clock = Clock()
    probe = ScriptedProbe(False, False, True)
    link = Connectivity(link_settings(), probe, clock=clock)
    assert not link.status().ok
    assert not link.status().ok  # within the 1 s back-off: no probe
    assert probe.calls == 1
    clock.t += 1
    assert "probe failed 2x" in link.status().reason
    clock.t += 1.5
    assert not link.status().ok  # back-off is now 2 s
    assert probe.calls == 2
    clock.t += 0.5
    assert link.status().ok
    assert probe.calls == 3


def test_connectivity_reports_the_open_breaker() -> None:
    clock = Clock()
    link = Connectivity(link_settings(breaker_failures=2), ScriptedProbe(True), clock=clock)
    link.record_failure()
    link.record_failure()
    status = link.status()
    assert not status.ok
    assert status.reason.startswith("circuit open (2 consecutive failures")
    clock.t += 60
    assert link.status().ok  # half-open: the trial call may go
    assert not link.status().ok  # and only one
    link.record_success()
    assert link.status().ok


def test_a_network_failure_forces_a_fresh_probe() -> None:
    clock = Clock()
    probe = ScriptedProbe(True, False)
    link = Connectivity(link_settings(), probe, clock=clock)
    assert link.status().ok
    link.record_failure(network=True)
    assert not link.status().ok
    assert probe.calls == 2


def test_no_probe_means_assumed_online() -> None:
    assert Connectivity(link_settings()).status().reason == "online (not probed)"


# ---------------------------------------------------------------- real probes


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield int(sock.getsockname()[1])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_tcp_probe_against_real_sockets(listener: int) -> None:
    tcp_probe("127.0.0.1", listener, 1.0)()
    with pytest.raises(OSError):
        tcp_probe("127.0.0.1", closed_port(), 1.0)()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, Path]]:
    """A real HTTPS server on 127.0.0.1, its CA, and an unrelated CA."""
    folder = tmp_path_factory.mktemp("tls")
    ca, other = trustme.CA(), trustme.CA()
    ca_file, other_file = folder / "ca.pem", folder / "other.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    other.cert_pem.write_to_path(str(other_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], ca_file, other_file
    server.shutdown()
    server.server_close()


def test_tls_probe_verifies_the_certificate(tls_server: tuple[int, Path, Path]) -> None:
    port, ca_file, other_file = tls_server
    tls_probe("127.0.0.1", port, 2.0, ca_file)()
    with pytest.raises(ssl.SSLError):
        tls_probe("127.0.0.1", port, 2.0, other_file)()


def test_head_probe_counts_any_http_answer(tls_server: tuple[int, Path, Path]) -> None:
    port, ca_file, _ = tls_server
    head_probe(f"https://127.0.0.1:{port}/v1", 2.0, ca_file)()  # a 404 is still an answer
    with pytest.raises(Exception):  # noqa: B017 - httpx's ConnectError
        head_probe(f"https://127.0.0.1:{closed_port()}/v1", 1.0, ca_file)()


def test_endpoint_probe_picks_the_configured_kind(tls_server: tuple[int, Path, Path]) -> None:
    port, ca_file, _ = tls_server
    url = f"https://127.0.0.1:{port}/v1"
    for kind in ("tcp", "tls", "head"):
        probe = endpoint_probe(url, ConnectivitySettings(probe=kind), ca_file)
        assert probe is not None
        probe()
    assert endpoint_probe(url, ConnectivitySettings(probe="none")) is None
    down = Connectivity(
        ConnectivitySettings(),
        endpoint_probe(f"https://127.0.0.1:{closed_port()}/v1", ConnectivitySettings()),
    )
    assert down.status().reason.startswith("offline (probe failed once: ConnectionRefusedError")
