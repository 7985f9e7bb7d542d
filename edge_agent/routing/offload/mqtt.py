"""Offload over MQTT v5 request/response, for devices that can reach only a broker.

The device publishes each request (the JSON wire format of
:mod:`edge_agent.routing.offload.base`) to its request topic with a ResponseTopic and
a fresh CorrelationData; the ``cloud-bridge`` answers on that ResponseTopic
with the same CorrelationData. Topics, for ``device_id`` ``kitchen-pi``::

    edge-agent/kitchen-pi/offload/request   device → bridge  (QoS 1)
    edge-agent/kitchen-pi/offload/reply     bridge → device  (QoS 1)
    edge-agent/kitchen-pi/status            retained "online" / "offline" (last will)

The session is persistent (clean_start=False, SessionExpiryInterval), so the
reply subscription survives reconnects; requests carry a
MessageExpiryInterval so a stale request is not answered hours later.

What counts as delivered is the *correlated reply*, never the broker's
PUBACK: a broker acknowledges messages it may still lose. A request with no
reply within ``reply_timeout_s``, or a connection lost while waiting, raises a
retryable :class:`~edge_agent.errors.OffloadError`; the caller retries with
the same idempotency key and the bridge answers a repeat from its cache.

paho-mqtt is imported here, so ``import edge_agent`` never loads it.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import ConfigError, OffloadError
from edge_agent.routing.offload.base import (
    OffloadReply,
    OffloadRequest,
    describe_tls_error,
    read_secret_file,
    reply_from_wire,
    request_to_wire,
)
from edge_agent.routing.offload.settings import BrokerSettings, MqttOffloadSettings

__all__ = [
    "BrokerLink",
    "BrokerSettings",
    "MqttOffloadSettings",
    "MqttTransport",
    "reply_topic",
    "request_topic",
    "status_topic",
]

log = logging.getLogger(__name__)

QOS = 1
ONLINE = b"online"
OFFLINE = b"offline"
_AUTH_FAILURES = frozenset({"Bad user name or password", "Not authorized"})
_REFUSAL_MEMORY_S = 5.0  # how long a refused PUBACK waits for its send() to look


def request_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/offload/request"


def reply_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/offload/reply"


def status_topic(prefix: str, device_id: str) -> str:
    return f"{prefix}/{device_id}/status"


def publish_properties(
    expiry_s: int, *, response_topic: str | None = None, correlation: bytes | None = None
) -> Properties:
    props = _properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = expiry_s
    props.ContentType = "application/json"
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    return props


MessageHandler = Callable[[mqtt.MQTTMessage], None]


class BrokerLink:
    """One MQTT v5 connection: TLS, username/password, a persistent session,
    an optional retained last will, and subscriptions renewed on every connect.

    :meth:`connect` blocks until the broker has accepted the connection and
    the subscriptions, or raises :class:`OffloadError` (retryable unless the
    broker refused the credentials, a subscription or the TLS certificate).
    Afterwards paho's network thread reconnects by itself.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str,
        subscriptions: tuple[str, ...] = (),
        will: tuple[str, bytes] | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.subscriptions = subscriptions
        self.will = will
        self.on_message: MessageHandler | None = None
        self.on_connection_lost: Callable[[], None] | None = None
        self.on_publish_refused: Callable[[int, str], None] | None = None
        self._password = (
            read_secret_file(settings.password_file, "MQTT password")
            if settings.password_file
            else None
        )
        self._connack = threading.Event()
        self._subacked = threading.Event()
        self._connected = threading.Event()
        self._connect_refusal: str | None = None
        self._sub_refusal: str | None = None
        self._client = self._make_client(manual_ack)
        self._started = False

    def __repr__(self) -> str:
        s = self.settings
        return f"BrokerLink({s.host}:{s.port}, client_id={self.client_id!r})"

    @property
    def is_connected(self) -> bool:
        return self._connected.is_set()

    def _make_client(self, manual_ack: bool) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=manual_ack,
        )
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self._password)
        if self.settings.tls:
            client.tls_set_context(_ssl_context(self.settings.tls_ca))
        if self.will is not None:
            topic, payload = self.will
            client.will_set(topic, payload, qos=QOS, retain=True)
        client.connect_timeout = self.settings.connect_timeout_s
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_publish = self._handle_publish
        client.on_message = self._handle_message
        return client

    def connect(self) -> None:
        """Connect (once); afterwards, wait for paho's own reconnects."""
        deadline = time.monotonic() + self.settings.connect_timeout_s
        if not self._started:
            self._first_connect()
        if not self._connected.wait(max(0.0, deadline - time.monotonic())):
            raise self._not_connected_error()
        if self.subscriptions and not self._subacked.wait(max(0.0, deadline - time.monotonic())):
            raise OffloadError(f"{self._where()}: no SUBACK within the connect timeout")
        if self._sub_refusal is not None:
            raise OffloadError(
                f"{self._where()}: {self._sub_refusal}",
                hint="check the broker's ACL for this user",
                retryable=False,
            )

    def _first_connect(self) -> None:
        self._connack.clear()
        self._connect_refusal = None
        props = _properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.settings.session_expiry_s
        try:
            self._client.connect(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive_s,
                clean_start=False,
                properties=props,
            )
        except ssl.SSLError as exc:
            _close_sockets_in(exc)
            raise OffloadError(
                f"{self._where()}: TLS failed: {describe_tls_error(exc)}",
                hint="check tls_ca and that the certificate names the broker's host",
                retryable=False,
            ) from exc
        except OSError as exc:
            raise OffloadError(
                f"{self._where()}: cannot connect: {exc.strerror or exc}",
                hint="check that the broker is running and reachable",
            ) from exc
        self._client.loop_start()
        self._started = True
        if not self._connack.wait(self.settings.connect_timeout_s):
            self.close()
            raise OffloadError(f"{self._where()}: no CONNACK within the connect timeout")
        if self._connect_refusal is not None:
            refusal, self._connect_refusal = self._connect_refusal, None
            self.close()
            raise OffloadError(
                f"{self._where()} refused the connection: {refusal}",
                hint="check the MQTT username and password file",
                retryable=refusal not in _AUTH_FAILURES,
            )

    def _not_connected_error(self) -> OffloadError:
        return OffloadError(
            f"{self._where()}: not connected (reconnecting in the background)",
            hint="the broker is unreachable; the request can be retried later",
        )

    def _where(self) -> str:
        return f"MQTT broker {self.settings.host}:{self.settings.port}"

    def publish(
        self,
        topic: str,
        payload: bytes,
        properties: Properties | None = None,
        *,
        retain: bool = False,
    ) -> mqtt.MQTTMessageInfo:
        return self._client.publish(topic, payload, qos=QOS, retain=retain, properties=properties)

    def ack(self, mid: int, qos: int) -> None:
        self._client.ack(mid, qos)

    def close(self, farewell: tuple[str, bytes] | None = None) -> None:
        """Disconnect cleanly (a clean DISCONNECT suppresses the last will, so
        ``farewell`` is published first) and stop the network thread."""
        if not self._started:
            return
        if farewell is not None and self._connected.is_set():
            info = self.publish(*farewell, retain=True)
            with contextlib.suppress(RuntimeError, ValueError):
                info.wait_for_publish(timeout=2.0)
        self._started = False
        self._connected.clear()  # before DISCONNECT: this loss is not news
        self._client.disconnect()
        self._client.loop_stop()

    # paho callbacks run on its network thread: keep them short, never raise.

    def _handle_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            log.warning("%s refused the connection: %s", self._where(), reason)
            self._connect_refusal = str(reason)
            self._connack.set()
            if str(reason) in _AUTH_FAILURES:
                client.disconnect()
            return
        self._subacked.clear()
        self._sub_refusal = None
        if self.subscriptions:
            client.subscribe([(t, QOS) for t in self.subscriptions])
        if self.will is not None:
            client.publish(self.will[0], ONLINE, qos=QOS, retain=True)
        self._connected.set()
        self._connack.set()

    def _handle_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        if was_connected and self.on_connection_lost is not None:
            log.warning("lost the connection to %s: %s", self._where(), reason)
            self.on_connection_lost()

    def _handle_subscribe(
        self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any
    ) -> None:
        denied = [t for t, r in zip(self.subscriptions, reasons, strict=False) if r.is_failure]
        if denied:
            self._sub_refusal = f"the broker refused the subscription to {', '.join(denied)}"
        self._subacked.set()

    def _handle_publish(
        self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure and self.on_publish_refused is not None:
            self.on_publish_refused(mid, str(reason))

    def _handle_message(
        self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage
    ) -> None:
        if self.on_message is not None:
            self.on_message(message)


@dataclass
class _Pending:
    """One request waiting for its correlated reply."""

    done: threading.Event = field(default_factory=threading.Event)
    mid: int | None = None
    payload: bytes | None = None
    error: OffloadError | None = None

    def fail(self, error: OffloadError) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class MqttTransport:
    """:class:`~edge_agent.routing.offload.base.OffloadTransport` over MQTT v5.

    Connects on first use (or :meth:`connect`), publishing a retained
    ``online`` to the status topic; the broker publishes the retained
    ``offline`` last will if the device vanishes, and :meth:`close` publishes
    it itself before a clean disconnect.
    """

    name = "mqtt"

    def __init__(self, settings: MqttOffloadSettings) -> None:
        if settings.tls is False and settings.username is not None:
            log.warning("MQTT password sent without TLS to %s", settings.host)
        self.settings = settings
        prefix, device = settings.topic_prefix, settings.device_id
        self.request_topic = request_topic(prefix, device)
        self.reply_topic = reply_topic(prefix, device)
        self.status_topic = status_topic(prefix, device)
        self._pending: dict[bytes, _Pending] = {}
        self._refused: dict[int, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._link = BrokerLink(
            settings,
            client_id=f"{prefix.replace('/', '-')}-{device}",
            subscriptions=(self.reply_topic,),
            will=(self.status_topic, OFFLINE),
        )
        self._link.on_message = self._on_reply
        self._link.on_connection_lost = self._on_connection_lost
        self._link.on_publish_refused = self._on_publish_refused

    def __repr__(self) -> str:
        return f"MqttTransport({self._link!r}, device_id={self.settings.device_id!r})"

    def __enter__(self) -> MqttTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        with self._lock:
            self._link.connect()

    def close(self) -> None:
        with self._lock:
            self._link.close(farewell=(self.status_topic, OFFLINE))
        self._on_connection_lost()

    def send(self, request: OffloadRequest) -> OffloadReply:
        started = time.monotonic()
        self.connect()
        correlation = uuid.uuid4().bytes
        pending = _Pending()
        self._pending[correlation] = pending
        try:
            self._publish(request, correlation, pending)
            if not pending.done.wait(self.settings.reply_timeout_s):
                raise OffloadError(
                    f"no reply on {self.reply_topic} within {self.settings.reply_timeout_s:g}s",
                    hint="is the cloud-bridge running? the request can be retried later",
                )
        finally:
            del self._pending[correlation]
        if pending.error is not None:
            raise pending.error
        assert pending.payload is not None  # set together with done
        return reply_from_wire(
            pending.payload, transport=self.name, latency_s=time.monotonic() - started
        )

    def _publish(self, request: OffloadRequest, correlation: bytes, pending: _Pending) -> None:
        props = publish_properties(
            self.settings.message_expiry_s,
            response_topic=self.reply_topic,
            correlation=correlation,
        )
        info = self._link.publish(self.request_topic, request_to_wire(request), props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise OffloadError(
                f"publish to {self.request_topic} failed: {mqtt.error_string(info.rc)}"
            )
        pending.mid = info.mid
        refused = self._refused.pop(info.mid, None)  # the PUBACK may beat this line
        if refused is not None and time.monotonic() - refused[1] < _REFUSAL_MEMORY_S:
            pending.fail(self._refusal_error(refused[0]))

    def _refusal_error(self, reason: str) -> OffloadError:
        return OffloadError(
            f"the broker refused the request on {self.request_topic}: {reason}",
            hint="check the broker's ACL for this device",
            retryable=False,
        )

    # paho network-thread callbacks: no locks (the send path holds ours while
    # paho holds its own), only dict lookups, which the GIL makes atomic.

    def _on_reply(self, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        pending = self._pending.get(correlation) if isinstance(correlation, bytes) else None
        if pending is None:
            log.debug("dropping an uncorrelated reply on %s", message.topic)
            return
        if not pending.done.is_set():
            pending.payload = bytes(message.payload)
            pending.done.set()

    def _on_publish_refused(self, mid: int, reason: str) -> None:
        for pending in list(self._pending.values()):
            if pending.mid == mid:
                pending.fail(self._refusal_error(reason))
                return
        self._refused[mid] = (reason, time.monotonic())

    def _on_connection_lost(self) -> None:
        error = OffloadError(
            f"lost the connection to the MQTT broker while waiting on {self.reply_topic}",
            hint="the request can be retried with the same idempotency key",
        )
        for pending in list(self._pending.values()):
            pending.fail(error)


def _close_sockets_in(exc: BaseException) -> None:
    """Close the TLS socket paho leaves open when the handshake fails (paho
    2.2 ``_ssl_wrap_socket`` does not close it); the frames of the traceback
    are the only place it can still be reached."""
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        for value in frame.f_locals.values():
            if isinstance(value, socket.socket):
                value.close()


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]


def _ssl_context(ca: Path | None) -> ssl.SSLContext:
    if ca is not None and not ca.is_file():
        raise ConfigError(f"CA file {ca} does not exist")
    try:
        return ssl.create_default_context(cafile=str(ca) if ca else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"CA file {ca} is not a PEM certificate file") from exc
