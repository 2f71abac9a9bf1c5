"""The serial gateway (``delivery.gateway``, ``ajour-delivery gateway``): the relay between a
device's line and the real worker (the framing is test_frames.py's, a real serial port
test_gateway_serial.py's).

The device end here is a TCP server in the test that plays a device's UART (as QEMU's
``-serial tcp:…,server=on`` does) byte by byte, so it can send what a real device would not:
garbage, oversized lengths, frames cut short. The worker is the real one, over its HTTP
transport or through mosquitto; QEMU devices are in test_device_update.py.
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from delivery.broker import broker_files, write
from delivery.frames import FrameReader, encode_frame
from delivery.gateway import Gateway, HttpUplink, MqttUplink, Uplink
from delivery.mqtt import MqttSettings, MqttTransport
from delivery.protocol import Status, Write, decode_command, encode_status
from delivery.uart import UartAddress
from tests.broker import run_broker
from tests.conftest import REPO
from tests.http_wire import serving, settings, small_worker
from tests.registry import free_port

STATUS = encode_status(Status(b"0.1", 512, 7))


# ---- the relay ----------------------------------------------------------------------------


class FakeUart:
    """The device end of the line: a TCP server the gateway connects to."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.address = UartAddress("127.0.0.1", self.server.getsockname()[1])
        self.conn: socket.socket | None = None
        self.reader = FrameReader()
        self.frames: list[bytes] = []

    def accept(self) -> None:
        self.server.settimeout(10)
        self.conn, _ = self.server.accept()
        self.conn.settimeout(5)

    def send(self, data: bytes) -> None:
        assert self.conn is not None
        self.conn.sendall(data)

    def reply(self, timeout: float = 5.0) -> bytes | None:
        """The next command frame's payload, or None if none comes within ``timeout``."""
        assert self.conn is not None
        deadline = time.monotonic() + timeout
        while not self.frames:
            self.conn.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                data = self.conn.recv(65536)
            except TimeoutError:
                return None
            assert data, "the gateway closed the line"
            self.frames += self.reader.feed(data)
        assert self.reader.counts.bad_crc == 0, "the gateway sent a garbled frame"
        return self.frames.pop(0)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.server.close()


@contextmanager
def relaying(uplink: Uplink, **kwargs: float) -> Iterator[tuple[FakeUart, Gateway]]:
    uart = FakeUart()
    relay = Gateway(uart.address, uplink, **kwargs)  # type: ignore[arg-type]
    thread = threading.Thread(target=relay.run, daemon=True)
    thread.start()
    try:
        uart.accept()
        yield uart, relay
    finally:
        relay.stop()
        thread.join(10)
        uart.close()
    assert not thread.is_alive()


def test_garbled_frames_are_counted_and_dropped_and_the_next_marker_resynchronises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="delivery.gateway")
    worker = small_worker(tmp_path)
    with serving(worker, settings()) as http:
        uplink = HttpUplink(http.url, "app", "dev0", "pw-0")
        with relaying(uplink) as (uart, relay):
            uart.send(encode_frame(STATUS))
            first = uart.reply()
            assert first is not None and isinstance(decode_command(first), Write)
            # noise right before a frame, no quiet time: the frame's marker ends the noise
            uart.send(b"\x7f\xff\xff\xff" + bytes(range(1, 256)) + encode_frame(STATUS))
            assert uart.reply() == first
            flipped = bytearray(encode_frame(STATUS))
            flipped[5] ^= 0x04  # a bit flipped on the line: the CRC is wrong, never forwarded
            uart.send(bytes(flipped) + encode_frame(STATUS))
            assert uart.reply() == first
            assert uart.reply(timeout=0.3) is None  # one answer: the flipped one got none
            uart.send(encode_frame(b"\xff\x00 not CBOR"))  # framed, but the worker refuses it
            assert uart.reply(timeout=0.5) is None
            uart.send(b"\x00" + b"\x55" * 5000 + encode_frame(STATUS))  # over any frame
            assert uart.reply() == first
            uart.send(encode_frame(STATUS)[:7])  # cut short: then QEMU exits (a power cycle)
            time.sleep(0.2)
            uart.conn.close()  # type: ignore[union-attr]
            uart.accept()  # the gateway connects again
            uart.send(encode_frame(STATUS))
            assert uart.reply() == first
        s = relay.stats
        assert (s.frames, s.replies, s.rejected) == (6, 5, 1)
        assert (s.bad_crc, s.oversized, s.truncated) == (2, 1, 1)
        assert (s.connects, s.unanswered, s.late) == (2, 0, 0)
        assert s.bytes_out == 5 * len(encode_frame(first))
    lines = [r.getMessage() for r in caplog.records if "garbled frames" in r.getMessage()]
    assert lines and "1 with a bad CRC" in lines[0], lines


