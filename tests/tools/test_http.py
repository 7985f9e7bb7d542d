"""http_get against real HTTP servers on 127.0.0.1 (never an outside address).

URLs naming other hosts are only used where the allowlist or scheme check
must refuse them before any connection is made.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from . import load_tool_module

http = load_tool_module("http")

BIG = b"a" * (1024 * 1024)


class Server:
    """A real HTTP server in a thread, recording the paths it was asked for."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        self.redirects: dict[str, str] = {}
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                server.requests.append(self.path)
                if self.path in server.redirects:
                    self.send_response(302)
                    self.send_header("Location", server.redirects[self.path])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route = ROUTES.get(self.path)
                if route is None:
                    self.reply(404, "text/plain", b"not found")
                    return
                if self.path == "/slow":
                    time.sleep(1.5)
                self.reply(200, *route)

            def reply(self, status: int, content_type: str, body: bytes) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


ROUTES: dict[str, tuple[str, bytes]] = {
    "/hello": ("text/plain; charset=utf-8", "héllo wörld".encode()),
    "/json": ("application/json", b'{"ok": true}'),
    "/latin1": ("text/plain; charset=iso-8859-1", "caf\xe9".encode("latin-1")),
    "/weird": ("text/plain; charset=no-such-codec", b"plain"),
    "/big": ("text/plain", BIG),
    "/png": ("image/png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 100),
    "/slow": ("text/plain", b"late"),
}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", "127.0.0.1")
    with Server() as srv:
        yield srv


def test_disabled_without_allowlist(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGE_AGENT_HTTP_ALLOWLIST", raising=False)
    with pytest.raises(PermissionError, match="http_get is disabled: no hosts allowlisted"):
        http.http_get("https://example.com/")
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", " , ")
    with pytest.raises(PermissionError, match="no hosts allowlisted"):
        http.http_get("https://example.com/")


def test_get_text(server: Server) -> None:
    out = http.http_get(f"{server.base}/hello")
    assert out == {
        "url": f"{server.base}/hello",
        "status": 200,
        "content_type": "text/plain; charset=utf-8",
        "bytes": len("héllo wörld".encode()),
        "text": "héllo wörld",
        "truncated": False,
    }
    json.dumps(out)


def test_get_json_and_charsets(server: Server) -> None:
    assert http.http_get(f"{server.base}/json")["text"] == '{"ok": true}'
    assert http.http_get(f"{server.base}/latin1")["text"] == "café"
    assert http.http_get(f"{server.base}/weird")["text"] == "plain"


def test_error_status_is_returned(server: Server) -> None:
    out = http.http_get(f"{server.base}/missing")
    assert out["status"] == 404
    assert out["text"] == "not found"


def test_binary_body_is_not_returned_as_text(server: Server) -> None:
    out = http.http_get(f"{server.base}/png")
    assert out["binary"] is True
    assert out["text"] == ""
    assert out["bytes"] == 108


def test_size_cap(server: Server) -> None:
    out = http.http_get(f"{server.base}/big")
    assert out["bytes"] == http.MAX_BYTES
    assert out["truncated"] is True
    assert len(out["text"]) == http.MAX_TEXT_CHARS


def test_host_not_allowlisted(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", "example.com")
    with pytest.raises(PermissionError, match=r"host '127\.0\.0\.1' is not allowlisted"):
        http.http_get(f"{server.base}/hello")
    assert server.requests == []


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/",
        "https://example.com.evil.example/",
        "https://notexample.com/",
        "https://example.com@evil.example/",
        "https://evil.example/?next=https://example.com/",
    ],
)
def test_lookalike_hosts_are_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", "example.com")
    with pytest.raises(PermissionError, match="not allowlisted"):
        http.http_get(url)


def test_plain_http_only_for_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", "example.com")
    with pytest.raises(PermissionError, match="only https"):
        http.http_get("http://example.com/")


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/x", "file:///etc/passwd", "example.com", "//x"])
def test_non_http_urls(server: Server, url: str) -> None:
    with pytest.raises(ValueError, match="not an http"):
        http.http_get(url)


def test_port_in_allowlist_entry(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", f"127.0.0.1:{server.port}")
    assert http.http_get(f"{server.base}/json")["status"] == 200
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", f"127.0.0.1:{server.port + 1}")
    with pytest.raises(PermissionError, match="not allowlisted"):
        http.http_get(f"{server.base}/json")


def test_redirect_within_allowlist(server: Server) -> None:
    server.redirects["/old"] = "/hello"
    out = http.http_get(f"{server.base}/old")
    assert out["text"] == "héllo wörld"
    assert out["url"] == f"{server.base}/hello"
    assert server.requests == ["/old", "/hello"]


def test_redirect_to_unlisted_host_is_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The redirect target is a real server, but not allowlisted: never contacted."""
    with Server() as other:
        monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", f"127.0.0.1:{server.port}")
        server.redirects["/away"] = f"{other.base}/hello"
        with pytest.raises(PermissionError, match=r"redirect to .* refused"):
            http.http_get(f"{server.base}/away")
        assert other.requests == []


def test_redirect_to_another_name_is_refused(server: Server) -> None:
    server.redirects["/away"] = f"http://localhost:{server.port}/hello"
    with pytest.raises(PermissionError, match="host 'localhost' is not allowlisted"):
        http.http_get(f"{server.base}/away")
    assert server.requests == ["/away"]


def test_redirect_to_plain_http_outside_is_refused(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", "127.0.0.1,example.com")
    server.redirects["/down"] = "http://example.com/"
    with pytest.raises(PermissionError, match="only https"):
        http.http_get(f"{server.base}/down")


def test_redirect_loop(server: Server) -> None:
    server.redirects["/loop"] = "/loop"
    with pytest.raises(ConnectionError, match="too many redirects"):
        http.http_get(f"{server.base}/loop")
    assert len(server.requests) == http.MAX_REDIRECTS + 1


def test_timeout(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "TIMEOUT_S", 0.3)
    with pytest.raises(TimeoutError, match="did not answer"):
        http.http_get(f"{server.base}/slow")


def test_connection_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with Server() as srv:
        url = f"{srv.base}/hello"
    monkeypatch.setenv("EDGE_AGENT_HTTP_ALLOWLIST", "127.0.0.1")
    with pytest.raises(ConnectionError, match="failed"):
        http.http_get(url)


def test_environment_proxy_is_ignored(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:9")
    assert http.http_get(f"{server.base}/json")["status"] == 200


@pytest.mark.parametrize(
    ("entry", "url", "allowed"),
    [
        ("example.com", "https://example.com/x", True),
        ("example.com", "https://EXAMPLE.com./x", True),
        ("example.com", "https://api.example.com/", False),
        ("*.example.com", "https://api.example.com/", True),
        ("*.example.com", "https://a.b.example.com/", True),
        ("*.example.com", "https://example.com/", False),
        ("*.example.com", "https://badexample.com/", False),
        ("example.com:8443", "https://example.com:8443/", True),
        ("example.com:8443", "https://example.com/", False),
        ("example.com:443", "https://example.com/", True),
        ("[::1]", "http://[::1]:8080/", True),
    ],
)
def test_allowlist_entries(entry: str, url: str, allowed: bool) -> None:
    assert http.parse_entry(entry).matches(httpx.URL(url)) is allowed


@pytest.mark.parametrize("entry", ["example.com:port", "https://example.com", "a/b", "u@host"])
def test_bad_allowlist_entries(entry: str) -> None:
    with pytest.raises(ValueError, match="EDGE_AGENT_HTTP_ALLOWLIST"):
        http.parse_entry(entry)


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("example.com", False),
        ("localhost.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert http.is_loopback(host) is loopback
