"""The ``cloud-bridge``: the server side of MQTT offload.

It subscribes to the devices' request topics (a shared subscription by
default, so several bridges can split the load), forwards each request to an
OpenAI-compatible endpoint through a transport (HTTPS by default), and
publishes the answer to the request's ResponseTopic with the same
CorrelationData, at QoS 1.

Rules it keeps:

* **Never crash on input.** A request that is not JSON, misses fields or
  lacks ResponseTopic/CorrelationData gets an error reply (``ok: false``),
  as does an endpoint failure (with its ``retryable`` flag).
* **A device answers only itself.** When the request topic ends in
  ``/request`` the ResponseTopic must be its sibling ``/reply``; a request
  naming another device's reply topic is refused, so a device cannot make the
  bridge write into someone else's topic. The broker's ACL is the other half.
* **Repeats are cheap.** Replies are cached by (request topic, idempotency
  key) for ``dedup_window_s``; a repeat is answered from the cache, and a
  repeat that arrives while the first is still running waits for it. Reusing
  a key for a different request is refused. Retryable failures are not cached.
* **At least once.** A request is acknowledged to the broker (manual PUBACK)
  only after its reply has been handed to the broker, so a bridge killed
  mid-request gets the request again from its persistent session.

The cache lives in memory: after a restart a repeat is generated again.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt
from pydantic import Field

from edge_agent.errors import EdgeAgentError, InputError
from edge_agent.routing.offload.base import (
    OffloadRequest,
    OffloadTransport,
    error_to_wire,
    reply_to_wire,
    request_from_wire,
    request_to_wire,
)
from edge_agent.routing.offload.https import HttpsOffloadSettings, HttpsTransport
from edge_agent.routing.offload.mqtt import BrokerLink, BrokerSettings, publish_properties

__all__ = ["BridgeStats", "CloudBridge", "CloudBridgeSettings", "ReplyCache"]

log = logging.getLogger(__name__)


class CloudBridgeSettings(BrokerSettings):
    """The cloud-bridge: its broker connection, topics, and the LLM endpoint."""

    client_id: str = Field(
        "edge-agent-cloud-bridge",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$",
        description="MQTT client id (one per bridge instance; it names the persistent session)",
    )
    device_topic: str = Field(
        "edge-agent/+/offload/request",
        min_length=1,
        max_length=512,
        description="topic filter of the devices' requests",
    )
    share_group: str | None = Field(
        "edge-agent-bridge",
        pattern=r"^[A-Za-z0-9_\-]{1,64}$",
        description="shared-subscription group ($share/GROUP/...); None = a plain subscription",
    )
    workers: int = Field(2, ge=1, le=64, description="requests forwarded at the same time")
    dedup_window_s: float = Field(
        600.0, ge=0, le=86400, description="how long a reply answers repeats of its key"
    )
    dedup_max_entries: int = Field(1024, ge=1, le=1_000_000, description="replies cached at most")
    max_request_bytes: int = Field(
        262_144, ge=1024, le=16_777_216, description="larger requests get an error reply"
    )
    reply_expiry_s: int = Field(
        300, ge=1, le=86400, description="MessageExpiryInterval of the replies"
    )
    endpoint: HttpsOffloadSettings = Field(description="the OpenAI-compatible LLM endpoint")

    @property
    def subscription(self) -> str:
        if self.share_group:
            return f"$share/{self.share_group}/{self.device_topic}"
        return self.device_topic


@dataclass
class BridgeStats:
    """Counters, for logs and tests: ``answered`` by the endpoint, ``from_cache``
    repeats, ``malformed`` requests refused, ``failed`` endpoint calls."""

    received: int = 0
    answered: int = 0
    from_cache: int = 0
    malformed: int = 0
    failed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def bump(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)


@dataclass
class _Entry:
    fingerprint: str
    future: Future[bytes]
    created: float
    keep: bool = True


class ReplyCache:
    """Replies by key for ``window_s`` seconds, at most ``max_entries``.

    :meth:`claim` returns ``(future, owner)``: the owner computes the reply
    and calls :meth:`finish`; everyone else waits on the future.
    """

    def __init__(
        self, window_s: float, max_entries: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()
        self._lock = threading.Lock()

    def claim(self, key: tuple[str, str], fingerprint: str) -> tuple[Future[bytes], bool]:
        with self._lock:
            self._expire()
            entry = self._entries.get(key)
            if entry is not None:
                if entry.fingerprint != fingerprint:
                    raise InputError(f"idempotency key {key[1]!r} was used for a different request")
                return entry.future, False
            future: Future[bytes] = Future()
            self._entries[key] = _Entry(fingerprint, future, self._clock())
            return future, True

    def finish(self, key: tuple[str, str], payload: bytes, *, keep: bool) -> None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and not keep:
                del self._entries[key]
        if entry is not None:
            entry.future.set_result(payload)

    def _expire(self) -> None:
        now = self._clock()
        for key, entry in list(self._entries.items()):
            too_many = len(self._entries) > self.max_entries
            if not entry.future.done() or not (too_many or now - entry.created > self.window_s):
                break  # oldest first: nothing after it is due
            del self._entries[key]


@dataclass(frozen=True)
class _Inbound:
    """One request message, as much of it as the bridge needs."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    response_topic: str | None
    correlation: bytes | None

    @classmethod
    def of(cls, message: mqtt.MQTTMessage) -> _Inbound:
        props = message.properties
        response = getattr(props, "ResponseTopic", None)
        correlation = getattr(props, "CorrelationData", None)
        return cls(
            topic=message.topic,
            payload=bytes(message.payload),
            mid=message.mid,
            qos=message.qos,
            response_topic=response if isinstance(response, str) and response else None,
            correlation=correlation if isinstance(correlation, bytes) else None,
        )


