"""Is the cloud reachable? A cached probe with back-off, and a circuit breaker.

Two pure state machines, driven by an injectable clock (tests never sleep),
and a thin shell around them:

* :class:`ProbeCache` remembers the last probe. A success is trusted for
  ``online_cache_s``; after a failure the link counts as offline until the
  next probe is due, ``backoff_initial_s · 2^(failures-1)`` later (capped at
  ``backoff_max_s``), shortened by a random share of up to
  ``backoff_jitter`` so that a fleet that lost the network together does not
  re-probe in lockstep when it returns. Between probes nobody waits on a dead network: the
  answer comes from the cache at once.
* :class:`CircuitBreaker` watches real cloud calls. After
  ``breaker_failures`` consecutive failures it *opens* and refuses calls for
  ``breaker_cooldown_s``; then it is *half-open* and lets one trial call
  through: a success closes it, a failure opens it again.
* :class:`Connectivity` asks the breaker, then the cache (probing when a
  probe is due, with a short timeout), and says why in one line.

The probes (:func:`tcp_probe`, :func:`tls_probe`, :func:`head_probe`) are the
only I/O here; each raises ``OSError`` (or an httpx error) on failure. A TLS
probe verifies the certificate, so a wrong certificate reads as "offline":
the device cannot use that endpoint either way.
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from edge_agent.errors import ConfigError

log = logging.getLogger(__name__)

BreakerState = Literal["closed", "open", "half_open"]
ProbeKind = Literal["tcp", "tls", "head", "none"]
Probe = Callable[[], None]
"""Returns when the endpoint answered; raises when it did not."""


class ConnectivitySettings(BaseModel):
    """How the device decides that the cloud is reachable."""

    model_config = ConfigDict(extra="forbid")

    probe: ProbeKind = Field(
        "tcp",
        description="tcp: connect; tls: connect and verify the certificate; head: an HTTP "
        "HEAD to the endpoint (any status counts as online); none: assume online",
    )
    timeout_s: float = Field(2.0, gt=0, le=60, description="longest a probe may take")
    online_cache_s: float = Field(
        30.0, ge=0, le=3600, description="how long a successful probe is trusted"
    )
    backoff_initial_s: float = Field(
        1.0, gt=0, le=3600, description="wait before re-probing after the first failure"
    )
    backoff_max_s: float = Field(
        300.0, gt=0, le=86400, description="longest wait between probes while offline"
    )
    backoff_jitter: float = Field(
        0.2,
        ge=0,
        le=1,
        description="up to this share of each back-off wait is cut at random, so devices "
        "that went offline together do not probe again in lockstep",
    )
    breaker_failures: int = Field(
        5, ge=1, le=1000, description="consecutive cloud failures that open the breaker"
    )
    breaker_cooldown_s: float = Field(
        60.0, gt=0, le=86400, description="how long an open breaker refuses calls"
    )

    @model_validator(mode="after")
    def _backoff_ordered(self) -> ConnectivitySettings:
        if self.backoff_initial_s > self.backoff_max_s:
            raise ValueError("backoff_initial_s must not exceed backoff_max_s")
        return self


@dataclass(frozen=True)
class LinkStatus:
    """Whether a cloud call may be made now, and why (one line)."""

    ok: bool
    reason: str


# ---------------------------------------------------------------- pure state machines


def backoff_delay(failures: int, initial_s: float, max_s: float) -> float:
    """Wait after ``failures`` consecutive failures: initial · 2^(failures-1), capped."""
    if failures <= 0:
        return 0.0
    return min(max_s, initial_s * 2.0 ** min(failures - 1, 60))


class ProbeCache:
    """The last probe's verdict and when to probe again (pure)."""

    def __init__(
        self, settings: ConnectivitySettings, rand: Callable[[], float] = random.random
    ) -> None:
        self.settings = settings
        self._rand = rand  # uniform in [0, 1): the jitter's source
        self.online: bool | None = None  # None: never probed
        self.failures = 0
        self.checked_at: float | None = None
        self.next_at = float("-inf")
        self.error = ""

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, now: float, error: str = "") -> None:
        self.checked_at = now
        self.online = ok
        if ok:
            self.failures, self.error = 0, ""
            self.next_at = now + self.settings.online_cache_s
            return
        self.failures += 1
        self.error = error
        s = self.settings
        wait = backoff_delay(self.failures, s.backoff_initial_s, s.backoff_max_s)
        self.next_at = now + wait * (1.0 - s.backoff_jitter * self._rand())

    def expire(self) -> None:
        """Forget a success (a real call just failed): probe before trusting it."""
        if self.online:
            self.next_at = float("-inf")

    def view(self, now: float) -> LinkStatus:
        if self.online:
            return LinkStatus(True, "online")
        wait = max(0.0, self.next_at - now)
        times = "once" if self.failures == 1 else f"{self.failures}x"
        detail = f": {self.error}" if self.error else ""
        return LinkStatus(False, f"offline (probe failed {times}{detail}; next in {wait:.0f}s)")


