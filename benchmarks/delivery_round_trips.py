"""The delivery benchmark's round trips (part 1): simulated devices in closed loops behind
one gateway client, timed windows against a responder, best of the repeats."""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.delivery_fixtures import APP, COMMAND_TOPIC, MTU, START, STATUS_TOPIC, process_cpu
from benchmarks.delivery_responders import Responder
from delivery.device import SimulatedDevice
from delivery.mqtt import TopicTemplate, nodelay
from delivery.protocol import decode_command, encode_status

CONCURRENCY = (1, 8, 64)
QOS_LEVELS = (0, 1)
WARMUP_S = 0.5
ROUND_TRIP_CAP = 200_000  # per window, on top of the time bound


class Gateway:
    """Simulated devices over one MQTT connection, each in a closed loop: status, command."""

    def __init__(self, port: int, names: list[str], qos: int) -> None:
        self.qos = qos
        self.status_t, self.command_t = TopicTemplate(STATUS_TOPIC), TopicTemplate(COMMAND_TOPIC)
        self.devices = {name: SimulatedDevice(START, MTU) for name in names}
        self.sent_at = dict.fromkeys(names, 0.0)
        self.waiting: set[str] = set()
        self.lock = threading.Lock()
        self.completed = self.restarts = self.duplicates = 0
        self.kinds: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.record = False
        self.running = True
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-gw-{uuid.uuid4().hex[:8]}"
        )
        # no cap on QoS 1 statuses in flight: under a cap, paho scans every message in
        # flight on each PUBACK (O(devices) per round trip at 1,000 devices)
        self.client.max_inflight_messages_set(0)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            self.close()
            raise SystemExit("the device gateway could not subscribe")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        nodelay(client)
        client.subscribe(self.command_t.format(APP, "+"), qos=self.qos)

    def _send(self, name: str) -> None:
        status = encode_status(self.devices[name].status())
        with self.lock:
            self.waiting.add(name)
            self.sent_at[name] = time.perf_counter()
        self.client.publish(self.status_t.format(APP, name), status, qos=self.qos)

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        received = time.perf_counter()
        names = self.command_t.parse(message.topic)
        if names is None or names[1] not in self.devices:
            return
        name = names[1]
        with self.lock:
            if name not in self.waiting:
                self.duplicates += 1
                return
            self.completed += 1
            if self.record:
                self.latencies.append(received - self.sent_at[name])
        command = decode_command(bytes(message.payload))
        self.kinds[type(command).__name__] += 1
        device = self.devices[name]
        device.apply(command)
        if device.synced:  # start over, so the loop keeps receiving Writes
            self.devices[name] = SimulatedDevice(START, MTU)
            self.restarts += 1
        if self.running and self.completed < ROUND_TRIP_CAP:
            self._send(name)
        else:
            with self.lock:
                self.waiting.discard(name)

    def kick(self) -> None:
        for name in list(self.devices):
            self._send(name)

    def stop(self, drain_s: float = 3.0) -> int:
        """Stop sending; wait for the answers in flight; return the devices never answered."""
        self.running = False
        deadline = time.monotonic() + drain_s
        while self.waiting and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.waiting)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Snapshot:
    wall: float
    completed: int
    responder: dict[str, Any]
    driver_cpu: float
    broker_cpu: float


def snapshot(gw: Gateway, responder: Responder, broker: int | None) -> Snapshot:
    return Snapshot(
        time.perf_counter(),
        gw.completed,
        responder.stats(),
        time.process_time(),
        process_cpu(broker),
    )


def window(
    port: int, responder: Responder, devices: int, qos: int, seconds: float, broker: int | None
) -> dict[str, Any]:
    """One measurement: ``devices`` closed loops against ``responder`` for ``seconds``."""
    gw = Gateway(port, [f"dev{i}" for i in range(devices)], qos)
    try:
        gw.kick()
        time.sleep(WARMUP_S)
        a = snapshot(gw, responder, broker)
        gw.record = True
        end = a.wall + seconds
        while time.perf_counter() < end and gw.completed < ROUND_TRIP_CAP:
            time.sleep(0.02)
        gw.record = False
        b = snapshot(gw, responder, broker)
        lost = gw.stop()
    finally:
        gw.close()
    wall = b.wall - a.wall
    trips = b.completed - a.completed
    handled = b.responder["handled"] - a.responder["handled"]
    lat = sorted(gw.latencies)

    def per_trip_us(seconds_: float) -> float:
        return seconds_ / trips * 1e6 if trips else 0.0

    return {
        "responder": responder.kind,
        "qos": qos,
        "devices": devices,
        "seconds": wall,
        "round_trips": trips,
        "round_trips_per_s": trips / wall,
        "latency_ms": {
            "p50": statistics.median(lat) * 1e3 if lat else 0.0,
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else 0.0,
        },
        "cpu_us_per_trip": {
            "responder": per_trip_us(b.responder["cpu_s"] - a.responder["cpu_s"]),
            "handle": per_trip_us(b.responder["handle_s"] - a.responder["handle_s"]),
            "driver": per_trip_us(b.driver_cpu - a.driver_cpu),
            "broker": per_trip_us(b.broker_cpu - a.broker_cpu),
        },
        "responder_busy": (b.responder["cpu_s"] - a.responder["cpu_s"]) / wall,
        "handled": handled,
        "commands": dict(gw.kinds),
        "restarts": gw.restarts,
        "duplicates": gw.duplicates,
        "unanswered": lost,
    }


def round_trips(
    ctx: SpawnContext,
    port: int,
    root: Path,
    seconds: float,
    repeats: int,
    broker: int | None,
) -> list[dict[str, Any]]:
    """Best of ``repeats`` per (responder, qos, devices); worker and echo alternate."""
    best: dict[tuple[str, int, int], dict[str, Any]] = {}
    for qos in QOS_LEVELS:
        for rep in range(repeats):
            order = ("echo", "worker") if rep % 2 == 0 else ("worker", "echo")
            for kind in order:
                responder = Responder(ctx, kind, port, qos, root)
                try:
                    for devices in CONCURRENCY:
                        got = window(port, responder, devices, qos, seconds, broker)
                        key = (kind, qos, devices)
                        rate = got["round_trips_per_s"]
                        if key not in best or rate > best[key]["round_trips_per_s"]:
                            best[key] = got
                finally:
                    responder.close()
    rows = []
    for qos in QOS_LEVELS:
        for devices in CONCURRENCY:
            worker, echo = best[("worker", qos, devices)], best[("echo", qos, devices)]
            rows.append(
                {
                    "qos": qos,
                    "devices": devices,
                    "worker": worker,
                    "echo": echo,
                    "ratio": worker["round_trips_per_s"] / echo["round_trips_per_s"],
                }
            )
    return rows
