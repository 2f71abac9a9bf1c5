"""HTTP on the wire for the delivery transport's tests: a small worker served on loopback,
raw sockets that send exact bytes, and a reader that splits what comes back into answers."""

from __future__ import annotations

import base64
import socket
import ssl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ajour_build.core.fleet import load_fleet
from delivery.device import SimulatedDevice
from delivery.http import HttpSettings, HttpTransport
from delivery.protocol import Command, decode_command, encode_status
from delivery.simulator import HttpDeviceLink
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.test_sources import publish

STATUS_TOKEN = "status-secret-1"
EVENTS_TOKEN = "events-secret-2"


def fleet_yaml(devices: int = 4) -> str:
    docs = [
        "kind: Application\nmetadata: {name: app}\n"
        "spec: {firmware: {container: {image: fw/app:latest}}}\n"
    ]
    for i in range(devices):
        docs.append(
            f"metadata: {{name: dev{i}, application: app}}\n"
            f"spec: {{credentials: {{credentials: [{{pass: pw-{i}}}]}}}}\n"
        )
    return "---\n".join(docs)


def small_worker(tmp: Path, devices: int = 4) -> Worker:
    """A fleet of ``devices`` with passwords ``pw-<i>``, firmware 1.0 in a layout dir."""
    (tmp / "fleet").mkdir(parents=True, exist_ok=True)
    (tmp / "fleet" / "f.yaml").write_text(fleet_yaml(devices))
    publish(tmp, f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest", "1.0", b"f" * 2000)
    targets = Targets(load_fleet([tmp / "fleet"]), f"oci-layout://{tmp / 'oci'}")
    return Worker(targets, StatusStore())


def settings(**kwargs: object) -> HttpSettings:
    base: dict[str, object] = {
        "port": 0,
        "status_token": STATUS_TOKEN,
        "events_token": EVENTS_TOKEN,
    }
    base.update(kwargs)
    return HttpSettings(**base)  # type: ignore[arg-type]


@contextmanager
def serving(worker: Worker, http: HttpSettings) -> Iterator[HttpTransport]:
    transport = HttpTransport(worker, http)
    transport.start()
    try:
        yield transport
    finally:
        transport.stop()


def device_report(
    url: str, application: str, name: str, device: SimulatedDevice, password: str | None
) -> Command:
    """One status of ``device`` as ``<name>@<application>`` to the worker at ``url``
    (``POST /v1/dfu``), on a connection of its own; the command, which the device applies."""
    link = HttpDeviceLink(url, application, name, password)
    try:
        command = decode_command(link(encode_status(device.status())))
    finally:
        link.close()
    device.apply(command)
    return command


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def request(
    method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    fields = {"Content-Length": str(len(body))} if body or method == "POST" else {}
    fields.update(headers or {})
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


def connect(transport: HttpTransport, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((transport.host, transport.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_all(sock: socket.socket | ssl.SSLSocket, limit_s: float = 5.0) -> tuple[bytes, bool]:
    """Everything until the server closes (True) or ``limit_s`` passes (False)."""
    data = b""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def answers(data: bytes) -> list[Answer]:
    """Split a byte stream into the HTTP answers it holds (Content-Length framing)."""
    out = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        if not sep:
            raise AssertionError(f"an incomplete answer: {head[:200]!r}")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
        length = int(fields.get("content-length", "0"))
        out.append(Answer(status, fields, data[:length]))
        data = data[length:]
    return out


def exchange(
    transport: HttpTransport, raw: bytes, limit_s: float = 5.0
) -> tuple[list[Answer], bool]:
    """Send ``raw`` on a new connection; the answers, and whether the server closed."""
    with connect(transport) as sock:
        sock.sendall(raw)
        data, closed = read_all(sock, limit_s)
    return answers(data), closed


def one(transport: HttpTransport, raw: bytes) -> Answer:
    """One request on a connection of its own (closed by us afterwards)."""
    with connect(transport) as sock:
        sock.sendall(raw)
        data = b""
        while True:
            chunk = sock.recv(65536)
            data += chunk
            if not chunk or _complete(data):
                break
    (answer,) = answers(data)
    return answer


def _complete(data: bytes) -> bool:
    head, sep, rest = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(rest) >= int(value)
    return True
