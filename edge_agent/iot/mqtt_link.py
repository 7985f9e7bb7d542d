"""The same frames over MQTT v5, one topic pair per device, plus the MQTT
confirm topic. Topics, for the prefix ``edge-agent`` and device ``porch``::

    edge-agent/fw/porch/up       device → host: announce, reading, ack, nack, error
    edge-agent/fw/porch/down     host → device: hello, command
    edge-agent/fw/porch/status   retained "online" / "offline" (the device's last will)
    edge-agent/<node>/confirm/request   host → owner: a ConfirmRequest (JSON)
    edge-agent/<node>/confirm/reply     owner → host: {"id", "approve", "args_hash"}

All at QoS 1. A command carries a MessageExpiryInterval (the broker drops it
when it expires, e.g. while the device is offline), a ResponseTopic (the
device's ``up``) and CorrelationData (its ``seq``). The broker's PUBACK only
says the broker has it; the device's correlated ack frame is what counts.

The topic vouches for the device: a frame on ``fw/porch/up`` that names
another device is rejected, and the broker's ACL must let each device write
only its own ``up`` and read only its own ``down``.

paho-mqtt is imported here (through :mod:`edge_agent.routing.offload.mqtt`).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import MQTTErrorCode

from edge_agent.iot.bridge import ConfirmRequest
from edge_agent.routing.offload.mqtt import (
    OFFLINE,
    ONLINE,
    BrokerLink,
    BrokerSettings,
    publish_properties,
)
from firmware_bridge.protocol import MAX_FRAME_BYTES, Frame, now_ms

__all__ = ["DeviceMqttLink", "MqttConfirmer", "MqttLink", "device_topics"]

log = logging.getLogger(__name__)

LineHandler = Callable[[str | None, bytes], None]
OnlineHandler = Callable[[str | None], None]


@dataclass(frozen=True)
class DeviceTopics:
    up: str
    down: str
    status: str


def device_topics(prefix: str, device: str) -> DeviceTopics:
    root = f"{prefix}/fw/{device}"
    return DeviceTopics(f"{root}/up", f"{root}/down", f"{root}/status")


def expiry_s(frame: Frame) -> int:
    """The frame's remaining life in whole seconds (at least 1), for the broker."""
    return max(1, math.ceil((frame.exp - now_ms()) / 1000))


def _check(info: mqtt.MQTTMessageInfo, topic: str) -> None:
    if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
        raise OSError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")


