"""Where a device's UART is, and the open line to it (:class:`Line`): QEMU's emulated UART as
a TCP server (``tcp:HOST:PORT`` for ``-serial tcp:HOST:PORT,server=on,nodelay=on``) or a Unix
socket (``unix:PATH`` for ``-serial unix:PATH,server=on``), or a real serial port
(``tty:PATH``, e.g. ``tty:/dev/ttyUSB0``): opened with ``os.open`` and set up with
``termios`` as a raw 8N1 line at the given baud rate, no flow control, modem lines ignored.
"""

from __future__ import annotations

import fcntl
import os
import socket
import termios
from dataclasses import dataclass
from typing import Final, Protocol

from delivery.errors import DeliveryError

DEFAULT_BAUD: Final = 115200


class Line(Protocol):
    """An open line to the device: select()-able, read what is there, write it all."""

    def fileno(self) -> int: ...

    def read(self) -> bytes:
        """What the line has (at least one byte once select() says so); b"" when closed."""
        ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class SocketLine:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self) -> bytes:
        return self.sock.recv(65536)

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        self.sock.close()


class TtyLine:
    """A serial port, raw 8N1 at ``baud``."""

    def __init__(self, path: str, baud: int) -> None:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)  # no wait for carrier
        try:
            raw_8n1(fd, path, baud)
            termios.tcflush(fd, termios.TCIOFLUSH)  # what came before we listened
            fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd

    def fileno(self) -> int:
        return self.fd

    def read(self) -> bytes:
        return os.read(self.fd, 65536)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def close(self) -> None:
        os.close(self.fd)


def raw_8n1(fd: int, path: str, baud: int) -> None:
    """Make the terminal ``fd`` a raw line: 8 data bits, no parity, 1 stop bit, at ``baud``;
    no echo, no line editing, no signals, no CR/NL translation, no software or hardware flow
    control. A file that is no terminal is an OSError saying so."""
    try:
        iflag, oflag, cflag, lflag, _, _, cc = termios.tcgetattr(fd)
    except termios.error as exc:
        raise OSError(
            f"{path} is not a terminal ({exc.args[-1]}): tty:PATH expects a serial port,"
            " e.g. tty:/dev/ttyUSB0"
        ) from None
    iflag &= ~(
        termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP | termios.INLCR
        | termios.IGNCR | termios.ICRNL | termios.IXON | termios.IXOFF | termios.IXANY
        | termios.INPCK
    )  # fmt: skip
    oflag &= ~termios.OPOST
    lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
    cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | getattr(termios, "CRTSCTS", 0))
    cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
    cc[termios.VMIN], cc[termios.VTIME] = 1, 0
    speed = baud_constant(baud)
    attrs = [iflag, oflag, cflag, lflag, speed, speed, cc]
    try:
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    except termios.error as exc:
        raise OSError(f"cannot set {path} to raw 8N1 at {baud} baud: {exc.args[-1]}") from None


def baud_constant(baud: int) -> int:
    """termios' constant for ``baud`` bits per second; a rate it has none for is an error."""
    speed = getattr(termios, f"B{baud}", None)
    if baud <= 0 or not isinstance(speed, int):
        known = sorted(int(n[1:]) for n in dir(termios) if n[1:].isdigit() and n[0] == "B")
        raise DeliveryError(
            f"--baud expects a rate the serial driver knows ({', '.join(map(str, known[1:]))}),"
            f" got {baud}"
        )
    return speed


@dataclass(frozen=True)
class UartAddress:
    """Where the device's UART is: a TCP server, a Unix socket, or a serial port (``tty``)
    at ``baud``."""

    host: str = ""
    port: int = 0
    path: str = ""
    tty: str = ""
    baud: int = DEFAULT_BAUD

    @classmethod
    def parse(cls, value: str, baud: int | None = None) -> UartAddress:
        kind, _, rest = value.partition(":")
        if baud is not None and kind != "tty":
            raise DeliveryError(f"--baud is for a serial port (--uart tty:PATH), not {value!r}")
        if kind == "tty" and rest:
            rate = DEFAULT_BAUD if baud is None else baud
            baud_constant(rate)
            return cls(tty=rest, baud=rate)
        if kind == "unix" and rest:
            return cls(path=rest)
        host, _, port = rest.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if kind == "tcp" and host and port.isdigit() and 0 < int(port) < 65536:
            return cls(host=host, port=int(port))
        raise DeliveryError(
            f"--uart expects tcp:HOST:PORT (QEMU's -serial tcp:HOST:PORT,server=on,nodelay=on),"
            f" unix:PATH (-serial unix:PATH,server=on) or tty:PATH (a serial port, e.g."
            f" tty:/dev/ttyUSB0), got {value!r}"
        )

    def __str__(self) -> str:
        if self.tty:
            return f"tty:{self.tty}"
        return f"unix:{self.path}" if self.path else f"tcp:{self.host}:{self.port}"

    def connect(self, timeout: float) -> Line:
        if self.tty:
            return TtyLine(self.tty, self.baud)
        if self.path:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
        else:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(None)
        return SocketLine(sock)
