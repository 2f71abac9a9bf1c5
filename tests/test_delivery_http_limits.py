"""The HTTP transport's framing, bounds, deadlines and graceful stop, on raw loopback sockets.

Issue 12, findings 1, 2 and 5: a body is never read beyond its limit (nor before the bearer
check), an unread body is never parsed as the next request, connections are bounded and
idle or slow ones time out; and ``stop()`` drains requests in flight within a bound.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from delivery.http import HttpTransport
from delivery.http_exchange import Limits, query_param
from delivery.protocol import Status, decode_command, encode_status
from delivery.worker import Worker
from tests.http_wire import (
    EVENTS_TOKEN,
    answers,
    basic,
    connect,
    exchange,
    read_all,
    request,
    serving,
    settings,
    small_worker,
)

STATUS = encode_status(Status(b"0.1", 512, 9))
DFU = "/v1/dfu?application=app&device=dev1"
AUTH = {"Authorization": basic("dev1@app", "pw-1")}


@pytest.fixture
def worker(tmp_path: Path) -> Worker:
    return small_worker(tmp_path)


def head(method: str, target: str, length: str, extra: str = "") -> bytes:
    return (
        f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}\r\n"
    ).encode()


# finding 1: unbounded body before auth ---------------------------------------------------


@pytest.mark.parametrize("length", ["-1", "abc", "1e9", "+5", "0x10"])
def test_a_bad_content_length_is_answered_400_at_once(worker: Worker, length: str) -> None:
    with serving(worker, settings()) as transport:
        for target in (DFU, "/v1/events"):
            # the client goes on sending: the server must not read it as the body
            got, closed = exchange(transport, head("POST", target, length) + b"x" * 65536, 3)
            assert [a.status for a in got] == [400], (target, length, got)
            assert b"Content-Length" in got[0].body, got[0].body
            assert closed, "the connection is closed after a framing error"


def test_a_huge_declared_body_is_refused_before_it_is_read(worker: Worker) -> None:
    """413 (or 401 without the bearer token) on the head alone; the body is never awaited."""
    with serving(worker, settings()) as transport:
        cases = [
            ("POST", DFU, "", 413),  # over the 4 KiB status limit
            ("POST", "/v1/events", "", 401),  # no token: refused before the body
            ("POST", "/v1/events", f"Authorization: Bearer {EVENTS_TOKEN}\r\n", 413),  # > 1 MiB
        ]
        for method, target, extra, code in cases:
            started = time.monotonic()
            with connect(transport) as sock:
                sock.sendall(head(method, target, str(10**12), extra))  # and no body at all
                data, closed = read_all(sock, 3)
            assert [a.status for a in answers(data)] == [code], (target, data[:300])
            assert closed and time.monotonic() - started < 2.5, "answered without the body"
        stats = transport.stats()
        assert stats["too_large"] == 2 and stats["timeout_body"] == 0


def test_a_chunked_body_is_cut_at_the_limit(worker: Worker) -> None:
    with serving(worker, settings()) as transport:
        chunk = b"1000\r\n" + b"z" * 4096 + b"\r\n"
        raw = (
            f"POST {DFU} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            f"Authorization: {AUTH['Authorization']}\r\n\r\n"
        ).encode() + chunk * 64  # 256 KiB, never terminated
        got, closed = exchange(transport, raw, 3)
        assert [a.status for a in got] == [413] and closed


# finding 2: keep-alive desync / request smuggling ------------------------------------------

SMUGGLED = request(
    "POST", "/v1/events", b"{}", {"Authorization": f"Bearer {EVENTS_TOKEN}"}
) + request("GET", "/v1/status", headers={"Authorization": "Bearer status-secret-1"})


@pytest.mark.parametrize(
    "carrier",
    [
        # an oversized status (413): its body holds two more requests
        request("POST", DFU, SMUGGLED + b"\x00" * 5000, AUTH),
        # an unknown path (404) with a body
        request("POST", "/nowhere", SMUGGLED),
        # a GET with a body
        request("GET", "/v1/status", SMUGGLED, {"Authorization": "Bearer status-secret-1"}),
        # a status without credentials (401) whose body is another request
        request("POST", "/v1/events", SMUGGLED),
    ],
    ids=["413", "404", "get-with-body", "401"],
)
def test_an_unread_body_is_never_parsed_as_the_next_request(worker: Worker, carrier: bytes) -> None:
    with serving(worker, settings()) as transport:
        got, _closed = exchange(transport, carrier, 2)
        assert len(got) == 1, [(a.status, a.body[:80]) for a in got]
        assert worker.counters.snapshot().get("events", 0) == 0


def test_keep_alive_still_works_after_answers_that_read_the_body(worker: Worker) -> None:
    """Framing is exact: answered requests (200, 400, 401 for devices) keep the connection."""
    with serving(worker, settings()) as transport, connect(transport) as sock:
        sock.sendall(
            request("POST", DFU, STATUS, AUTH)
            + request("POST", DFU, b"\xffjunk", AUTH)
            + request("POST", DFU, STATUS, {"Authorization": basic("dev1@app", "no")})
            + request("GET", "/v1/status/app/dev1", headers={"Authorization": "Bearer x"})
            + request("POST", DFU, STATUS, AUTH)
        )
        data, _ = read_all(sock, 1.5)
    got = answers(data)
    assert [a.status for a in got] == [200, 400, 401, 401, 200]
    assert decode_command(got[-1].body).correlation_id == 9


# finding 5: threads without bound, idle and slow connections -------------------------------

FAST = Limits(keep_alive_timeout=0.5, header_timeout=1.0, body_timeout=1.0, max_connections=8)


def test_an_idle_connection_is_closed_after_the_keep_alive_timeout(worker: Worker) -> None:
    with serving(worker, settings(limits=FAST)) as transport:
        with connect(transport) as fresh:  # never sends a byte
            data, closed = read_all(fresh, 3)
            assert closed and data == b""
        with connect(transport) as used:  # one request, then idle
            used.sendall(request("POST", DFU, STATUS, AUTH))
            data, closed = read_all(used, 3)
            assert closed and [a.status for a in answers(data)] == [200]
        assert transport.stats()["timeout_keep_alive"] == 2


def trickle(sock: socket.socket, data: bytes, every_s: float, stop: threading.Event) -> None:
    for i in range(len(data)):
        if stop.wait(every_s):
            return
        try:
            sock.sendall(data[i : i + 1])
        except OSError:
            return


@pytest.mark.parametrize("phase", ["header", "body"])
def test_a_slow_client_is_cut_off_at_the_deadline(worker: Worker, phase: str) -> None:
    """Slowloris: a byte every 0.1 s keeps no connection past the 1 s deadline."""
    with serving(worker, settings(limits=FAST)) as transport, connect(transport) as sock:
        full = request("POST", DFU, STATUS * 4, AUTH)
        split = full.index(b"\r\n\r\n") + 4
        if phase == "header":
            sock.sendall(full[:10])
            rest = full[10:]
        else:
            sock.sendall(full[:split])
            rest = full[split:]
        stop = threading.Event()
        sender = threading.Thread(target=trickle, args=(sock, rest, 0.1, stop))
        sender.start()
        started = time.monotonic()
        try:
            data, closed = read_all(sock, 4)
        finally:
            stop.set()
            sender.join()
        assert closed and time.monotonic() - started < 3, "cut off near the deadline"
        assert [a.status for a in answers(data)] == [408]
        assert transport.stats()[f"timeout_{phase}"] == 1


def test_connections_are_bounded_and_cost_no_thread_each(worker: Worker) -> None:
    limits = Limits(max_connections=8, threads=4)
    with serving(worker, settings(limits=limits)) as transport:
        # threads of earlier tests may still be ending (a pool's stop does not join its
        # threads): compare which threads run, not how many
        threads = set(threading.enumerate())
        busy = [connect(transport) for _ in range(8)]
        try:
            for sock in busy:  # each is mid-request: not idle, so not evicted
                sock.sendall(b"POST /v1/dfu HTTP/1.1\r\n")
            # until the server has read those bytes, a connection is idle (and evictable)
            wait_until(lambda: busy_connections(transport) == 8, "the server to read 8 requests")
            started = set(threading.enumerate()) - threads
            assert not started, f"no thread per connection: {started}"
            got, closed = exchange(transport, request("POST", DFU, STATUS, AUTH))
            assert [a.status for a in got] == [503] and closed
            assert transport.stats()["rejected_busy"] == 1
        finally:
            for sock in busy:
                sock.close()


def test_an_idle_connection_makes_room_for_a_new_one(worker: Worker) -> None:
    """Held idle connections cannot lock devices out: the longest idle one is closed."""
    limits = Limits(max_connections=4, keep_alive_timeout=60)
    with serving(worker, settings(limits=limits)) as transport:
        idle = [connect(transport) for _ in range(4)]
        devices = [connect(transport) for _ in range(3)]  # each stays open after its answer
        try:
            for sock in devices:
                sock.sendall(request("POST", DFU, STATUS, AUTH))
                data, _ = read_all(sock, 0.5)
                assert [a.status for a in answers(data)] == [200]
            assert transport.stats()["evicted_idle"] == 3
            assert [read_all(sock, 0.2)[1] for sock in idle] == [True, True, True, False]
        finally:
            for sock in idle + devices:
                sock.close()


# graceful stop ------------------------------------------------------------------------------


class SlowWorker(Worker):
    delay = 1.0
    handling: threading.Event  # set when a request reaches the worker

    def handle(self, application: str, device: str, payload: bytes) -> bytes | None:
        self.handling.set()
        time.sleep(self.delay)
        return super().handle(application, device, payload)


def slow(tmp: Path, delay: float) -> SlowWorker:
    base = small_worker(tmp)
    worker = SlowWorker(base.targets, base.store)
    worker.delay, worker.handling = delay, threading.Event()
    return worker


def wait_until(check: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def busy_connections(transport: HttpTransport) -> int:
    """Connections the server has read a request (or part of one) from."""
    return sum(not c.idle for c in list(transport.server._conns.values()))


def test_stop_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    worker = slow(tmp_path, 1.0)
    transport = HttpTransport(worker, settings())
    transport.start()
    sock = connect(transport)
    idle = connect(transport)
    try:
        sock.sendall(request("POST", DFU, STATUS, AUTH))
        assert worker.handling.wait(10)  # the handler is running
        started = time.monotonic()
        stopper = threading.Thread(target=transport.stop)
        stopper.start()
        data, closed = read_all(sock, 5)
        (answer,) = answers(data)
        assert answer.status == 200 and answer.headers.get("connection") == "close" and closed
        # 'Connection: close' means the server is stopping, its listener closed; it drains on
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection((transport.host, transport.port), timeout=1).close()
        sock.close()  # as a device does after 'Connection: close' (the server lingers until then)
        stopper.join(10)
        assert not stopper.is_alive()
        assert decode_command(answer.body).correlation_id == 9
        assert read_all(idle, 1)[1], "idle connections are closed at once"
        assert time.monotonic() - started < 3
    finally:
        sock.close()
        idle.close()
        transport.stop()


def test_stop_is_bounded_by_the_drain_timeout(tmp_path: Path) -> None:
    worker = slow(tmp_path, 6.0)
    transport = HttpTransport(worker, settings(limits=Limits(drain_timeout=0.5)))
    transport.start()
    with connect(transport) as sock:
        sock.sendall(request("POST", DFU, STATUS, AUTH))
        time.sleep(0.3)
        started = time.monotonic()
        transport.stop()
        assert time.monotonic() - started < 2.5
        data, closed = read_all(sock, 1)
        assert closed and data == b""


@hypothesis_settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["application", "device", "x", "", "device%20", "a+b"]),
            st.sampled_from(["", "=", "=="]),
            st.text(alphabet="ab0%2+=;&é", max_size=6),
        ),
        max_size=5,
    ),
    st.sampled_from(["application", "device", "x", ""]),
)
def test_query_param_reads_like_parse_qs(fields: list[tuple[str, str, str]], name: str) -> None:
    """The quick path for plain queries gives what ``parse_qs`` gives, for any query."""
    query = "&".join(key + sep + value for key, sep, value in fields)
    assert query_param(query, name) == (parse_qs(query).get(name) or [""])[0]


def test_a_server_stopped_while_clients_connect_leaks_no_socket(tmp_path: Path) -> None:
    """Clients keep connecting while the server stops: the connections accepted last are
    closed by the server, not left to the event loop's end (a ResourceWarning each: an
    unclosed socket and transport)."""
    import gc
    import sys
    import warnings

    worker = small_worker(tmp_path)
    leaked: list[str] = []
    old_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: leaked.append(f"{u.exc_value!r} {u.object!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", ResourceWarning)  # in __del__: unraisable
            for _ in range(20):
                transport = HttpTransport(worker, settings())
                transport.start()
                done = threading.Event()

                def knock(port: int = transport.port, done: threading.Event = done) -> None:
                    while not done.is_set():
                        try:
                            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                        except OSError:
                            pass

                knockers = [threading.Thread(target=knock) for _ in range(3)]
                for knocker in knockers:
                    knocker.start()
                time.sleep(0.05)
                transport.stop()
                done.set()
                for knocker in knockers:
                    knocker.join(10)
                gc.collect()
    finally:
        sys.unraisablehook = old_hook
    assert leaked == []
