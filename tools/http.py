"""HTTP GET for allowlisted hosts only.

Off by default: ``$EDGE_AGENT_HTTP_ALLOWLIST`` is a comma-separated list of
hosts (``example.com``), subdomain wildcards (``*.example.com``) or hosts
with a port (``127.0.0.1:8080``). Plain ``http`` is allowed only for loopback
hosts. Redirects are followed by hand, at most :data:`MAX_REDIRECTS`, and each
target must pass the same checks. The body is read up to
:data:`MAX_BYTES` (uncompressed: ``identity`` encoding is requested) and the
text handed back is cut to :data:`MAX_TEXT_CHARS`. Environment proxies are
ignored. This limits where a tool call can reach; it does not vet what the
server sends back.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from edge_agent import tool

ALLOWLIST_ENV = "EDGE_AGENT_HTTP_ALLOWLIST"
MAX_BYTES = 256 * 1024
MAX_TEXT_CHARS = 8000
MAX_REDIRECTS = 5
TIMEOUT_S = 10.0
USER_AGENT = "edge-agent/0.1"
_TEXT_TYPES = ("text/", "json", "xml", "javascript", "x-www-form-urlencoded")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class AllowedHost:
    host: str
    port: int | None = None
    subdomains: bool = False

    def matches(self, url: httpx.URL) -> bool:
        host = url.host.lower().rstrip(".")
        host_ok = host.endswith("." + self.host) if self.subdomains else host == self.host
        port = url.port or _DEFAULT_PORTS.get(url.scheme)
        return host_ok and (self.port is None or self.port == port)


@tool("Fetch a web page or API URL with HTTP GET.", network=True, timeout_s=20, tags=("web",))
def http_get(url: str) -> dict[str, Any]:
    allowlist = load_allowlist()
    if not allowlist:
        raise PermissionError("http_get is disabled: no hosts allowlisted")
    target = check_url(url, allowlist)
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    with httpx.Client(
        follow_redirects=False, trust_env=False, timeout=TIMEOUT_S, headers=headers
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            location = _fetch(client, target)
            if isinstance(location, dict):
                return location
            target = check_url(str(location), allowlist, redirect=True)
    raise ConnectionError(f"too many redirects (more than {MAX_REDIRECTS})")


def load_allowlist() -> list[AllowedHost]:
    entries = os.environ.get(ALLOWLIST_ENV, "").split(",")
    return [parse_entry(e.strip().lower()) for e in entries if e.strip()]


def parse_entry(entry: str) -> AllowedHost:
    wildcard = entry.startswith("*.")
    parts = urlsplit("//" + entry.removeprefix("*."))
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{ALLOWLIST_ENV}: bad port in {entry!r}") from None
    if not parts.hostname or parts.path or parts.username:
        raise ValueError(f"{ALLOWLIST_ENV}: {entry!r} is not a host name")
    return AllowedHost(parts.hostname.rstrip("."), port, wildcard)


def check_url(
    url: str | httpx.URL, allowlist: list[AllowedHost], redirect: bool = False
) -> httpx.URL:
    """The parsed URL if it may be fetched; ``PermissionError`` if not."""
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL: {url!s}: {exc}") from None
    what = f"redirect to {parsed}" if redirect else str(parsed)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"not an http(s) URL: {what}")
    if parsed.scheme == "http" and not is_loopback(parsed.host):
        raise PermissionError(f"{what} refused: only https is allowed for non-local hosts")
    if not any(entry.matches(parsed) for entry in allowlist):
        raise PermissionError(f"{what} refused: host {parsed.host!r} is not allowlisted")
    return parsed


def is_loopback(host: str) -> bool:
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _fetch(client: httpx.Client, url: httpx.URL) -> dict[str, Any] | httpx.URL:
    """One request: the result, or where a redirect points."""
    try:
        with client.stream("GET", url) as response:
            if response.is_redirect and "location" in response.headers:
                return response.url.join(response.headers["location"])
            body, truncated = _read_capped(response)
            return _result(response, body, truncated)
    except httpx.TimeoutException:
        raise TimeoutError(f"{url} did not answer within {TIMEOUT_S:g} s") from None
    except httpx.HTTPError as exc:
        raise ConnectionError(f"fetching {url} failed: {exc}") from None


def _read_capped(response: httpx.Response) -> tuple[bytes, bool]:
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BYTES:
            return b"".join(chunks)[:MAX_BYTES], True
    return b"".join(chunks), False


def _result(response: httpx.Response, body: bytes, truncated: bool) -> dict[str, Any]:
    content_type = response.headers.get("content-type", "")
    result: dict[str, Any] = {
        "url": str(response.url),
        "status": response.status_code,
        "content_type": content_type,
        "bytes": len(body),
    }
    if content_type and not any(t in content_type.lower() for t in _TEXT_TYPES):
        return {**result, "text": "", "binary": True, "truncated": truncated}
    try:
        text = body.decode(response.charset_encoding or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        text = body.decode("utf-8", errors="replace")
    if len(text) > MAX_TEXT_CHARS:
        text, truncated = text[:MAX_TEXT_CHARS], True
    return {**result, "text": text, "truncated": truncated}
