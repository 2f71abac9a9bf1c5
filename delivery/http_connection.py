"""One HTTP/1.1 connection of :mod:`delivery.httpd`: h11's framing, request by request.

A request head is read within its deadline, routed on the event loop, its body read (within
the route's limit, declared length checked first) and handed to the thread pool, and the
answer written within the write deadline. A connection whose body was not read to its end
is half-closed after the answer, and what the client still sends is discarded briefly
(``LINGER_S``), so it can never be parsed as the next request.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import ssl
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol

import h11

from delivery.http_exchange import App, Limits, Request, Response
from delivery.thread_pool import ThreadPool

log = logging.getLogger("delivery.http")

LINGER_S = 2.0  # after an early answer, unread input is discarded this long, then closed
LINGER_BYTES = 1024 * 1024


@dataclass
class ConnState:
    """What the server knows of a connection: its task, and whether it waits idle."""

    task: asyncio.Task[None] | None
    idle: bool = True
    idle_since: float = 0.0


class Host(Protocol):
    """What a connection uses of its server."""

    app: App
    limits: Limits
    stats: Counter[str]
    loop: asyncio.AbstractEventLoop
    pool: ThreadPool
    stopping: bool
    in_flight: int


class PhaseTimeout(Exception):
    def __init__(self, phase: str) -> None:
        super().__init__(phase)
        self.phase = phase


class TooLarge(Exception):
    pass


def raw_answer(status: int, message: str) -> bytes:
    """A whole answer for a connection h11 can no longer answer on (then closed)."""
    body = (message + "\n").encode()
    phrase = http.HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


class Connection:
    """The requests of one client connection, answered in turn (keep-alive)."""

    def __init__(
        self,
        server: Host,
        conn: ConnState,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.server, self.conn, self.reader, self.writer = server, conn, reader, writer
        self.limits, self.loop, self.stats = server.limits, server.loop, server.stats

    async def read(self, reader: asyncio.StreamReader, deadline: float, phase: str) -> bytes:
        try:
            async with asyncio.timeout_at(deadline):
                return await reader.read(65536)
        except TimeoutError:
            raise PhaseTimeout(phase) from None

    async def run(self) -> None:
        """Answer requests until the client closes, a deadline passes, or a body is left."""
        conn, reader, writer = self.conn, self.reader, self.writer
        h = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_header_bytes)
        peer = writer.get_extra_info("peername")
        client = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        cert = writer.get_extra_info("peercert") or None
        while True:
            conn.idle, conn.idle_since = True, self.loop.time()
            try:
                event = await self._head(conn, h, reader)
            except h11.RemoteProtocolError as exc:
                self.stats["bad_requests"] += 1
                status = exc.error_status_hint if 400 <= exc.error_status_hint < 600 else 400
                writer.write(raw_answer(status, f"bad request: {exc}; send one HTTP/1.1 request"))
                return
            if event is None:
                return
            conn.idle = False
            self.stats["requests"] += 1
            try:
                response = await self._answer(h, reader, writer, self._request(event, client, cert))
            except h11.RemoteProtocolError as exc:  # a broken chunked body
                self.stats["bad_requests"] += 1
                writer.write(raw_answer(400, f"bad request body: {exc}"))
                return
            close = self.server.stopping or h.their_state is not h11.DONE
            await self._send(h, writer, response, close)
            if close or h.our_state is not h11.DONE:
                if h.their_state is not h11.DONE:
                    await self._linger(reader, writer)
                return
            h.start_next_cycle()

    async def _head(
        self, conn: ConnState, h: h11.Connection, reader: asyncio.StreamReader
    ) -> h11.Request | None:
        """The next request's head; None when the client closed between requests."""
        pending, _closed = h.trailing_data
        if pending:
            phase, deadline = "header", self.loop.time() + self.limits.header_timeout
            conn.idle = False
        else:
            phase, deadline = (
                "keep_alive",
                self.loop.time() + self.limits.keep_alive_timeout,
            )
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                if self.server.stopping and phase == "keep_alive":
                    return None
                data = await self.read(reader, deadline, phase)
                if data and phase == "keep_alive":
                    phase, deadline = (
                        "header",
                        self.loop.time() + self.limits.header_timeout,
                    )
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
            decision = self.server.app.route(request)
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
        except TooLarge:
            self.stats["too_large"] += 1
            return _too_large(request, None, decision.max_body)
        self.server.in_flight += 1
        try:
            return await self.server.pool.run(self.loop, decision.handler, request, body)
        except Exception:
            self.stats["errors"] += 1
            log.exception("%s %s failed", request.method, request.path)
            return Response.text(500, "internal error; see the worker's log")
        finally:
            self.server.in_flight -= 1

    async def _body(self, h: h11.Connection, reader: asyncio.StreamReader, limit: int) -> bytes:
        deadline = self.loop.time() + self.limits.body_timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            event = h.next_event()
            if event is h11.NEED_DATA:
                h.receive_data(await self.read(reader, deadline, "body"))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > limit:
                    raise TooLarge
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
            raise PhaseTimeout("write") from None

    async def _linger(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """After an early answer: half-close, discard what the client still sends, briefly.

        Closing at once with unread input makes the kernel send a reset, which can destroy the
        answer before the client has read it.
        """
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()
        deadline = self.loop.time() + LINGER_S
        discarded = 0
        with contextlib.suppress(PhaseTimeout, OSError, ssl.SSLError):
            while discarded < LINGER_BYTES and (
                data := await self.read(reader, deadline, "linger")
            ):
                discarded += len(data)


def _too_large(request: Request, declared: int | None, limit: int) -> Response:
    size = f"{declared} bytes" if declared is not None else "more than that"
    return Response.text(
        413, f"the body of {request.method} {request.path} is {size}; the limit is {limit} bytes"
    )
