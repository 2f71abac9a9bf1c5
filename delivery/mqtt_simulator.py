"""Simulated devices over MQTT: status out on the status topic, command in on the command topic.

Two ways to connect:

* ``gateway``: one connection for all devices, with the URL's credentials (a gateway, such
  as drgdfu, speaking for its devices).
* ``device``: one connection per device, each logged in as ``<device>@<app>`` with its own
  password, on its own topics only: the users and ACL ``ajour-delivery broker-config``
  writes.

Nothing waits in silence: a connection the broker refuses ends its devices at once with the
broker's reason, and a device whose status gets no answer within ``answer_timeout`` seconds
ends with what can cause that (the worker ignores devices it does not know; a broker drops
what its ACL denies). ``timeout`` bounds the whole run.

With ``until``, devices poll on as real ones do: a device in sync with another version
polls again (after the ``Sync``'s poll, capped by ``wait_cap``) until it runs ``until``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import paho.mqtt.client as mqtt

from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.mqtt import MqttTls, TopicTemplate, connect, make_client, nodelay, parse_broker_url
from delivery.protocol import Sync, Wait, decode_command, encode_status
from delivery.simulator import DeviceResult, Failures, Password

Connection = Literal["gateway", "device"]
CONNECTIONS: tuple[Connection, ...] = ("gateway", "device")


@dataclass
class _Device:
    name: str
    sim: SimulatedDevice
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    wire: int = 0  # CBOR statuses sent plus commands received
    finished: float | None = None
    error: str = ""
    asked: float | None = None  # when the status now waiting for its answer was sent
    client: mqtt.Client | None = None


class _Run:
    """The devices of one simulation, their clients, and when it is over."""

    def __init__(
        self,
        app: str,
        devices: dict[str, _Device],
        topics: tuple[str, str],
        qos: int,
        wait_cap: float,
        until: bytes | None = None,
    ) -> None:
        self.app, self.devices, self.qos, self.wait_cap = app, devices, qos, wait_cap
        self.until = until
        self.status_t, self.command_t = TopicTemplate(topics[0]), TopicTemplate(topics[1])
        self.lock = threading.Lock()
        self.done = threading.Event()

    def end(self, device: _Device, error: str = "") -> None:
        """Under the lock: the device is synced, gone, or failed with ``error``."""
        if device.finished is None:
            device.finished, device.error, device.asked = time.perf_counter(), error, None
            if all(d.finished is not None for d in self.devices.values()):
                self.done.set()

    def send(self, device: _Device) -> None:
        with self.lock:
            if device.finished is not None or device.client is None:
                return
            device.asked = time.perf_counter()
            payload = encode_status(device.sim.status())
            device.wire += len(payload)
        device.client.publish(self.status_t.format(self.app, device.name), payload, qos=self.qos)

    def on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        names = self.command_t.parse(message.topic)
        device = self.devices.get(names[1]) if names is not None else None
        if device is None or names is None or names[0] != self.app:
            return
        command = decode_command(bytes(message.payload))
        with self.lock:
            if device.finished is not None:
                return
            device.asked = None
            device.wire += len(message.payload)
            device.sim.apply(command)
            device.steps += 1
            arrived = self.until is None or device.sim.version == self.until
            if (device.sim.synced and arrived) or device.sim.vanished:
                self.end(device)
                return
        if isinstance(command, Wait | Sync):  # Sync: in sync with another version
            threading.Timer(
                min(float(command.poll or 1), self.wait_cap), self.send, (device,)
            ).start()
        else:
            self.send(device)

    def unanswered(self, answer_timeout: float, hint: str) -> None:
        """End each device whose status waited longer than ``answer_timeout`` seconds."""
        now = time.perf_counter()
        with self.lock:
            for device in self.devices.values():
                if device.asked is not None and now - device.asked >= answer_timeout:
                    topic = self.status_t.format(self.app, device.name)
                    self.end(
                        device,
                        f"no answer within {now - device.asked:.0f} s to its status on {topic}: the"
                        f" worker ignores a device it does not know (is {device.name} a device"
                        f" of {self.app} in the fleet it serves?) and the broker drops what its"
                        f" ACL denies{hint}",
                    )


def _gateway(run: _Run, url: str, tls: MqttTls | None, started: threading.Event) -> mqtt.Client:
    client = make_client(url, tls)
    # no cap on QoS 1 statuses in flight: paho's default (20) queues a fleet's statuses
    # behind each other, and any cap makes paho scan every message in flight per PUBACK
    client.max_inflight_messages_set(0)
    client.on_message = run.on_message
    broker = parse_broker_url(url)

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if reason.is_failure:
            with run.lock:
                for device in run.devices.values():
                    device.client = None
                    run.end(
                        device,
                        f"the MQTT broker at {broker.address} refused the gateway connection"
                        f" as {broker.username!r}: {reason}; with the users and ACL of"
                        " broker-config each device logs in as itself: use"
                        " --mqtt-connection device",
                    )
            c.disconnect()
            started.set()
            return
        nodelay(c)
        c.subscribe(run.command_t.format(run.app, "+"), qos=run.qos)

    def on_subscribe(_c: mqtt.Client, _u: object, _m: int, codes: Any, _p: object) -> None:
        started.set()

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    for device in run.devices.values():
        device.client = client
    return client


def _per_device(
    run: _Run, url: str, tls: MqttTls | None, password: Password, device: _Device
) -> mqtt.Client:
    user = f"{device.name}@{run.app}"
    client = make_client(url, tls, client_id=f"ajour-simulate-{user}")
    secret = password(device.name) if callable(password) else password
    client.username_pw_set(user, secret)
    client.on_message = run.on_message
    command = run.command_t.format(run.app, device.name)

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if reason.is_failure:
            with run.lock:
                run.end(
                    device,
                    f"the MQTT broker refused {user}: {reason}; is it in the password file"
                    " that broker-config wrote, with the password of its spec.credentials"
                    " (or --password)?",
                )
            c.disconnect()
            return
        nodelay(c)
        c.subscribe(command, qos=run.qos)

    def on_subscribe(_c: mqtt.Client, _u: object, _m: int, codes: Any, _p: object) -> None:
        if any(code.is_failure for code in codes):
            with run.lock:
                run.end(
                    device,
                    f"the MQTT broker refused {user} a subscription to {command}: its ACL"
                    " lets a device read only its own command topic (broker-config)",
                )
            return
        run.send(device)

    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    device.client = client
    return client


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
    failures: Failures | None = None,
    connection: Connection = "gateway",
    password: Password = None,
    answer_timeout: float = 10.0,
    until: bytes | None = None,
) -> list[DeviceResult]:
    """Simulate devices ``names`` until each is in sync, failed, or ``timeout`` has passed.

    ``connection``: one ``gateway`` connection with the URL's credentials, or one per
    ``device`` as ``<device>@<app>`` with ``password`` (shared, or a function of the
    device's name). ``mqtts://`` URLs connect with TLS (``tls``: CA file, client
    certificate). ``until``: devices keep polling until they run that version (see above).
    A broker that cannot be reached is a DeliveryError."""
    failures = failures or Failures()
    devices = {n: _Device(n, failures.device(n, version, mtu)) for n in names}
    run = _Run(app, devices, (status_topic, command_topic), qos, wait_cap, until)
    clients: list[mqtt.Client] = []
    hint = ""
    try:
        if connection == "gateway":
            hint = "; with the users and ACL of broker-config use --mqtt-connection device"
            subscribed = threading.Event()
            clients.append(_gateway(run, url, tls, subscribed))
            broker = connect(clients[0], url)
            clients[0].loop_start()
            if not subscribed.wait(10):
                raise DeliveryError(
                    f"the MQTT broker at {broker.address} did not accept the gateway within 10 s"
                )
            if not run.done.is_set():
                time.sleep(0.2)  # let the subscription settle before the first status
                for device in devices.values():
                    run.send(device)
        else:
            for device in devices.values():
                client = _per_device(run, url, tls, password, device)
                connect(client, url)
                clients.append(client)
                client.loop_start()
        deadline = time.perf_counter() + timeout
        while not run.done.wait(0.1) and time.perf_counter() < deadline:
            run.unanswered(answer_timeout, hint)
        run.unanswered(0.0, hint)  # at the deadline: say so of a status still unanswered
    finally:
        for client in clients:
            client.disconnect()
            client.loop_stop()
    now = time.perf_counter()
    return [
        DeviceResult(
            app,
            d.name,
            version.decode(errors="replace"),
            d.sim.version.decode(errors="replace"),
            d.sim.synced,
            d.steps,
            d.sim.bytes_received,
            d.sim.waits,
            d.sim.swaps_rejected,
            (d.finished or now) - d.started,
            d.error or ("" if d.sim.synced else f"not in sync after {timeout:g} s (--timeout)"),
            d.sim.patch_bytes,
            d.wire,
            d.sim.patch_failed,
        )
        for d in devices.values()
    ]