class CircuitBreaker:
    """Closed → open after K consecutive failures → half-open after a
    cooldown (one trial at a time) → closed on success, open on failure."""

    def __init__(
        self, failures: int, cooldown_s: float, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if failures < 1 or cooldown_s <= 0:
            raise ValueError("the breaker needs failures >= 1 and cooldown_s > 0")
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self.consecutive = 0
        self._opened_at: float | None = None
        self._trial = False  # a half-open trial call is in flight

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at < self.cooldown_s:
            return "open"
        return "half_open"

    def allow(self) -> bool:
        """May a call go out now? In half-open, only one trial at a time."""
        with self._lock:
            state = self.state
            if state == "closed":
                return True
            if state == "open" or self._trial:
                return False
            self._trial = True
            return True

    def release(self) -> None:
        """A granted trial was not used (the call never went out)."""
        with self._lock:
            self._trial = False

    def record_success(self) -> None:
        with self._lock:
            self.consecutive = 0
            self._opened_at = None
            self._trial = False

    def record_failure(self) -> None:
        with self._lock:
            self.consecutive += 1
            if self._trial or self.consecutive >= self.threshold:
                self._opened_at = self._clock()
            self._trial = False

    def describe(self) -> str:
        state = self.state
        if state == "closed":
            return "closed"
        if state == "half_open":
            return f"half-open after {self.consecutive} consecutive failures"
        assert self._opened_at is not None
        wait = max(0.0, self.cooldown_s - (self._clock() - self._opened_at))
        return f"circuit open ({self.consecutive} consecutive failures; retry in {wait:.0f}s)"


# ---------------------------------------------------------------- the shell


class Connectivity:
    """The breaker and the probe cache together; probes only when due."""

    def __init__(
        self,
        settings: ConnectivitySettings,
        probe: Probe | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._probe = probe
        self._clock = clock
        self._lock = threading.Lock()
        self.cache = ProbeCache(settings)
        self.breaker = CircuitBreaker(
            settings.breaker_failures, settings.breaker_cooldown_s, clock=clock
        )

    def link(self) -> LinkStatus:
        """The network alone (probing if due), not the breaker."""
        if self._probe is None or self.settings.probe == "none":
            return LinkStatus(True, "online (not probed)")
        with self._lock:
            now = self._clock()
            if self.cache.due(now):
                ok, error = _run(self._probe)
                self.cache.record(ok, self._clock(), error)
            return self.cache.view(self._clock())

    def status(self) -> LinkStatus:
        """May a cloud call go out now? Asks the breaker (taking the half-open
        trial slot if it grants one), then the network."""
        if self.breaker.state == "open":
            return LinkStatus(False, self.breaker.describe())
        link = self.link()
        if not link.ok:
            return link
        if not self.breaker.allow():
            return LinkStatus(False, self.breaker.describe())
        return link

    def cancel(self) -> None:
        """A call that :meth:`status` allowed was not made after all."""
        self.breaker.release()

    def record_success(self) -> None:
        """A cloud call succeeded: the link is up and the breaker closes."""
        self.breaker.record_success()
        with self._lock:
            self.cache.record(True, self._clock())

    def record_failure(self, *, network: bool = True) -> None:
        """A cloud call failed; ``network`` failures also distrust the cached
        "online" until the next probe."""
        self.breaker.record_failure()
        if network:
            with self._lock:
                self.cache.expire()


def _run(probe: Probe) -> tuple[bool, str]:
    """Run one probe. A failure to reach the endpoint means offline; any
    other exception is a bug in the probe, logged with its traceback and
    reported as a probe error (still not online), never as plain "offline"."""
    try:
        probe()
    except Exception as exc:
        if _is_network_failure(exc):
            return False, f"{type(exc).__name__}: {exc}"[:200]
        log.exception("the connectivity probe itself failed (a bug, not the network)")
        return False, f"probe error, not a network failure: {type(exc).__name__}: {exc}"[:200]
    return True, ""


def _is_network_failure(exc: BaseException) -> bool:
    """Sockets, TLS and timeouts (OSError), and httpx's transport errors."""
    return isinstance(exc, OSError) or type(exc).__module__.split(".")[0] in {"httpx", "httpcore"}


# ---------------------------------------------------------------- probes (I/O)


def tcp_probe(host: str, port: int, timeout_s: float) -> Probe:
    def probe() -> None:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass

    return probe


def tls_probe(host: str, port: int, timeout_s: float, ca_bundle: Path | None = None) -> Probe:
    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)

    def probe() -> None:
        with (
            socket.create_connection((host, port), timeout=timeout_s) as raw,
            context.wrap_socket(raw, server_hostname=host),
        ):
            pass

    return probe


def head_probe(url: str, timeout_s: float, ca_bundle: Path | None = None) -> Probe:
    """Any HTTP answer (even 401 or 404) means the endpoint is reachable."""
    import httpx

    context = ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)

    def probe() -> None:
        with httpx.Client(verify=context, timeout=timeout_s, trust_env=False) as client:
            client.head(url)

    return probe


def endpoint_probe(
    url: str, settings: ConnectivitySettings, ca_bundle: Path | None = None
) -> Probe | None:
    """The configured probe for an http(s):// or mqtt(s):// endpoint URL."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        raise ConfigError(f"cannot probe {url!r}: no host in it")
    secure = parts.scheme in ("https", "mqtts")
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 443)
    if settings.probe == "none":
        return None
    if settings.probe == "head":
        return head_probe(url, settings.timeout_s, ca_bundle)
    if settings.probe == "tls" and secure:
        return tls_probe(host, port, settings.timeout_s, ca_bundle)
    return tcp_probe(host, port, settings.timeout_s)


_DEFAULT_PORTS = {"https": 443, "http": 80, "mqtts": 8883, "mqtt": 1883}


__all__ = [
    "CircuitBreaker",
    "Connectivity",
    "ConnectivitySettings",
    "LinkStatus",
    "ProbeCache",
    "backoff_delay",
    "endpoint_probe",
    "head_probe",
    "tcp_probe",
    "tls_probe",
]
