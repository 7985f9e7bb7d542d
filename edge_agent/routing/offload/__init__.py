"""Offload to a cloud LLM: one interface, one module per transport.

* :mod:`edge_agent.routing.offload.base`: :class:`OffloadRequest`,
  :class:`OffloadReply`, :class:`OffloadTransport` and the MQTT wire format.
* :mod:`edge_agent.routing.offload.https`: OpenAI-compatible HTTPS (httpx).
* :mod:`edge_agent.routing.offload.mqtt`: MQTT v5 request/response (paho-mqtt).
* :mod:`edge_agent.routing.offload.bridge`: the ``cloud-bridge`` process, MQTT → HTTPS.

Only the base is imported here, so ``import edge_agent.routing.offload`` loads
neither httpx nor paho.
"""

from __future__ import annotations

from edge_agent.routing.offload.base import OffloadReply, OffloadRequest, OffloadTransport

__all__ = ["OffloadReply", "OffloadRequest", "OffloadTransport"]