class MqttLink:
    """The host side: every device under ``<prefix>/fw/``, one connection."""

    name = "mqtt"
    binds_device = False

    def __init__(self, settings: BrokerSettings, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        root = f"{self.prefix}/fw"
        self._link = BrokerLink(
            settings,
            client_id=client_id or f"{self.prefix.replace('/', '-')}-fw-host",
            subscriptions=(f"{root}/+/up", f"{root}/+/status"),
        )
        self._on_line: LineHandler | None = None
        self._on_online: OnlineHandler | None = None

    def __repr__(self) -> str:
        return f"MqttLink({self._link!r})"

    def start(self, on_line: LineHandler, on_online: OnlineHandler) -> None:
        """Connect (raises :class:`~edge_agent.errors.OffloadError` when the
        broker cannot be reached or refuses us); paho reconnects afterwards."""
        self._on_line, self._on_online = on_line, on_online
        self._link.on_message = self._on_message
        self._link.connect()

    def send(self, frame: Frame, line: bytes) -> None:
        topics = device_topics(self.prefix, frame.dev)
        props = publish_properties(
            expiry_s(frame), response_topic=topics.up, correlation=str(frame.seq).encode()
        )
        _check(self._link.publish(topics.down, line.rstrip(b"\n"), props), topics.down)

    def close(self) -> None:
        self._link.close()

    def _on_message(self, message: mqtt.MQTTMessage) -> None:
        parts = message.topic.split("/")
        if len(parts) < 3 or self._on_line is None or self._on_online is None:
            return
        device, leaf = parts[-2], parts[-1]
        payload = bytes(message.payload[: MAX_FRAME_BYTES + 1])
        if leaf == "up":
            self._on_line(device, payload)
        elif leaf == "status" and payload == ONLINE:
            self._on_online(device)


class DeviceMqttLink:
    """The device side (the simulator): its ``down`` in, its ``up`` out, and a
    retained ``online``/``offline`` status with a last will. The handler gets
    each frame with the message's CorrelationData; a reply passes it back."""

    def __init__(self, settings: BrokerSettings, device: str) -> None:
        self.topics = device_topics(settings.topic_prefix, device)
        self._link = BrokerLink(
            settings,
            client_id=f"{settings.topic_prefix.replace('/', '-')}-fw-{device}",
            subscriptions=(self.topics.down,),
            will=(self.topics.status, OFFLINE),
        )

    def start(self, on_line: Callable[[bytes, bytes | None], None]) -> None:
        def deliver(message: mqtt.MQTTMessage) -> None:
            correlation = getattr(message.properties, "CorrelationData", None)
            payload = bytes(message.payload[: MAX_FRAME_BYTES + 1])
            on_line(payload, correlation if isinstance(correlation, bytes) else None)

        self._link.on_message = deliver
        self._link.connect()

    def send(self, frame: Frame, line: bytes, correlation: bytes | None = None) -> None:
        props = publish_properties(expiry_s(frame), correlation=correlation)
        _check(self._link.publish(self.topics.up, line.rstrip(b"\n"), props), self.topics.up)

    def close(self) -> None:
        self._link.close(farewell=(self.topics.status, OFFLINE))


@dataclass
class _Waiting:
    done: threading.Event = field(default_factory=threading.Event)
    payload: bytes | None = None


class MqttConfirmer:
    """A :class:`~edge_agent.iot.bridge.Confirmer` over MQTT: publishes each
    :class:`ConfirmRequest` on ``<prefix>/<node>/confirm/request`` and waits
    for the owner's correlated reply ``{"id", "approve": true, "args_hash"}``
    on ``…/confirm/reply``. Anything else, or nothing in time, is a no."""

    def __init__(
        self, settings: BrokerSettings, *, node_id: str, client_id: str | None = None
    ) -> None:
        root = f"{settings.topic_prefix}/{node_id}/confirm"
        self.request_topic = f"{root}/request"
        self.reply_topic = f"{root}/reply"
        self._link = BrokerLink(
            settings,
            client_id=client_id or f"{settings.topic_prefix.replace('/', '-')}-{node_id}-confirm",
            subscriptions=(self.reply_topic,),
        )
        self._link.on_message = self._on_reply
        self._waiting: dict[bytes, _Waiting] = {}

    def connect(self) -> None:
        self._link.connect()

    def close(self) -> None:
        self._link.close()

    def __enter__(self) -> MqttConfirmer:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __call__(self, request: ConfirmRequest, timeout_s: float) -> str | None:
        correlation = request.id.encode()
        waiting = _Waiting()
        self._waiting[correlation] = waiting
        try:
            props = publish_properties(
                max(1, math.ceil(timeout_s)), response_topic=self.reply_topic,
                correlation=correlation,
            )  # fmt: skip
            body = json.dumps(request.to_json()).encode()
            _check(self._link.publish(self.request_topic, body, props), self.request_topic)
            if not waiting.done.wait(timeout_s):
                return None
        finally:
            self._waiting.pop(correlation, None)
        return _approved_hash(waiting.payload or b"", request.id)

    def _on_reply(self, message: mqtt.MQTTMessage) -> None:
        correlation = getattr(message.properties, "CorrelationData", None)
        waiting = self._waiting.get(correlation) if isinstance(correlation, bytes) else None
        if waiting is None:
            log.debug("dropping an uncorrelated confirmation reply")
            return
        waiting.payload = bytes(message.payload[:4096])
        waiting.done.set()


def _approved_hash(payload: bytes, request_id: str) -> str | None:
    try:
        reply: Any = json.loads(payload)
    except ValueError:
        log.warning("a confirmation reply was not JSON; treating it as no")
        return None
    if not isinstance(reply, dict) or reply.get("id") != request_id:
        return None
    digest = reply.get("args_hash")
    return digest if reply.get("approve") is True and isinstance(digest, str) else None
