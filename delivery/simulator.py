"""Simulated devices against a running worker over HTTP, with per-device results (the MQTT
side is :mod:`delivery.mqtt_simulator`).

A refusal (HTTP 401, 403 or 404) ends that device at once with the worker's reason: it would
not change by asking again. Other failures are retried a few times, like a real device."""

from __future__ import annotations

import base64
import http.client
import random
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
    patch_bytes: int = 0  # of bytes_received, those that were patch data (WritePatch)
    wire_bytes: int = 0  # CBOR statuses sent plus commands received (HTTP: bodies only)
    patch_failed: bool = False  # a patch did not rebuild the image; the full image followed
    statuses: int = 0  # MQTT: statuses published (a resend after a broker failover counts)
    duplicates: int = 0  # MQTT: commands that came with no status waiting (never applied)
    failovers: int = 0  # MQTT: times its connection moved to another broker node


class RefusedError(DeliveryError):
    """The worker refused a device (HTTP 401, 403, 404): asking again would not help."""


REFUSAL_HINTS = {
    401: "the worker refused its credentials, or does not know it: check --password, or the"
    " device's plain password in spec.credentials of the fleet the worker serves (--fleet)",
    403: "the worker refused it: check the device's credentials and certificate",
    404: "the worker does not know it: is it a device of the application in the fleet the"
    " worker serves (ajour-delivery targets --fleet …)?",
}


def _text(body: bytes, limit: int = 300) -> str:
    """A response body as one line of text (never Python's bytes repr)."""
    text = body[:limit].decode("utf-8", errors="replace").strip()
    return " ".join(text.split()) or "(no body)"


def check_reachable(base_url: str, timeout: float = 5.0) -> None:
    """A DeliveryError naming the URL when nothing listens there (before any device runs)."""
    parts = urlsplit(base_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise DeliveryError(
            f"cannot reach the delivery worker at {base_url}: {exc.strerror or exc}; is"
            " `ajour-delivery serve --http HOST:PORT` running there? check --http"
        ) from None


class HttpDeviceLink:
    """One device's keep-alive HTTP connection to ``POST /v1/dfu``; a status sent on a
    connection the server has since closed as idle is sent once more on a new one."""

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
        reused = self.conn.sock is not None
        try:
            response, body = self._post(status)
        except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
            self.conn.close()
            if not reused:
                raise
            # the server closed the idle keep-alive connection (its keep-alive timeout): a
            # status is idempotent (the reply follows from it alone), so send it once more
            response, body = self._post(status)
        if response.status in REFUSAL_HINTS:
            raise RefusedError(
                f"HTTP {response.status}: {_text(body)} ({REFUSAL_HINTS[response.status]})"
            )
        if response.status != 200:
            raise DeliveryError(f"HTTP {response.status}: {_text(body)}")
        return body

    def _post(self, status: bytes) -> tuple[http.client.HTTPResponse, bytes]:
        if self.conn.sock is None:
            self.conn.connect()
            assert self.conn.sock is not None
            self.conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.conn.request("POST", self.path, body=status, headers=self.headers)
        response = self.conn.getresponse()
        return response, response.read()

    def reset(self) -> None:
        """Drop the connection; the next exchange reconnects."""
        self.conn.close()

    def close(self) -> None:
        self.conn.close()


def run_device(
    app: str,
    name: str,
    device: SimulatedDevice,
    exchange: Exchange,
    max_steps: int = 100_000,
    wait_cap: float = 0.05,
    retries: int = 3,
    keep_polling: float = 0.0,
    timeout: float | None = None,
) -> DeviceResult:
    """Follow commands until Sync; like a real device, retry a failed exchange a few times
    (never a refusal). Give up after ``timeout`` seconds when it is not in sync by then.

    With ``keep_polling`` seconds, keep polling like a real device until they have passed
    (a synced device polls again after its ``Sync``'s poll, capped by ``wait_cap``)."""
    started, start = device.version.decode(errors="replace"), time.perf_counter()
    until = start + keep_polling
    deadline = start + timeout if timeout is not None else None
    steps, error, failures, wire = 0, "", 0, 0
    while steps < max_steps and not device.vanished:
        if device.synced:
            if time.perf_counter() >= until:
                break
            time.sleep(wait_cap)
        elif deadline is not None and time.perf_counter() >= deadline:
            error = f"not in sync after {timeout:g} s (--timeout)"
            break
        try:
            status = encode_status(device.status())
            reply = exchange(status)
            wire += len(status) + len(reply)
            command = decode_command(reply)
        except RefusedError as exc:
            error = str(exc)
            break
        except (DeliveryError, OSError) as exc:
            failures += 1
            if failures > retries:
                error = str(exc)
                break
            reset = getattr(exchange, "reset", None)
            if callable(reset):
                reset()
            time.sleep(0.05 * failures)
            continue
        failures = 0
        device.apply(command)
        steps += 1
        if isinstance(command, Wait):
            time.sleep(min(float(command.poll or 1), wait_cap))
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
        device.patch_bytes,
        wire,
        device.patch_failed,
    )


Password = str | Callable[[str], str | None] | None


@dataclass(frozen=True)
class Failures:
    """Which simulated devices fail after a swap, and how: ``revert`` (the bootloader rolls
    back; the device reports its old version again) or ``vanish`` (it never comes back)."""

    devices: frozenset[str] = frozenset()
    mode: str = "revert"
    firmware: bytes = b""  # the image every device starts with (for delta updates)
    delta: bool = False  # devices advertise and apply patches

    @classmethod
    def share(
        cls, names: list[str], rate: float, mode: str = "revert", seed: int = 0,
        firmware: bytes = b"", delta: bool = False,
    ) -> Failures:  # fmt: skip
        """``rate`` of ``names``, picked by a seeded random generator."""
        pick = random.Random(seed)
        return cls(frozenset(n for n in names if pick.random() < rate), mode, firmware, delta)

    def device(self, name: str, version: bytes, mtu: int | None) -> SimulatedDevice:
        failing = name in self.devices
        return SimulatedDevice(
            version,
            mtu,
            revert=failing and self.mode == "revert",
            vanish=failing and self.mode == "vanish",
            firmware=self.firmware,
            delta=self.delta,
        )


def simulate_http(
    base_url: str,
    app: str,
    names: list[str],
    version: bytes,
    mtu: int | None,
    password: Password,
    concurrency: int = 32,
    failures: Failures = Failures(),
    keep_polling: float = 0.0,
    wait_cap: float = 0.05,
    timeout: float | None = None,
) -> list[DeviceResult]:
    """Run devices ``names`` concurrently; ``password`` is shared or per device (a function).
    A worker that cannot be reached is a DeliveryError before any device runs."""
    check_reachable(base_url)

    def one(name: str) -> DeviceResult:
        secret = password(name) if callable(password) else password
        link = HttpDeviceLink(base_url, app, name, secret)
        device = failures.device(name, version, mtu)
        try:
            return run_device(
                app, name, device, link, wait_cap=wait_cap, keep_polling=keep_polling,
                timeout=timeout,
            )  # fmt: skip
        finally:
            link.close()

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(names)))) as pool:
        return list(pool.map(one, names))
