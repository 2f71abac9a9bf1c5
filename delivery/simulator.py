"""Simulated devices against a running worker, over HTTP or MQTT, with per-device results."""

from __future__ import annotations

import base64
import http.client
import random
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlencode, urlsplit

from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.protocol import Wait, decode_command, encode_status

if TYPE_CHECKING:
    from delivery.mqtt import MqttTls

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
) -> DeviceResult:
    """Follow commands until Sync; like a real device, retry a failed exchange a few times.

    With ``keep_polling`` seconds, keep polling like a real device until they have passed
    (a synced device polls again after its ``Sync``'s poll, capped by ``wait_cap``)."""
    started, start = device.version.decode(errors="replace"), time.perf_counter()
    until = start + keep_polling
    steps, error, failures, wire = 0, "", 0, 0
    while steps < max_steps and not device.vanished:
        if device.synced:
            if time.perf_counter() >= until:
                break
            time.sleep(wait_cap)
        try:
            status = encode_status(device.status())
            reply = exchange(status)
            wire += len(status) + len(reply)
            command = decode_command(reply)
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


Password = str | Callable[[str], str] | None


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
) -> list[DeviceResult]:
    """Run devices ``names`` concurrently; ``password`` is shared or per device (a function)."""

    def one(name: str) -> DeviceResult:
        secret = password(name) if callable(password) else password
        link = HttpDeviceLink(base_url, app, name, secret)
        device = failures.device(name, version, mtu)
        try:
            return run_device(app, name, device, link, wait_cap=wait_cap, keep_polling=keep_polling)
        finally:
            link.close()

    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(names)))) as pool:
        return list(pool.map(one, names))


def simulate_mqtt(
    url: str,
    app: str,
    names: list[str],
    version: bytes,
    mtu: int | None,
    status_topic: str = "ajour/{app}/{device}/dfu",
    command_topic: str = "ajour/{app}/{device}/dfu/cmd",
    qos: int = 1,
    timeout: float = 120.0,
    wait_cap: float = 0.05,
    tls: MqttTls | None = None,
    failures: Failures = Failures(),
) -> list[DeviceResult]:
    """Simulate devices over one MQTT connection (a gateway): status out, command in.
    ``mqtts://`` URLs connect with TLS (``tls``: CA file, client certificate)."""
    import threading

    import paho.mqtt.client as mqtt

    from delivery.mqtt import TopicTemplate, connect, make_client, nodelay

    status_t, command_t = TopicTemplate(status_topic), TopicTemplate(command_topic)
    client = make_client(url, tls)
    devices = {name: failures.device(name, version, mtu) for name in names}
    steps = dict.fromkeys(names, 0)
    started = {name: time.perf_counter() for name in names}
    finished: dict[str, float] = {}
    done = threading.Event()
    lock = threading.Lock()

    wire = dict.fromkeys(names, 0)

    def send(name: str) -> None:
        status = encode_status(devices[name].status())
        with lock:
            wire[name] += len(status)
        client.publish(status_t.format(app, name), status, qos=qos)

    def on_message(_c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        names_ = command_t.parse(message.topic)
        if names_ is None or names_[1] not in devices:
            return
        name = names_[1]
        command = decode_command(bytes(message.payload))
        with lock:
            wire[name] += len(message.payload)
            device = devices[name]
            device.apply(command)
            steps[name] += 1
            if device.synced or device.vanished:
                finished[name] = time.perf_counter()
                if len(finished) == len(devices):
                    done.set()
                return
        if isinstance(command, Wait):
            threading.Timer(min(float(command.poll or 1), wait_cap), send, (name,)).start()
        else:
            send(name)

    connected = threading.Event()
    client.on_message = on_message

    def on_connect(c: mqtt.Client, *_: object) -> None:
        nodelay(c)
        c.subscribe(command_t.format(app, "+"), qos=qos)
        connected.set()

    client.on_connect = on_connect
    broker = connect(client, url)
    client.loop_start()
    try:
        if not connected.wait(10):
            raise DeliveryError(f"the MQTT broker at {broker.address} did not accept the client")
        time.sleep(0.2)  # let the subscription settle before the first status
        for name in names:
            send(name)
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    return [
        DeviceResult(
            app,
            n,
            version.decode(errors="replace"),
            devices[n].version.decode(errors="replace"),
            devices[n].synced,
            steps[n],
            devices[n].bytes_received,
            devices[n].waits,
            devices[n].swaps_rejected,
            finished.get(n, time.perf_counter()) - started[n],
            "" if devices[n].synced else "timed out",
            devices[n].patch_bytes,
            wire[n],
            devices[n].patch_failed,
        )
        for n in names
    ]
