"""Loopback servers that stall, for deadline tests: real TCP sockets, no mocks.

``silent()`` accepts connections and never sends a byte. ``dripping()`` reads a request,
then sends one byte of a never-ending HTTP header every half second, so per-read timeouts
never fire and only a total deadline ends the exchange.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Stalled:
    port: int
    connections: list[socket.socket] = field(default_factory=list)  # accepted so far


@contextmanager
def _serve(drip: bool) -> Iterator[Stalled]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    found = Stalled(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn = server.accept()[0]
            except OSError:
                conn = None
            if conn is not None:
                found.connections.append(conn)  # closed at the end, whatever happens
                if drip:
                    try:
                        conn.settimeout(5)
                        conn.recv(65536)
                        conn.sendall(b"HTTP/1.1 200 OK\r\nX-Stall: ")
                    except OSError:
                        pass
            if drip:
                for held in list(found.connections):
                    try:
                        held.send(b"z")
                    except OSError:
                        pass
                stop.wait(0.5)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield found
    finally:
        stop.set()
        thread.join(5)
        for conn in found.connections:
            conn.close()
        server.close()


@contextmanager
def silent() -> Iterator[Stalled]:
    with _serve(drip=False) as found:
        yield found


@contextmanager
def dripping() -> Iterator[Stalled]:
    with _serve(drip=True) as found:
        yield found
