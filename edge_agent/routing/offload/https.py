"""Offload over HTTPS to any OpenAI-compatible ``/chat/completions`` endpoint.

vLLM, llama.cpp's server, Ollama and hosted APIs all speak it. The request
carries the tools (``tools`` + ``tool_choice``); the answer's calls are read
from the standard ``tool_calls`` field, or from JSON in ``content`` (some
endpoints answer that way), or the answer is plain text.

Security and failure handling:

* TLS verification is always on; ``ca_bundle`` names a private CA. A plain
  ``http://`` URL is refused unless ``allow_plain_http`` is set.
* The bearer token comes from a file that only its owner may read, or from an
  environment variable. It is never logged, and never appears in an
  exception message or a ``repr``.
* Retries use exponential back-off with full jitter, for retryable failures
  only: connection errors, timeouts, a connection closed mid-response, 408,
  425, 429 and 5xx. A ``Retry-After`` header is honoured; if it asks for a
  longer wait than ``retry_after_max_s`` the transport gives up at once with
  a retryable error, so the router can queue the request instead. Every
  attempt carries the same ``Idempotency-Key`` header.
* Other 4xx answers, TLS failures and unreadable 200 answers are permanent
  (``retryable=False``) and never retried.

Environment proxies (``HTTPS_PROXY``) are not used: the endpoint URL is the
one that is called.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx

from edge_agent.decoding.calls import ParsedOutput, parse_output
from edge_agent.errors import ConfigError, OffloadError
from edge_agent.routing.offload.base import (
    OffloadReply,
    OffloadRequest,
    describe_tls_error,
    read_secret_env,
    read_secret_file,
)
from edge_agent.routing.offload.settings import HttpsOffloadSettings

__all__ = ["HttpsOffloadSettings", "HttpsTransport"]

log = logging.getLogger(__name__)

_RETRY_STATUS = frozenset({408, 425, 429})
_TOOL_CHOICES = frozenset({"auto", "none", "required"})
_BODY_SNIPPET = 200


@dataclass(frozen=True)
class _Attempt:
    """The outcome of one HTTP attempt that may be retried."""

    error: OffloadError
    retry_after_s: float | None = None


class HttpsTransport:
    """:class:`~edge_agent.routing.offload.base.OffloadTransport` over HTTPS (httpx).

    The token is read once, here; a token file with loose permissions or an
    unset variable raises :class:`~edge_agent.errors.ConfigError`. ``sleep`` is
    the pause between retries (swap it to observe back-off).
    """

    name = "https"

    def __init__(
        self, settings: HttpsOffloadSettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        if settings.base_url.startswith("http://") and not settings.allow_plain_http:
            raise ConfigError(
                f"refusing plain http endpoint {settings.base_url}",
                hint="use https://, or set allow_plain_http for a loopback endpoint",
            )
        self.settings = settings
        self._sleep = sleep
        self._token = _read_token(settings)
        self._rng = random.Random()  # noqa: S311 - back-off jitter, not cryptography
        self._client = httpx.Client(
            verify=_ssl_context(settings.ca_bundle),
            timeout=httpx.Timeout(
                settings.read_timeout_s,
                connect=settings.connect_timeout_s,
                pool=settings.connect_timeout_s,
            ),
            headers=_headers(self._token),
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"HttpsTransport({self.settings.base_url!r}, model={self.settings.model!r})"

    def __enter__(self) -> HttpsTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    @property
    def url(self) -> str:
        return f"{self.settings.base_url}/chat/completions"

    def send(self, request: OffloadRequest) -> OffloadReply:
        started = time.monotonic()
        body = self._send_with_retries(request)
        return _parse_completion(
            body,
            fallback_model=request.model or self.settings.model,
            latency_s=time.monotonic() - started,
        )

    def _send_with_retries(self, request: OffloadRequest) -> dict[str, Any]:
        payload = completion_body(request, self.settings)
        headers = {"Idempotency-Key": request.idempotency_key}
        attempts = self.settings.max_retries + 1
        for attempt in range(attempts):
            answer = self._send_once(payload, headers)
            if not isinstance(answer, _Attempt):
                return answer
            outcome = answer
            if attempt + 1 == attempts:
                break
            delay = self._delay(attempt, outcome)
            log.warning(
                "offload attempt %d failed (%s); retrying in %.2fs",
                attempt + 1,
                outcome.error.message,
                delay,
            )
            self._sleep(delay)
        raise OffloadError(
            f"{outcome.error.message} (gave up after {attempts} attempts)",
            hint=outcome.error.hint or None,
            retryable=True,
        ) from outcome.error

    def _delay(self, attempt: int, outcome: _Attempt) -> float:
        jitter = self._rng.uniform(
            0, min(self.settings.backoff_max_s, self.settings.backoff_base_s * 2**attempt)
        )
        if outcome.retry_after_s is None:
            return jitter
        if outcome.retry_after_s > self.settings.retry_after_max_s:
            raise OffloadError(
                f"{outcome.error.message}; the endpoint asks to retry after "
                f"{outcome.retry_after_s:.0f}s, longer than retry_after_max_s",
                retryable=True,
            ) from outcome.error
        return max(outcome.retry_after_s, jitter)

    def _send_once(
        self, payload: dict[str, Any], headers: dict[str, str]
    ) -> dict[str, Any] | _Attempt:
        """The answer's JSON body, or a retryable failure; permanent ones raise."""
        try:
            response = self._client.post(self.url, json=payload, headers=headers)
        except httpx.TransportError as exc:
            return _Attempt(self._transport_failure(exc))
        if response.is_success:
            return self._json_body(response)
        problem = self._status_error(response)
        if problem.retryable:
            return _Attempt(problem, _retry_after(response.headers.get("retry-after")))
        raise problem

    def _transport_failure(self, exc: httpx.TransportError) -> OffloadError:
        """A network failure as a retryable error; a TLS failure raises at once."""
        tls = _ssl_cause(exc)
        if tls is not None:
            raise OffloadError(
                f"TLS handshake with {self.settings.base_url} failed: {describe_tls_error(tls)}",
                hint="check ca_bundle and that the certificate names the endpoint's host",
                retryable=False,
            ) from exc
        kind = type(exc).__name__
        return OffloadError(
            self._scrub(f"cannot reach {self.settings.base_url}: {kind}: {exc}"),
            hint="check the network; the request can be retried later",
        )

    def _status_error(self, response: httpx.Response) -> OffloadError:
        status = response.status_code
        snippet = self._scrub(" ".join(response.text[:_BODY_SNIPPET].split()))
        message = f"{self.settings.base_url} answered HTTP {status}: {snippet}"
        if status in _RETRY_STATUS or status >= 500:
            return OffloadError(message, retryable=True)
        if status in (401, 403):
            return OffloadError(
                message, hint="check the token (token_file or token_env)", retryable=False
            )
        return OffloadError(message, retryable=False)

    def _json_body(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise OffloadError(
                f"{self.settings.base_url} answered HTTP {response.status_code} but not with JSON",
                hint="check that base_url is an OpenAI-compatible API (usually ends in /v1)",
                retryable=False,
            )
        return body

    def _scrub(self, text: str) -> str:
        """Belt and braces: no message may carry the token, even if echoed back."""
        return text.replace(self._token, "***") if self._token else text


def completion_body(request: OffloadRequest, settings: HttpsOffloadSettings) -> dict[str, Any]:
    """The OpenAI chat-completions request body for ``request``."""
    body: dict[str, Any] = {
        "model": request.model or settings.model,
        "messages": request.messages,
        "max_tokens": request.max_tokens,
        "temperature": settings.temperature,
        "stream": False,
    }
    if request.tools:
        body["tools"] = [t.to_openai() for t in request.tools]
        body["tool_choice"] = _tool_choice(request.tool_choice)
    return body


def _tool_choice(choice: str) -> str | dict[str, Any]:
    if choice in _TOOL_CHOICES:
        return choice
    return {"type": "function", "function": {"name": choice}}


def _parse_completion(
    body: dict[str, Any], *, fallback_model: str, latency_s: float
) -> OffloadReply:
    try:
        message = body["choices"][0]["message"]
        if not isinstance(message, dict):
            raise TypeError("message is not an object")
    except (KeyError, IndexError, TypeError) as exc:
        raise OffloadError(
            f"the endpoint's answer has no choices[0].message ({exc})", retryable=False
        ) from exc
    parsed = _parse_message(message)
    usage = body.get("usage")
    if not isinstance(usage, dict):
        usage = {}
    model = body.get("model")
    return OffloadReply(
        calls=parsed.calls,
        text=parsed.text,
        model=model if isinstance(model, str) and model else fallback_model,
        prompt_tokens=_tokens(usage.get("prompt_tokens")),
        completion_tokens=_tokens(usage.get("completion_tokens")),
        latency_s=latency_s,
        transport="https",
        errors=parsed.errors,
    )


def _parse_message(message: dict[str, Any]) -> ParsedOutput:
    """Standard ``tool_calls``, else a call as JSON in ``content``, else text."""
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        # parse_output accepts the OpenAI {"function": {...}} shape with JSON
        # string arguments, and records each malformed call as an error.
        return parse_output(json.dumps(tool_calls))
    content = message.get("content")
    if not isinstance(content, str):
        return ParsedOutput()
    return parse_output(content)


def _tokens(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The TLS error behind an httpx exception, if that is what it was."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _ssl_context(ca_bundle: Path | None) -> ssl.SSLContext:
    if ca_bundle is not None and not ca_bundle.is_file():
        raise ConfigError(f"CA bundle {ca_bundle} does not exist")
    try:
        return ssl.create_default_context(cafile=str(ca_bundle) if ca_bundle else None)
    except ssl.SSLError as exc:
        raise ConfigError(f"CA bundle {ca_bundle} is not a PEM certificate file") from exc


def _read_token(settings: HttpsOffloadSettings) -> str:
    if settings.token_file is not None:
        return read_secret_file(settings.token_file, "token")
    if settings.token_env is not None:
        return read_secret_env(settings.token_env, "token")
    return ""


def _headers(token: str) -> dict[str, str]:
    headers = {"Accept": "application/json", "User-Agent": "edge-agent"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers
