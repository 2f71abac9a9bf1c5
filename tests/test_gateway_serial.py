"""The gateway on a real serial port (``--uart tty:PATH``): a pseudo-terminal pair from
``os.openpty``, a real tty with termios. The gateway opens the slave by its path and makes it
a raw 8N1 line; the test plays the device on the master end, with line noise between (and
inside) frames, and the worker behind the gateway is the real one over HTTP.

The firmware holds every byte value, so the commands carry CR, LF, XON/XOFF and ^C to the
device, and the statuses carry them to the gateway: a line left in cooked mode (echo, CR/NL
translation, software flow control, signals) garbles or stops them.
"""

from __future__ import annotations

import hashlib
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ajour_build.core.fleet import load_fleet
from delivery.errors import DeliveryError
from delivery.frames import FrameReader, encode_frame
from delivery.gateway import Gateway, HttpUplink
from delivery.protocol import Status, Swap, UpdateStatus, Write, decode_command, encode_status
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.uart import UartAddress
from delivery.worker import Worker
from tests.conftest import REPO
from tests.http_wire import fleet_yaml, serving, settings
from tests.test_sources import publish

IMAGE = bytes(range(256)) * 6  # 1536 bytes: every byte value, CR, LF, XON, XOFF and ^C too
NOISE = b"\r\n\x03\x11\x13\x1a\x7f+++ATH\r\n\x04"  # no 00: one bad piece each time


