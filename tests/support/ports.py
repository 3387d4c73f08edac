"""Loopback ports for processes a test starts."""

from __future__ import annotations

import socket


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it; a race with another process
    taking it before ours binds is possible but has not been seen on loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_closed(port: int, host: str = "127.0.0.1") -> bool:
    """Nothing accepts connections on ``port`` (a stopped server really let it go)."""
    with socket.socket() as sock:
        return sock.connect_ex((host, port)) != 0


def free_node_port(transport_offset: int = 100) -> int:
    """An HTTP port for a local Elasticsearch node whose transport port (``port +
    transport_offset``, as ``services.elasticsearch_local`` derives it) is free as well: a node a
    test owns, on a port no other test session picks."""
    for _ in range(100):
        with socket.socket() as http:
            http.bind(("127.0.0.1", 0))
            port = http.getsockname()[1]
            if port + transport_offset > 65535:
                continue
            with socket.socket() as transport:
                try:
                    transport.bind(("127.0.0.1", port + transport_offset))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free pair of loopback ports for an Elasticsearch node")
