"""One MQTT connection of the simulator (:mod:`delivery.mqtt_simulator`) and the devices it
speaks for: a gateway's, or a device's own as ``<device>@<app>``.

A connection the broker refuses, or a subscription its ACL denies, ends its devices at once
with the broker's reason. A connection that is lost is marked ``lost``; the run's
supervising loop then moves it to the next node of ``urls`` (``failover``), which subscribes
again and sends the statuses that were waiting again.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import paho.mqtt.client as mqtt

from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.mqtt import MqttTls, TopicTemplate, connect, make_client, nodelay, parse_broker_url

FAILOVER_RETRY = 0.5  # seconds between rounds over the nodes while none can be reached


class Run(Protocol):
    """What a link asks of the simulation it belongs to."""

    app: str
    qos: int
    tls: MqttTls | None
    command_t: TopicTemplate
    lock: threading.Lock
    done: threading.Event

    def end(self, device: DeviceRun, error: str = "") -> None: ...

    def send(self, device: DeviceRun) -> None: ...

    def on_message(self, client: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None: ...


@dataclass
class DeviceRun:
    """One simulated device in a run: its state, its counters and the link it is on."""

    name: str
    sim: SimulatedDevice
    started: float = field(default_factory=time.perf_counter)
    steps: int = 0
    wire: int = 0  # CBOR statuses sent plus commands received
    statuses: int = 0  # statuses published
    duplicates: int = 0  # commands that came with no status waiting
    finished: float | None = None
    error: str = ""
    asked: float | None = None  # when the status now waiting for its answer was sent
    link: Link | None = None


class Link:
    """One MQTT connection and the devices it speaks for. When the connection is lost it
    moves to the next of ``urls`` (``failover``, called by the run's supervising loop)."""

    def __init__(self, run: Run, urls: list[str], start: int, devices: list[DeviceRun]) -> None:
        self.run, self.urls, self.at, self.devices = run, urls, start % len(urls), devices
        self.client: mqtt.Client | None = None
        self.user: str | None = None  # device mode: <device>@<app>
        self.secret: str | None = None
        self.lost = False  # the connection dropped: move to another node
        self.ready = False  # subscribed on the current connection: answers can arrive
        self.retry_at = 0.0
        self.failovers = 0
        self.subscribed = threading.Event()
        for device in devices:
            device.link = self

    @property
    def url(self) -> str:
        return self.urls[self.at]

    @property
    def filter(self) -> str:
        device = "+" if self.user is None else self.devices[0].name
        return self.run.command_t.format(self.run.app, device)

    def open(self) -> None:
        """Connect to the current node, or the next ones that answer; DeliveryError if none."""
        problem: DeliveryError | None = None
        for _ in self.urls:
            client = make_client(self.url, self.run.tls, self._client_id())
            # no cap on QoS 1 statuses in flight: paho's default (20) queues a fleet's statuses
            # behind each other, and any cap makes paho scan every message in flight per PUBACK
            client.max_inflight_messages_set(0)
            if self.user is not None:
                client.username_pw_set(self.user, self.secret)
            client.on_connect, client.on_subscribe = self._on_connect, self._on_subscribe
            client.on_message, client.on_disconnect = self.run.on_message, self._on_disconnect
            try:
                connect(client, self.url)
            except DeliveryError as exc:
                problem = problem or exc
                self.at = (self.at + 1) % len(self.urls)
                continue
            with self.run.lock:
                self.client, self.lost, self.ready = client, False, False
            client.loop_start()
            return
        assert problem is not None
        raise problem

    def _client_id(self) -> str:
        return f"ajour-simulate-{self.user}" if self.user is not None else ""

    def failover(self) -> None:
        """The connection was lost: drop it and connect to the next node that answers."""
        old = self.client
        with self.run.lock:
            self.client = None
        if old is not None:
            old.disconnect()
            old.loop_stop()
        self.at = (self.at + 1) % len(self.urls)
        try:
            self.open()
        except DeliveryError:
            with self.run.lock:
                self.lost, self.retry_at = True, time.perf_counter() + FAILOVER_RETRY
            return
        self.failovers += 1

    def close(self) -> None:
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()

    def _on_connect(self, c: mqtt.Client, _u: object, _f: object, reason: Any, _p: object) -> None:
        if not reason.is_failure:
            nodelay(c)
            c.subscribe(self.filter, qos=self.run.qos)
            return
        broker = parse_broker_url(self.url)
        if self.user is None:
            why = (
                f"the MQTT broker at {broker.address} refused the gateway connection as"
                f" {broker.username!r}: {reason}; with the users and ACL of broker-config each"
                " device logs in as itself: use --mqtt-connection device"
            )
        else:
            why = (
                f"the MQTT broker refused {self.user}: {reason}; is it in the password file"
                " that broker-config wrote, with the password of its spec.credentials"
                " (or --password)?"
            )
        with self.run.lock:
            self.client = None
            for device in self.devices:
                self.run.end(device, why)
        c.disconnect()
        self.subscribed.set()

    def _on_subscribe(self, _c: mqtt.Client, _u: object, _m: int, codes: Any, _p: object) -> None:
        if any(code.is_failure for code in codes):
            with self.run.lock:
                for device in self.devices:
                    self.run.end(
                        device,
                        f"the MQTT broker refused {self.user or 'the gateway'} a subscription"
                        f" to {self.filter}: its ACL lets a device read only its own command"
                        " topic (broker-config)",
                    )
            self.subscribed.set()
            return
        first = not self.subscribed.is_set()
        with self.run.lock:
            self.ready = True
        self.subscribed.set()
        if first and self.user is None:
            return  # the run sends the first statuses once every gateway is subscribed
        with self.run.lock:  # first statuses, or those a lost node never answered
            due = [
                d
                for d in self.devices
                if d.finished is None and (d.asked is not None or d.statuses == 0)
            ]
        for device in due:
            self.run.send(device)

    def _on_disconnect(self, c: mqtt.Client, _u: object, _f: object, reason: Any, _p: Any) -> None:
        with self.run.lock:
            if reason.is_failure and c is self.client and not self.run.done.is_set():
                self.lost, self.ready = True, False