def worker_with_every_byte(tmp: Path) -> Worker:
    (tmp / "fleet").mkdir(parents=True, exist_ok=True)
    (tmp / "fleet" / "f.yaml").write_text(fleet_yaml(1))
    publish(tmp, f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest", "1.0", IMAGE)
    return Worker(
        Targets(load_fleet([tmp / "fleet"]), f"oci-layout://{tmp / 'oci'}"), StatusStore()
    )


class Device:
    """The device end of the pty: the master."""

    def __init__(self, master: int) -> None:
        self.master = master
        self.reader = FrameReader()
        self.frames: list[bytes] = []

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.master, view) :]

    def reply(self, timeout: float = 5.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while not self.frames:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                return None
            self.frames += self.reader.feed(os.read(self.master, 65536))
        assert self.reader.counts.bad_crc == 0, "the line garbled a command"
        return self.frames.pop(0)


@contextmanager
def pty_pair() -> Iterator[tuple[int, int, str]]:
    """The master (the device's end), the slave (to look at its termios) and its path."""
    master, slave = os.openpty()
    try:
        yield master, slave, os.ttyname(slave)
    finally:
        os.close(master)
        os.close(slave)


def wait_for(check: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_an_update_over_a_noisy_pty_reaches_the_device_intact(tmp_path: Path) -> None:
    worker = worker_with_every_byte(tmp_path)
    with serving(worker, settings()) as http, pty_pair() as (master, slave, path):
        address = UartAddress.parse(f"tty:{path}", 57600)
        relay = Gateway(address, HttpUplink(http.url, "app", "dev0", "pw-0"))
        thread = threading.Thread(target=relay.run, daemon=True)
        thread.start()
        try:
            wait_for(lambda: relay.stats.connects == 1)
            iflag, oflag, cflag, lflag, ispeed, ospeed, cc = termios.tcgetattr(slave)
            assert (ispeed, ospeed) == (termios.B57600, termios.B57600)
            assert cflag & termios.CSIZE == termios.CS8
            assert not cflag & (termios.PARENB | termios.CSTOPB)  # 8N1
            assert not lflag & (termios.ICANON | termios.ECHO | termios.ISIG)
            assert not iflag & (termios.IXON | termios.ICRNL) and not oflag & termios.OPOST
            assert (cc[termios.VMIN], cc[termios.VTIME]) == (1, 0)

            device = Device(master)
            written, correlation, pieces, rounds = bytearray(), 0x0D0A1311, 0, 0
            while True:
                correlation += 1
                update = UpdateStatus(b"1.0", len(written)) if written else None
                status = encode_status(Status(b"0.1", 512, correlation, update))
                device.send(NOISE + encode_frame(status))  # noise right before each frame
                pieces, rounds = pieces + 1, rounds + 1
                reply = device.reply()
                assert reply is not None, f"no answer at offset {len(written)}"
                command = decode_command(reply)
                assert command.correlation_id == correlation
                if isinstance(command, Swap):
                    break
                assert isinstance(command, Write) and command.offset == len(written)
                written += command.data
            assert bytes(written) == IMAGE
            assert command.checksum == hashlib.sha256(IMAGE).digest()

            damaged = bytearray(encode_frame(status))
            damaged[8] = damaged[8] % 255 + 1  # a byte changed (not to 00) in a frame: dropped
            device.send(b"\xff\x00\x13\x11" + bytes(damaged))  # noise with a 00: two pieces
            pieces += 3
            assert device.reply(timeout=0.5) is None
            device.send(encode_frame(status))
            assert device.reply() == reply
        finally:
            relay.stop()
            thread.join(10)
    s = relay.stats
    assert rounds >= 4  # Writes of at most 512 bytes, then Swap
    assert (s.frames, s.replies, s.bad_crc) == (rounds + 1, rounds + 1, pieces)
    assert (s.oversized, s.truncated) == (0, 0)
    assert (s.connects, s.unanswered, s.rejected, s.late) == (1, 0, 0, 0)


def test_the_command_relays_a_serial_port_at_the_baud_rate_given(tmp_path: Path) -> None:
    worker = worker_with_every_byte(tmp_path)
    with serving(worker, settings()) as http, pty_pair() as (master, slave, path):
        args = ["gateway", "--uart", f"tty:{path}", "--baud", "19200", "--http", http.url]
        args += ["--application", "app", "--device", "dev0", "--json"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "delivery.cli", *args],
            cwd=REPO,
            env={**os.environ, "AJOUR_DEVICE_PASSWORD": "pw-0"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(lambda: termios.tcgetattr(slave)[4] == termios.B19200)
            time.sleep(0.2)  # it flushes what came before it listened, then listens
            device = Device(master)
            device.send(NOISE + encode_frame(encode_status(Status(b"0.1", 512, 7))))
            reply = device.reply()
            assert reply is not None and isinstance(decode_command(reply), Write)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert '"replies": 1' in out and '"bad_crc": 1' in out
    assert f"relaying tty:{path} at 19200 baud for dev0@app" in err


def test_a_file_that_is_no_serial_port_says_so(tmp_path: Path) -> None:
    plain = tmp_path / "not-a-tty"
    plain.write_bytes(b"")
    with pytest.raises(OSError, match=r"not-a-tty is not a terminal .* expects a serial port"):
        UartAddress.parse(f"tty:{plain}").connect(timeout=1)


@pytest.mark.parametrize(
    ("value", "baud", "message"),
    [
        ("tty:/dev/ttyUSB0", 12345, r"--baud expects a rate the serial driver knows \(.*115200"),
        ("tty:/dev/ttyUSB0", 0, r"--baud expects .* got 0"),
        ("tcp:127.0.0.1:5555", 115200, r"--baud is for a serial port \(--uart tty:PATH\)"),
        ("tty:", None, r"--uart expects .* or tty:PATH \(a serial port"),
    ],
)
def test_bad_serial_options_say_what_is_expected(
    value: str, baud: int | None, message: str
) -> None:
    with pytest.raises(DeliveryError, match=message):
        UartAddress.parse(value, baud)


def test_a_serial_port_defaults_to_115200_baud() -> None:
    address = UartAddress.parse("tty:/dev/ttyACM0")
    assert (address.tty, address.baud, str(address)) == ("/dev/ttyACM0", 115200, "tty:/dev/ttyACM0")