class HeldUplink:
    """The real HTTP uplink, answering once ``release`` is set (a worker under load)."""

    def __init__(self, inner: HttpUplink) -> None:
        self.inner = inner
        self.asked, self.release = threading.Event(), threading.Event()

    def exchange(self, status: bytes) -> bytes:
        self.asked.set()
        self.release.wait(10)
        return self.inner.exchange(status)

    def close(self) -> None:
        self.inner.close()


class BrokenUplink:
    """An uplink with a bug: its first exchange raises what no uplink should."""

    def __init__(self, inner: HttpUplink) -> None:
        self.inner, self.calls = inner, 0

    def exchange(self, status: bytes) -> bytes:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug")
        return self.inner.exchange(status)

    def close(self) -> None:
        self.inner.close()


def test_an_uplink_that_raises_costs_one_answer_not_the_relay(tmp_path: Path) -> None:
    worker = small_worker(tmp_path)
    with serving(worker, settings()) as http:
        with relaying(BrokenUplink(HttpUplink(http.url, "app", "dev0", "pw-0"))) as (uart, relay):
            uart.send(encode_frame(STATUS))
            assert uart.reply(timeout=0.5) is None
            uart.send(encode_frame(STATUS))
            assert uart.reply() is not None
    assert (relay.stats.unanswered, relay.stats.replies) == (1, 1)


def test_a_reply_the_device_stopped_waiting_for_is_dropped(tmp_path: Path) -> None:
    worker = small_worker(tmp_path)
    with serving(worker, settings()) as http:
        uplink = HeldUplink(HttpUplink(http.url, "app", "dev0", "pw-0"))
        with relaying(uplink) as (uart, relay):
            uart.send(encode_frame(STATUS))
            assert uplink.asked.wait(10)  # the relay read it and waits for the worker
            # the device timed out and sends its status again, a new id
            uart.send(encode_frame(encode_status(Status(b"0.1", 512, 8))))
            uplink.release.set()
            reply = uart.reply()
            assert reply is not None and decode_command(reply).correlation_id == 8
            assert uart.reply(timeout=0.5) is None  # the late one never reaches the device
    assert (relay.stats.frames, relay.stats.replies, relay.stats.late) == (2, 1, 1)


def test_worker_down_no_answer_one_log_line_then_it_serves_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    uplink = HttpUplink(f"http://127.0.0.1:{port}", "app", "dev0", "pw-0", timeout=2.0)
    caplog.set_level(logging.WARNING, logger="delivery.gateway")
    with relaying(uplink) as (uart, relay):
        for _ in range(3):  # the device times out and sends its status again
            uart.send(encode_frame(STATUS))
            assert uart.reply(timeout=0.3) is None
        assert relay.stats.unanswered == 3
        lines = [r.getMessage() for r in caplog.records if r.name == "delivery.gateway"]
        assert len(lines) == 1, lines  # once per interval, not once per status
        assert f"127.0.0.1:{port}" in lines[0] and "the device gets no answer" in lines[0]
        worker = small_worker(tmp_path)
        with serving(worker, settings(port=port)):
            uart.send(encode_frame(STATUS))
            reply = uart.reply()
            assert reply is not None and isinstance(decode_command(reply), Write)
    assert "pw-0" not in caplog.text


def test_a_uart_that_stays_away_is_logged_a_short_gap_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="delivery.gateway")
    missing = UartAddress(path=str(tmp_path / "no-qemu-yet"))
    relay = Gateway(missing, HttpUplink("http://127.0.0.1:9", "app", "dev0"), unreachable_log=0.5)
    thread = threading.Thread(target=relay.run, daemon=True)
    started = time.time()
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.02)
        assert caplog.records, "a UART away for 10 s was never logged"
        # a power cycle's gap (under unreachable_log) is not logged
        assert caplog.records[0].created - started >= 0.5
        time.sleep(0.5)  # the relay tries again twice, and says nothing more
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 1 and f"cannot connect to the UART at {missing}" in lines[0], lines
    finally:
        relay.stop()
        thread.join(10)
    assert relay.stats.connects == 0


