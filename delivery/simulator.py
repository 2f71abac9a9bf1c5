"""Simulated devices against a running worker, over HTTP or MQTT, with per-device results."""

from __future__ import annotations

import base64
import http.client
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.protocol import Wait, decode_command, encode_status

Exchange = Callable[[bytes], bytes]


@dataclass
class DeviceResult:
    application: str
    device: str
    started: str
    final: str
    synced: bool
    steps: int
    bytes_received: int
    waits: int
    swaps_rejected: int
    seconds: float
    error: str = ""


class HttpDeviceLink:
    """One device's keep-alive HTTP connection to ``POST /v1/dfu``."""

    def __init__(
        self, base_url: str, app: str, device: str, password: str | None, timeout: float = 10.0
    ) -> None:
        parts = urlsplit(base_url)
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout
        )
        self.path = "/v1/dfu?" + urlencode({"application": app, "device": device, "ct": "30"})
        self.headers = {"Content-Type": "application/cbor"}
        if password is not None:
            token = base64.b64encode(f"{device}@{app}:{password}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"

    def __call__(self, status: bytes) -> bytes:
        if self.conn.sock is None:
            self.conn.connect()
            assert self.conn.sock is not None
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.request("POST", self.path, body=status, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise DeliveryError(f"HTTP {response.status}: {body[:200]!r}")
        return body

    def close(self) -> None:
        self.conn.close()


def run_device(
    app: str,
    name: str,
    device: SimulatedDevice,
    exchange: Exchange,
    max_steps: int = 100_000,
    wait_cap: float = 0.05,
) -> DeviceResult:
    """Follow commands until Sync (or an error, or ``max_steps``)."""
    started, start = device.version.decode(errors="replace"), time.perf_counter()
    steps, error = 0, ""
    try:
        while steps < max_steps and not device.synced:
            command = decode_command(exchange(encode_status(device.status())))
            device.apply(command)
            steps += 1
            if isinstance(command, Wait):
                time.sleep(min(float(command.poll or 1), wait_cap))
    except (DeliveryError, OSError) as exc:
        error = str(exc)
    return DeviceResult(
        app,
        name,
        started,
        device.version.decode(errors="replace"),
        device.synced,
        steps,
        device.bytes_received,
        device.waits,
        device.swaps_rejected,
        time.perf_counter() - start,
        error,
    )


Password = str | Callable[[str], str] | None


def simulate_http(
    base_url: str,
    app: str,
    names: list[str],
    version: bytes,
    mtu: int | None,
    password: Password,
    concurrency: int = 32,
) -> list[DeviceResult]:
    """Run devices ``names`` concurrently; ``password`` is shared or per device (a function)."""

    def one(name: str) -> DeviceResult:
        secret = password(name) if callable(password) else password
        link = HttpDeviceLink(base_url, app, name, secret)
        try:
            return run_device(app, name, SimulatedDevice(version, mtu), link)
        finally:
            link.close()

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(names)))) as pool:
        return list(pool.map(one, names))
