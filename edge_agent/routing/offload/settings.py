"""Offload settings: plain pydantic models with no network imports.

They live apart from the transports so the main config can mount them
without loading httpx or paho; ``https.py`` and ``mqtt.py`` re-export them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"


class HttpsOffloadSettings(BaseModel):
    """Where and how to reach an OpenAI-compatible endpoint."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(
        description="endpoint base URL; /chat/completions is appended (e.g. https://host/v1)",
        min_length=8,
        max_length=2048,
    )
    model: str = Field("default", min_length=1, max_length=200, description="model name to ask")
    ca_bundle: Path | None = Field(
        None, description="PEM file of CAs to trust; None = the system trust store"
    )
    token_file: Path | None = Field(
        None, description="file holding the bearer token; must be mode 0600 or stricter"
    )
    token_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="name of an environment variable holding the bearer token",
    )
    connect_timeout_s: float = Field(5.0, gt=0, le=120, description="TCP + TLS connect timeout")
    read_timeout_s: float = Field(
        60.0, gt=0, le=3600, description="longest wait for the answer (a generation)"
    )
    max_retries: int = Field(2, ge=0, le=10, description="retries after the first attempt")
    backoff_base_s: float = Field(
        0.5, ge=0, le=60, description="back-off before retry n is up to base * 2**n (full jitter)"
    )
    backoff_max_s: float = Field(10.0, ge=0, le=600, description="cap on one back-off")
    retry_after_max_s: float = Field(
        30.0, ge=0, le=3600, description="longest Retry-After honoured; longer ones end retrying"
    )
    temperature: float = Field(0.0, ge=0, le=2, description="sampling temperature")
    allow_plain_http: bool = Field(
        False, description="permit an http:// URL (a loopback endpoint only; no TLS)"
    )

    @field_validator("base_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError("base_url must be an https:// URL with a host")
        if parts.username or parts.password:
            raise ValueError("base_url must not embed credentials; use token_file")
        return value.rstrip("/")


class BrokerSettings(BaseModel):
    """How to reach the broker; shared by the device transport and the bridge."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("localhost", min_length=1, max_length=253, description="broker host")
    port: int = Field(8883, ge=1, le=65535, description="broker port (8883 = MQTT over TLS)")
    tls: bool = Field(True, description="connect with TLS (turn off only on a trusted LAN)")
    tls_ca: Path | None = Field(
        None, description="PEM file of CAs to trust; None = the system trust store"
    )
    username: str | None = Field(None, min_length=1, max_length=256, description="MQTT user")
    password_file: Path | None = Field(
        None, description="file holding the MQTT password; must be mode 0600 or stricter"
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="MQTT keepalive")
    session_expiry_s: int = Field(
        3600, ge=0, le=2**32 - 1, description="how long the broker keeps the session offline"
    )
    connect_timeout_s: float = Field(
        10.0, gt=0, le=300, description="longest wait for the broker to accept the connection"
    )
    topic_prefix: str = Field(
        "edge-agent", pattern=r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*$", description="topic root"
    )


class MqttOffloadSettings(BrokerSettings):
    """The device side of MQTT offload."""

    device_id: str = Field(
        pattern=_ID_PATTERN, description="this device's id; names its topics and client id"
    )
    message_expiry_s: int = Field(
        300, ge=1, le=86400, description="the broker drops an unanswered request after this"
    )
    reply_timeout_s: float = Field(
        120.0, gt=0, le=3600, description="longest wait for the correlated reply"
    )
