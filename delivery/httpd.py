"""A small HTTP/1.1 server for the delivery worker: h11's framing on asyncio, with bounds.

Why this and not ``http.server`` or uvicorn: docs/delivery.md ("The HTTP server").

* **Framing is h11's.** ``Content-Length`` must be digits, chunked bodies are decoded, and a
  body is only ever read as that body. A connection whose body was not read to its end (an
  early answer: 401, 404, 413) is closed after the answer, so what is left of that body can
  never be parsed as the next request.
* **Every phase has a deadline**: the wait for a request (keep-alive, the first request
  too), the request head from its first byte (slowloris), the whole body, and the write of
  the answer. TLS handshakes get the head's deadline.
* **Bounded**: at most ``max_connections`` open (a new connection closes the longest idle
  one to make room, or is answered 503), request heads of at most ``max_header_bytes``,
  bodies within the route's limit (the declared length is checked before a byte of the
  body is read), and handlers run on ``threads`` threads, never on the event loop: a
  firmware source may block on the network.
* **Graceful stop**: stop accepting, close idle connections, let requests in flight finish
  for up to ``drain_timeout`` seconds (answered with ``Connection: close``), then close the
  rest.

The application decides in two steps. :meth:`App.route` runs on the event loop with the
request head alone (method, path, headers) and must be quick: it returns an answer at once
(404, 401 …) or an :class:`Accept` with the body limit and the handler, which then runs on
the thread pool with the body.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import threading
from collections import Counter

from delivery.http_connection import (
    LINGER_S,
    Connection,
    ConnState,
    PhaseTimeout,
    raw_answer,
)
from delivery.http_exchange import App, Limits
from delivery.thread_pool import ThreadPool

log = logging.getLogger("delivery.http")

STATS = (
    "connections",
    "requests",
    "rejected_busy",
    "evicted_idle",
    "bad_requests",
    "too_large",
    "timeout_keep_alive",
    "timeout_header",
    "timeout_body",
    "timeout_write",
    "connection_errors",
    "errors",
)


class Server:
    """Serves ``app`` on ``sock`` from an event loop in a background thread."""

    def __init__(
        self,
        app: App,
        sock: socket.socket,
        limits: Limits,
        tls: ssl.SSLContext | None = None,
        name: str = "delivery-http",
    ) -> None:
        self.app, self.limits, self._sock, self._tls = app, limits, sock, tls
        # written on the loop only, every key there from the start: snapshot() may copy it
        self.stats: Counter[str] = Counter(dict.fromkeys(STATS, 0))
        self.loop = asyncio.new_event_loop()
        self.pool = ThreadPool(limits.threads, name)
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._conns: dict[asyncio.Task[None], ConnState] = {}
        self.in_flight = 0
        self.stopping = False
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failed: BaseException | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self.pool.start()
        self._thread.start()
        self._ready.wait(30)
        if self._failed is not None:
            raise self._failed

    def stop(self) -> None:
        """Stop accepting, drain requests in flight (``drain_timeout``), close the rest."""
        if not self._thread.is_alive():
            if not self._thread.ident:  # never started
                self._sock.close()
                self.loop.close()
                self.pool.stop()
            return
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(stop.set)
        self._thread.join(self.limits.drain_timeout + LINGER_S + 5)
        self.pool.stop()

    def snapshot(self) -> dict[str, int]:
        """Counters and gauges, for logs and metrics (safe from any thread)."""
        stats = dict(self.stats)
        stats["connections_open"] = len(self._conns)
        stats["requests_in_flight"] = self.in_flight
        return stats

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), or logged after it returned
            self._failed = exc
            if self._ready.is_set():
                log.exception("the HTTP server stopped")
        finally:
            self._ready.set()
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(
            self._accept,
            sock=self._sock,
            ssl=self._tls,
            ssl_handshake_timeout=self.limits.header_timeout if self._tls else None,
            limit=self.limits.max_header_bytes + 64 * 1024,
        )
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self._stop_accepting(server)
            server.close()  # the open connections go on
            await self._drain()
            await _iterations(2)  # the transports closed last end in a callback

    async def _stop_accepting(self, server: asyncio.Server) -> None:
        """Accept no more, and let the connections accepted last get their transports
        first (``_accept`` closes them: we are stopping). Closing the server at once would
        leave those to asyncio, which leaks their sockets once the server is closed."""
        self.stopping = True
        for sock in server.sockets:
            self.loop.remove_reader(sock.fileno())
        await _iterations(4)

    async def _drain(self) -> None:
        self.stopping = True
        for task, conn in list(self._conns.items()):
            if conn.idle:
                task.cancel()
        tasks = list(self._conns)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.limits.drain_timeout)
            if pending:
                log.warning(
                    "stopping: %d requests still running after the %.0f s drain; closing them",
                    len(pending),
                    self.limits.drain_timeout,
                )
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending, timeout=5)

    # connections ----------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self.stopping:
            writer.transport.abort()  # closed in a callback of the next iteration
            return
        if len(self._conns) >= self.limits.max_connections and not self._evict_idle():
            self.stats["rejected_busy"] += 1
            log.warning("%d connections open: refused one (503)", len(self._conns))
            writer.write(raw_answer(503, "too many connections; try again later"))
            await self._close(writer, abort=False)
            return
        raw = writer.get_extra_info("socket")
        if raw is not None and raw.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets this only on sockets made with proto=IPPROTO_TCP; a 100 Continue
            # and its answer are two writes, which Nagle and delayed ACKs would stall ~40 ms
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = ConnState(task, idle=True, idle_since=self.loop.time())
        self._conns[task] = conn
        self.stats["connections"] += 1
        abort = False
        try:
            await Connection(self, conn, reader, writer).run()
        except PhaseTimeout as exc:
            self.stats[f"timeout_{exc.phase}"] += 1
            abort = exc.phase == "write"  # the client does not read: drop what is queued
            if exc.phase in ("header", "body"):
                with contextlib.suppress(Exception):
                    writer.write(
                        raw_answer(408, f"the request {exc.phase} took too long; send it at once")
                    )
        except (ConnectionError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            self.stats["connection_errors"] += 1
        except asyncio.CancelledError:
            pass  # evicted while idle, or the drain ran out
        except Exception:  # one bad connection never stops the server
            self.stats["errors"] += 1
            log.exception("HTTP connection failed")
        finally:
            del self._conns[task]
            await self._close(writer, abort)

    def _evict_idle(self) -> bool:
        idle = [(c.idle_since, t) for t, c in self._conns.items() if c.idle and not t.done()]
        if not idle:
            return False
        _, victim = min(idle, key=lambda pair: pair[0])
        self._conns[victim].idle = False  # not chosen twice
        victim.cancel()
        self.stats["evicted_idle"] += 1
        return True

    async def _close(self, writer: asyncio.StreamWriter, abort: bool) -> None:
        if abort:
            writer.transport.abort()
            return
        writer.close()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1):
                await writer.wait_closed()


async def _iterations(count: int) -> None:
    """Let the event loop run ``count`` times (callbacks scheduled with call_soon)."""
    for _ in range(count):
        await asyncio.sleep(0)
