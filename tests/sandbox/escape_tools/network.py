"""Escape attempts over the network: every one must fail with network=False."""

from __future__ import annotations

import socket

from edge_agent.toolbox.registry import tool


@tool("Connect to a TCP port on 127.0.0.1.", timeout_s=5)
def tcp_connect(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"escaped")
    return "connected"


@tool("Send a UDP datagram to 127.0.0.1.", timeout_s=5)
def udp_send(port: int) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(b"escaped", ("127.0.0.1", port))
    return "sent"


@tool("Connect to a listening unix socket by path.", timeout_s=5)
def unix_connect(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        sock.sendall(b"escaped")
    return "connected"


@tool("Connect to an abstract unix socket (no file, just a name).", timeout_s=5)
def abstract_connect(name: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect("\0" + name)
        sock.sendall(b"escaped")
    return "connected"


@tool("Create a unix socket file at a path.", timeout_s=5)
def unix_bind(path: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(path)
    return "bound"


@tool("Connect to a TCP port on 127.0.0.1; this tool may use the network.", network=True)
def tcp_connect_allowed(port: int) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"allowed")
    return "connected"
