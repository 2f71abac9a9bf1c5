"""Real loopback TCP servers that misbehave: one that accepts and never answers, a proxy
in front of a real server that passes the first connections and then stalls or goes away, and
a proxy that delays what its clients send."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress


def _pump(source: socket.socket, sink: socket.socket, delay: float = 0.0) -> None:
    with suppress(OSError):
        while data := source.recv(65536):
            time.sleep(delay)
            sink.sendall(data)
    with suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


@contextmanager
def faulty_server(
    target: int | None = None, forward: int = 0, then: str = "stall"
) -> Iterator[int]:
    """A loopback port. Its first ``forward`` connections are passed to ``target`` (a port on
    127.0.0.1); after them it ``stall``s (accepts, reads nothing, never answers) or
    ``refuse``s (closes its listening socket: connections are refused)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        accepted = 0
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            held.append(conn)
            accepted += 1
            if accepted <= forward and target is not None:
                upstream = socket.create_connection(("127.0.0.1", target))
                held.append(upstream)
                for a, b in ((conn, upstream), (upstream, conn)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()
                if accepted == forward and then == "refuse":
                    listener.close()
                    return

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        listener.close()
        for conn in held:
            with suppress(OSError):
                conn.close()
        thread.join(5)


@contextmanager
def slow_uplink(target: int, delay: float) -> Iterator[int]:
    """A loopback port that forwards every connection to ``target`` (a port on 127.0.0.1),
    holding each chunk a client sends for ``delay`` seconds; answers pass at once."""
    listener = socket.create_server(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    held: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", target))
            held.extend((conn, upstream))
            threading.Thread(target=_pump, args=(conn, upstream, delay), daemon=True).start()
            threading.Thread(target=_pump, args=(upstream, conn), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        with suppress(OSError):
            listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close alone does not)
        listener.close()
        for conn in held:
            with suppress(OSError):
                conn.close()
        thread.join(5)