def test_a_wrong_password_gets_no_answer_and_says_what_to_check(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    worker = small_worker(tmp_path)
    caplog.set_level(logging.WARNING, logger="delivery.gateway")
    with serving(worker, settings()) as http:
        with relaying(HttpUplink(http.url, "app", "dev0", "not-it")) as (uart, relay):
            uart.send(encode_frame(STATUS))
            assert uart.reply(timeout=0.5) is None
    assert relay.stats.refused == 1
    assert "check the device's password" in caplog.text and "not-it" not in caplog.text


def test_over_mqtt_as_the_device_own_broker_user(tmp_path: Path) -> None:
    worker = small_worker(tmp_path)
    files = broker_files(worker.targets.fleet, "ajour-worker", "w0rker-pw")
    passwd, acl = write(files, tmp_path / "broker")
    with run_broker(tmp_path / "mqtt", passwd, acl) as port:
        transport = MqttTransport(
            worker, MqttSettings(url=f"mqtt://ajour-worker:w0rker-pw@127.0.0.1:{port}")
        )
        transport.start()
        try:
            url = f"mqtt://127.0.0.1:{port}"
            with relaying(MqttUplink(url, "app", "dev1", "pw-1", timeout=5)) as (uart, relay):
                uart.send(encode_frame(STATUS))
                reply = uart.reply()
                assert reply is not None and isinstance(decode_command(reply), Write)
            assert relay.stats.replies == 1
            with relaying(MqttUplink(url, "app", "dev2", "wrong", timeout=2)) as (uart, bad):
                uart.send(encode_frame(STATUS))
                assert uart.reply(timeout=3) is None
            assert bad.stats.refused == 1
        finally:
            transport.stop()
    row = worker.store.get("app", "dev1") if worker.store else None
    assert row is not None


def test_the_command_relays_with_a_password_file_and_prints_its_counters(tmp_path: Path) -> None:
    worker = small_worker(tmp_path)
    secret = tmp_path / "password"
    secret.write_text("pw-0\n")
    uart = FakeUart()
    with serving(worker, settings()) as http:
        args = ["gateway", "--uart", str(uart.address), "--http", http.url]
        args += ["--application", "app", "--device", "dev0", "--password-file", str(secret)]
        proc = subprocess.Popen(
            [sys.executable, "-m", "delivery.cli", *args, "--json"],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            uart.accept()
            uart.send(encode_frame(STATUS))
            assert uart.reply() is not None
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            uart.close()
    assert proc.returncode == 0, err
    assert '"replies": 1' in out and "pw-0" not in out + err
    assert f"relaying {uart.address} for dev0@app" in err


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("tcp:127.0.0.1:5555", UartAddress("127.0.0.1", 5555)),
        ("tcp:[::1]:5555", UartAddress("::1", 5555)),
        ("unix:/run/dev0.sock", UartAddress(path="/run/dev0.sock")),
    ],
)
def test_uart_addresses(value: str, expected: UartAddress) -> None:
    assert UartAddress.parse(value) == expected
    assert str(expected) in (value, "tcp:::1:5555")


@pytest.mark.parametrize("value", ["127.0.0.1:5555", "tcp:host", "tcp:h:0", "unix:", "/dev/tty"])
def test_a_bad_uart_address_says_what_is_expected(value: str) -> None:
    from delivery.errors import DeliveryError

    with pytest.raises(DeliveryError, match=r"--uart expects tcp:HOST:PORT .* got"):
        UartAddress.parse(value)


def test_the_http_gateway_needs_no_mqtt_client() -> None:
    """paho-mqtt is an extra (``ajour[mqtt]``): the gateway over HTTP must work without it."""
    probe = (
        "import sys; sys.modules['paho'] = None\n"
        "from delivery.gateway import Gateway, HttpUplink, UartAddress\n"
        "from delivery.cli import main\n"
        "uplink = HttpUplink('http://127.0.0.1:9', 'a', 'd')\n"
        "Gateway(UartAddress.parse('tcp:127.0.0.1:9'), uplink)\n"
        "main(['gateway', '--help'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "--uart TEXT" in result.stdout
