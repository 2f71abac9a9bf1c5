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
import http
import logging
import queue
import socket
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11

from delivery.http_exchange import App, Limits, Request, Response

log = logging.getLogger("delivery.http")

LINGER_S = 2.0  # after an early answer, unread input is discarded this long, then closed
LINGER_BYTES = 1024 * 1024
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


@dataclass
class _Conn:
    task: asyncio.Task[None] | None
    idle: bool = True
    idle_since: float = 0.0


class _Timeout(Exception):
    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


class _TooLarge(Exception):
    pass


class _Pool:
    """``threads`` daemon threads for the handlers (a stuck handler never blocks exit)."""

    def __init__(self, threads: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)

    def run(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Response], *args: Any
    ) -> asyncio.Future[Response]:
        future: asyncio.Future[Response] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        return future

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            loop, future, fn, args = job
            try:
                result, error = fn(*args), None
            except Exception as exc:  # the connection answers 500; the thread goes on
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Response], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def _raw(status: int, message: str) -> bytes:
    """A whole answer for a connection h11 can no longer answer on (then closed)."""
    body = (message + "\n").encode()
    phrase = http.HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


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
        self._loop = asyncio.new_event_loop()
        self._pool = _Pool(limits.threads, name)
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._conns: dict[asyncio.Task[None], _Conn] = {}
        self._in_flight = 0
        self._stopping = False
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._failed: BaseException | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    # lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._pool.start()
        self._thread.start()
        self._ready.wait(30)
        if self._failed is not None:
            raise self._failed

    def stop(self) -> None:
        """Stop accepting, drain requests in flight (``drain_timeout``), close the rest."""
        if not self._thread.is_alive():
            if not self._thread.ident:  # never started
                self._sock.close()
                self._loop.close()
                self._pool.stop()
            return
        stop = self._stop
        if stop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(stop.set)
        self._thread.join(self.limits.drain_timeout + LINGER_S + 5)
        self._pool.stop()

    def snapshot(self) -> dict[str, int]:
        """Counters and gauges, for logs and metrics (safe from any thread)."""
        stats = dict(self.stats)
        stats["connections_open"] = len(self._conns)
        stats["requests_in_flight"] = self._in_flight
        return stats

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._serve())
        except BaseException as exc:  # reported to start(), or logged after it returned
            self._failed = exc
            if self._ready.is_set():
                log.exception("the HTTP server stopped")
        finally:
            self._ready.set()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

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
            server.close()  # no new connections; the open ones go on
            await self._drain()

    async def _drain(self) -> None:
        self._stopping = True
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
        if self._stopping:
            writer.close()
            return
        if len(self._conns) >= self.limits.max_connections and not self._evict_idle():
            self.stats["rejected_busy"] += 1
            log.warning("%d connections open: refused one (503)", len(self._conns))
            writer.write(_raw(503, "too many connections; try again later"))
            await self._close(writer, abort=False)
            return
        raw = writer.get_extra_info("socket")
        if raw is not None and raw.family in (socket.AF_INET, socket.AF_INET6):
            # asyncio sets this only on sockets made with proto=IPPROTO_TCP; a 100 Continue
            # and its answer are two writes, which Nagle and delayed ACKs would stall ~40 ms
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(task, idle=True, idle_since=self._loop.time())
        self._conns[task] = conn
        self.stats["connections"] += 1
        abort = False
        try:
            await self._connection(conn, reader, writer)
        except _Timeout as exc:
            self.stats[f"timeout_{exc.phase}"] += 1
            abort = exc.phase == "write"  # the client does not read: drop what is queued
            if exc.phase in ("header", "body"):
                with contextlib.suppress(Exception):
                    writer.write(
                        _raw(408, f"the request {exc.phase} took too long; send it at once")
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

    async def _read(self, reader: asyncio.StreamReader, deadline: float, phase: str) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await reader.read(65536)
        except TimeoutError:
            raise _Timeout(phase) from None

    async def _connection(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        peer = writer.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        cert = writer.get_extra_info("peercert") or None
        while True:
            conn.idle, conn.idle_since = True, self._loop.time()
            try:
                event = await self._head(conn, h, reader)
            except h11.RemoteProtocolError as exc:
                self.stats["bad_requests"] += 1
                status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
                writer.write(_raw(status, f"bad request: {exc}; send one HTTP/1.1 request"))
                return
            if event is None:
                return
            conn.idle = False
            self.stats["requests"] += 1
            try:
                response = await self._answer(h, reader, writer, self._request(event, client, cert))
            except h11.RemoteProtocolError as exc:  # a broken chunked body
                self.stats["bad_requests"] += 1
                writer.write(_raw(400, f"bad request body: {exc}"))
                return
            close = self._stopping or h.their_state is not h11.DONE
            await self._send(h, writer, response, close)
            if close or h.our_state is not h11.DONE:
                if h.their_state is not h11.DONE:
                    await self._linger(reader, writer)
                return
            h.start_next_cycle()

    async def _head(
        self, conn: _Conn, h: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        """The next request's head; None when the client closed between requests."""
        pending, _closed = h.trailing_data
        if pending:
            phase, deadline = "header", self._loop.time() + self.limits.header_timeout
            conn.idle = False
        else:
            phase, deadline = "keep_alive", self._loop.time() + self.limits.keep_alive_timeout
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                if self._stopping and phase == "keep_alive":
                    return None
                data = await self._read(reader, deadline, phase)
                if data and phase == "keep_alive":
                    phase, deadline = "header", self._loop.time() + self.limits.header_timeout
                    conn.idle = False
                h.receive_data(data)
                continue
            if isinstance(event, h11.Request):
                return event
            return None  # ConnectionClosed (or nothing a client may send first)

    def _request(
        self, event: h11.Request, client: tuple[str, int] | None, cert: Any
    ) -> Request | Response:
        headers: dict[str, str] = {}
        for raw_name, raw_value in event.headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            if name in headers:
                if name in ("authorization", "host"):
                    return Response.text(400, f"bad request: the {name} header is repeated")
                value = f"{headers[name]}, {value}"
            headers[name] = value
        if "content-length" in headers and "transfer-encoding" in headers:
            return Response.text(
                400, "bad request: both Content-Length and Transfer-Encoding; send one"
            )
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        return Request(event.method.decode("latin-1"), path, query, headers, client, cert)

    async def _answer(
        self,
        h: h11.Connection,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        request: Request | Response,
    ) -> Response:
        if isinstance(request, Response):
            return request
        try:
            decision = self.app.route(request)
        except Exception:
            log.exception("routing %s %s failed", request.method, request.path)
            return Response.text(500, "internal error; see the worker's log")
        if isinstance(decision, Response):
            if request.header("content-length", "0") == "0" and not request.header(
                "transfer-encoding"
            ):
                h.next_event()  # no body: take its EndOfMessage, the connection stays usable
            return decision
        declared = request.header("content-length")
        if declared and int(declared) > decision.max_body:
            self.stats["too_large"] += 1
            return _too_large(request, int(declared), decision.max_body)
        if h.they_are_waiting_for_100_continue:
            writer.write(h.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")
        try:
            body = await self._body(h, reader, decision.max_body)
        except _TooLarge:
            self.stats["too_large"] += 1
            return _too_large(request, None, decision.max_body)
        self._in_flight += 1
        try:
            return await self._pool.run(self._loop, decision.handler, request, body)
        except Exception:
            self.stats["errors"] += 1
            log.exception("%s %s failed", request.method, request.path)
            return Response.text(500, "internal error; see the worker's log")
        finally:
            self._in_flight -= 1

    async def _body(self, h: h11.Connection, reader: asyncio.StreamReader, limit: int) -> bytes:
        deadline = self._loop.time() + self.limits.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await self._read(reader, deadline, "body"))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise _TooLarge
                chunks.append(bytes(event.data))
            elif isinstance(event, h11.EndOfMessage):
                return b"".join(chunks)
            else:  # the client closed mid-body
                raise ConnectionResetError("the client closed the connection mid-body")

    async def _send(
        self, h: h11.Connection, writer: asyncio.StreamWriter, response: Response, close: bool
    ) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *response.headers,
        ]
        if close:
            headers.append(("connection", "close"))
        reason = http.HTTPStatus(response.status).phrase.encode()
        data = h.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        chunks = [data or b""]
        if response.body:
            chunks.append(h.send(h11.Data(data=response.body)) or b"")
        chunks.append(h.send(h11.EndOfMessage()) or b"")
        writer.write(b"".join(chunks))
        try:
            async with asyncio.timeout(self.limits.write_timeout):
                await writer.drain()
        except TimeoutError:
            raise _Timeout("write") from None

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an early answer: half-close, discard what the client still sends, briefly.

        Closing at once with unread input makes the kernel send a reset, which can destroy the
        answer before the client has read it.
        """
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
        deadline = self._loop.time() + LINGER_S
        discarded = 0
        with contextlib.suppress(_Timeout, OSError, ssl.SSLError):
            while discarded < LINGER_BYTES and (
                data := await self._read(reader, deadline, "linger")
            ):
                discarded += len(data)


def _too_large(request: Request, declared: int | None, limit: int) -> Response:
    size = f"{declared} bytes" if declared is not None else "more than that"
    return Response.text(
        413, f"the body of {request.method} {request.path} is {size}; the limit is {limit} bytes"
    )