class CloudBridge:
    """Forwards MQTT offload requests to an LLM endpoint and publishes replies.

    ``transport`` is injected for tests and other endpoints; by default an
    :class:`HttpsTransport` is built from ``settings.endpoint`` and closed with
    the bridge.
    """

    def __init__(
        self, settings: CloudBridgeSettings, *, transport: OffloadTransport | None = None
    ) -> None:
        self.settings = settings
        self.stats = BridgeStats()
        self._owns_transport = transport is None
        self._transport: OffloadTransport = transport or HttpsTransport(settings.endpoint)
        self._cache = ReplyCache(settings.dedup_window_s, settings.dedup_max_entries)
        self._closing = False
        self._pool = ThreadPoolExecutor(settings.workers, thread_name_prefix="cloud-bridge")
        self._link = BrokerLink(
            settings,
            client_id=settings.client_id,
            subscriptions=(settings.subscription,),
            manual_ack=True,
        )
        self._link.on_message = self._on_message

    def __repr__(self) -> str:
        return f"CloudBridge({self._link!r}, topic={self.settings.subscription!r})"

    def __enter__(self) -> CloudBridge:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_connected(self) -> bool:
        return self._link.is_connected

    def start(self) -> None:
        """Connect and subscribe; raises OffloadError if the broker refuses."""
        self._link.connect()
        log.info("cloud-bridge subscribed to %s", self.settings.subscription)

    def serve_forever(self, stop: threading.Event) -> None:
        """Start, then serve until ``stop`` is set (the CLI sets it on SIGTERM)."""
        self.start()
        stop.wait()

    def close(self) -> None:
        """Finish the requests in hand, then disconnect. Requests that arrive
        meanwhile are left unacknowledged, so the broker redelivers them."""
        self._closing = True
        self._pool.shutdown(wait=True)
        self._link.close()
        if self._owns_transport:
            self._transport.close()

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        """On paho's thread: hand over to a worker at once."""
        if self._closing:
            return  # left unacknowledged: the broker redelivers it
        self.stats.bump("received")
        with contextlib.suppress(RuntimeError):  # the pool shut down meanwhile
            self._pool.submit(self._handle, _Inbound.of(message))

    def _handle(self, inbound: _Inbound) -> None:
        try:
            self._answer(inbound)
        except Exception:  # a bug must not take the bridge down; log it loudly
            log.exception("cloud-bridge failed on a request from %s", inbound.topic)
            self.stats.bump("failed")
            self._reply(
                inbound,
                _own_reply_topic(inbound.topic),
                error_to_wire("internal error in the cloud-bridge", retryable=True),
            )

    def _answer(self, inbound: _Inbound) -> None:
        expected = _own_reply_topic(inbound.topic)
        problem = self._check_envelope(inbound, expected)
        if problem is not None:
            self.stats.bump("malformed")
            log.warning("refusing a request on %s: %s", inbound.topic, problem)
            self._reply(inbound, expected, error_to_wire(problem, retryable=False))
            return
        assert inbound.response_topic is not None  # checked above
        try:
            request = request_from_wire(inbound.payload)
            key = (inbound.topic, request.idempotency_key)
            future, owner = self._cache.claim(key, _fingerprint(request))
        except InputError as exc:
            self.stats.bump("malformed")
            self._reply(
                inbound, inbound.response_topic, error_to_wire(exc.message, retryable=False)
            )
            return
        if owner:
            self._forward(key, request)
        else:
            self.stats.bump("from_cache")
        future.add_done_callback(
            lambda done: self._reply(inbound, inbound.response_topic, done.result())
        )

    def _check_envelope(self, inbound: _Inbound, expected: str | None) -> str | None:
        if len(inbound.payload) > self.settings.max_request_bytes:
            return f"request larger than {self.settings.max_request_bytes} bytes"
        if inbound.response_topic is None or inbound.correlation is None:
            return "a request needs the ResponseTopic and CorrelationData properties"
        if expected is not None and inbound.response_topic != expected:
            return f"ResponseTopic must be {expected}"
        return None

    def _forward(self, key: tuple[str, str], request: OffloadRequest) -> None:
        """Ask the endpoint; always settles the cache entry, whatever happens."""
        try:
            reply = self._transport.send(request)
        except EdgeAgentError as exc:
            self.stats.bump("failed")
            log.warning("endpoint failed for %s: %s", key[0], exc.one_line())
            payload, keep = error_to_wire(exc.message, retryable=exc.retryable), not exc.retryable
        except Exception:  # a bug: log it, answer, and keep serving
            self.stats.bump("failed")
            log.exception("cloud-bridge failed forwarding a request from %s", key[0])
            payload, keep = (
                error_to_wire("internal error in the cloud-bridge", retryable=True),
                False,
            )
        else:
            self.stats.bump("answered")
            log.info(
                "answered %s key=%s in %.2fs (%d+%d tokens)",
                key[0],
                key[1],
                reply.latency_s,
                reply.prompt_tokens,
                reply.completion_tokens,
            )
            payload, keep = reply_to_wire(reply), True
        self._cache.finish(key, payload, keep=keep)

    def _reply(self, inbound: _Inbound, topic: str | None, payload: bytes) -> None:
        """Publish a reply (if there is anywhere to send it), then ack the request."""
        if topic is not None:
            props = publish_properties(
                self.settings.reply_expiry_s, correlation=inbound.correlation
            )
            info = self._link.publish(topic, payload, props)
            try:
                info.wait_for_publish(timeout=self.settings.connect_timeout_s)
            except (RuntimeError, ValueError) as exc:
                log.warning("reply to %s not published: %s", topic, exc)
                return  # no ack: the broker redelivers the request
        self._link.ack(inbound.mid, inbound.qos)


def _own_reply_topic(request_topic: str) -> str | None:
    """``.../request`` → ``.../reply``; None for topics that do not follow the scheme."""
    head, _, last = request_topic.rpartition("/")
    return f"{head}/reply" if head and last == "request" else None


def _fingerprint(request: OffloadRequest) -> str:
    return hashlib.sha256(request_to_wire(request)).hexdigest()
