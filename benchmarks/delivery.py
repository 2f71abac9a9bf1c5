"""Delivery benchmark: the MQTT worker against a raw echo, a fleet update, the codec.

Starts mosquitto on a free loopback port (the configuration of ``tests/broker.py`` plus
``set_tcp_nodelay true``; ``--broker-nagle`` leaves that line out) and publishes a 128 KiB
firmware to an OCI image layout directory (the embedded default source), then measures, in
one run:

1. **Round trips/s over MQTT**, QoS 0 and QoS 1, for 1, 8 and 64 concurrent simulated
   devices. Each device runs a closed loop: send its status, wait for its command, apply it,
   repeat (a device that reaches Sync starts over, so nearly every reply is a 512-byte
   Write). Responders, each in a process of its own and subscribed the same way (shared
   subscription ``$share/ajour/ajour/+/+/dfu``, TCP_NODELAY, one paho client):

   * **worker**: the real ``MqttTransport`` + ``Worker`` over the OCI layout directory,
     with an in-memory status store (the ``serve`` default);
   * **echo (baseline)**: a trivial paho client that answers every status with a constant
     payload of the worker's Write size on ``<status topic>/cmd``.

   Devices live in the benchmark process behind one shared paho gateway client (one TCP
   connection, as ``simulate_mqtt`` and the drgdfu gateway do), for worker and echo alike.
   Best of ``--repeats`` windows of ``--seconds`` each (after 0.5 s of warm-up), worker and
   echo alternating. CPU time per round trip is reported for the responder, its
   ``Worker.handle``, mosquitto and the device side, to show where the time goes.
2. **Fleet update**: 200 devices updating to the 128 KiB image at mtu 512 with
   ``delivery.simulator.simulate_mqtt`` (QoS 1): wall time, payload bytes exchanged (from
   the encoded size of every message, replayed and checked against the run), and the ideal
   (image plus the minimum framing of every Write, plus the final Swap and Sync).
3. **Codec and decision**: ns/op of encode/decode for a 512-byte Write and a Status with
   update, ``decide()``, Write framing bytes; and ``Worker.handle`` taken apart piece by
   piece (what the worker process spends per message).

Takes about 1.5 minutes on a 2-core machine.

    python benchmarks/delivery.py [--seconds 2] [--repeats 2] [--broker-nagle] [--json]
"""

from __future__ import annotations

import argparse
import gc
import getpass
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # ahead of benchmarks/, whose delivery.py is this file

import paho.mqtt  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from ajour_build.fleet import load_fleet  # noqa: E402
from ajour_build.publish.base import FirmwareArtifact  # noqa: E402
from ajour_build.publish.target import publisher_for  # noqa: E402
from delivery.decision import Firmware, decide  # noqa: E402
from delivery.device import SimulatedDevice  # noqa: E402
from delivery.mqtt import MqttSettings, MqttTransport, TopicTemplate, nodelay  # noqa: E402
from delivery.protocol import (  # noqa: E402
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Write,
    decode_command,
    decode_status,
    encode_command,
    encode_status,
)
from delivery.simulator import simulate_mqtt  # noqa: E402
from delivery.store import StatusStore  # noqa: E402
from delivery.targets import Targets  # noqa: E402
from delivery.worker import Worker  # noqa: E402
from tests.broker import MOSQUITTO, run_broker  # noqa: E402
from tests.registry import free_port  # noqa: E402

KIB = 1024
IMAGE_SIZE = 128 * KIB
MTU = 512
APP = "app"
START = b"0.1"
TARGET = "4.0"
FLEET_DEVICES = 200
CONCURRENCY = (1, 8, 64)
QOS_LEVELS = (0, 1)
STATUS_TOPIC = MqttSettings.status_topic
COMMAND_TOPIC = MqttSettings.command_topic
WARMUP_S = 0.5
SETTLE_S = 0.3  # after the responder subscribes, before devices talk (shared-sub SUBACK)
ROUND_TRIP_CAP = 200_000  # per window, on top of the time bound
FLEET_TIMEOUT_S = 100.0
GOAL = 0.8
TIMES = "\N{MULTIPLICATION SIGN}"


# --------------------------------------------------------------------------- setup


def prepare(root: Path, devices: int) -> bytes:
    """A fleet of ``devices`` under ``root/fleet`` and the image as ``fw/app:latest``."""
    (root / "fleet").mkdir(parents=True, exist_ok=True)
    docs = [
        f"kind: Application\nmetadata: {{name: {APP}}}\n"
        "spec: {firmware: {container: {image: fw/app:latest}}}\n"
    ]
    docs += [
        f"kind: Device\nmetadata: {{name: dev{i}, application: {APP}}}\n" for i in range(devices)
    ]
    (root / "fleet" / "fleet.yaml").write_text("---\n".join(docs), encoding="utf-8")
    image = random.Random(0).randbytes(IMAGE_SIZE)
    path = root / "fw.bin"
    path.write_bytes(image)
    publisher_for(f"oci-layout://{root / 'oci' / 'fw' / 'app'}:latest", {}).publish(
        FirmwareArtifact(path, TARGET)
    )
    return image


@dataclass
class TimedWorker(Worker):
    """The real worker, with the wall and CPU time spent in ``handle`` added up.

    The four clock reads cost about 1 µs per message (the thread CPU clock is a system call).
    """

    handled: int = 0
    handle_ns: int = 0
    handle_cpu_ns: int = 0

    def handle(self, application: str, device: str, payload: bytes) -> bytes | None:
        started, cpu = time.perf_counter_ns(), time.thread_time_ns()
        try:
            return super().handle(application, device, payload)
        finally:
            self.handle_cpu_ns += time.thread_time_ns() - cpu
            self.handle_ns += time.perf_counter_ns() - started
            self.handled += 1


def make_worker(root: Path) -> TimedWorker:
    targets = Targets(load_fleet([root / "fleet"]), f"oci-layout://{root / 'oci'}")
    return TimedWorker(targets, StatusStore())


def write_reply(image: bytes, offset: int) -> bytes:
    return encode_command(Write(TARGET.encode(), None, offset, image[offset : offset + MTU]))


def echo_payload(image: bytes) -> bytes:
    """A valid Write of the size of the worker's Writes in the image's upper half.

    Offsets >= 64 KiB take 5 bytes; a Write at offset 0 takes 1. The echo sends a Write at
    offset 0 (so a device that applies it does not grow its image) whose data is longer by
    the difference, which makes the two payloads the same size.
    """
    want = len(write_reply(image, IMAGE_SIZE - MTU))
    data = image[:MTU]
    payload = encode_command(Write(TARGET.encode(), None, 0, data))
    data = image[: MTU + want - len(payload)]
    payload = encode_command(Write(TARGET.encode(), None, 0, data))
    assert len(payload) == want, (len(payload), want)
    return payload


@contextmanager
def broker(tmp: Path, tcp_nodelay: bool) -> Iterator[int]:
    """mosquitto on a free loopback port; yield the port.

    Without ``tcp_nodelay`` this is ``tests/broker.py`` unchanged (mosquitto's default,
    ``set_tcp_nodelay false``). With it, the same configuration plus ``set_tcp_nodelay
    true``: without that line the broker's own sockets keep Nagle's algorithm, and a QoS 1
    round trip with few devices in flight waits ~40 ms for a delayed ACK, whatever the
    clients set.
    """
    if not tcp_nodelay:
        with run_broker(tmp) as port:
            yield port
        return
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    conf = tmp / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\npersistence false\nuser {getpass.getuser()}\n"
        "allow_anonymous true\nset_tcp_nodelay true\n"
    )
    with (tmp / "mosquitto.log").open("wb") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 10
            while True:
                if proc.poll() is not None:
                    raise SystemExit((tmp / "mosquitto.log").read_text()[-2000:])
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        raise SystemExit("mosquitto did not start within 10 s") from None
                    time.sleep(0.05)
            yield port
        finally:
            proc.terminate()
            proc.wait(10)


# --------------------------------------------------------------------------- responders


class Echo:
    """The baseline responder: every status gets the same reply payload back."""

    def __init__(self, port: int, qos: int, payload: bytes) -> None:
        self.qos, self.payload, self.handled = qos, payload, 0
        self.ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"bench-echo-{uuid.uuid4().hex[:8]}"
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=30)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        nodelay(client)
        client.subscribe(f"$share/ajour/{TopicTemplate(STATUS_TOPIC).wildcard}", qos=self.qos)
        self.ready.set()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        self.handled += 1
        client.publish(message.topic + "/cmd", self.payload, qos=self.qos)

    def start(self) -> None:
        self.client.loop_start()
        if not self.ready.wait(10):
            raise SystemExit("the echo client could not connect to mosquitto")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def serve(kind: str, port: int, qos: int, root: str, conn: Connection) -> None:
    """A responder process: answer statuses until told to stop, report stats on request."""
    worker: TimedWorker | None = None
    echo: Echo | None = None
    if kind == "worker":
        worker = make_worker(Path(root))
        transport = MqttTransport(worker, MqttSettings(url=f"mqtt://127.0.0.1:{port}", qos=qos))
        transport.start()
        stop = transport.stop
    else:
        echo = Echo(port, qos, echo_payload((Path(root) / "fw.bin").read_bytes()))
        echo.start()
        stop = echo.stop
    time.sleep(SETTLE_S)

    def stats() -> dict[str, Any]:
        if worker is not None:
            return {
                "cpu_s": time.process_time(),
                "handled": worker.handled,
                "handle_s": worker.handle_ns / 1e9,
                "handle_cpu_s": worker.handle_cpu_ns / 1e9,
                "counters": worker.counters.snapshot(),
            }
        assert echo is not None
        return {
            "cpu_s": time.process_time(),
            "handled": echo.handled,
            "handle_s": 0.0,
            "handle_cpu_s": 0.0,
        }

    conn.send("ready")
    for _ in range(10_000):  # bounded: a run asks a few dozen times
        if not conn.poll(600):
            break  # the benchmark went away
        request = conn.recv()
        if request == "stop":
            stop()
            conn.send(stats())
            return
        conn.send(stats())
    stop()


class Responder:
    """The parent's handle on a responder process."""

    def __init__(self, ctx: SpawnContext, kind: str, port: int, qos: int, root: Path) -> None:
        self.kind = kind
        self.conn, child = ctx.Pipe()
        self.proc: SpawnProcess = ctx.Process(
            target=serve, args=(kind, port, qos, str(root), child), daemon=True
        )
        self.proc.start()
        child.close()
        if not self.conn.poll(60) or self.conn.recv() != "ready":
            self.close()
            raise SystemExit(f"the {kind} responder did not start")

    def stats(self) -> dict[str, Any]:
        self.conn.send("stats")
        if not self.conn.poll(30):
            raise SystemExit(f"the {self.kind} responder stopped answering")
        result: dict[str, Any] = self.conn.recv()
        return result

    def close(self) -> dict[str, Any]:
        final: dict[str, Any] = {}
        try:
            self.conn.send("stop")
            if self.conn.poll(15):
                final = self.conn.recv()
        except (OSError, EOFError):
            pass
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
        self.conn.close()
        return final


# --------------------------------------------------------------------------- devices


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
        self.client.max_inflight_messages_set(max(20, 2 * len(names)))
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


# --------------------------------------------------------------------------- CPU accounting


def find_pid(needle: str) -> int | None:
    """The process whose command line holds ``needle`` (our own mosquitto's config path)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle.encode() in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    return None


def process_cpu(pid: int | None) -> float:
    """user + system CPU seconds of ``pid`` (0 if unknown)."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


# --------------------------------------------------------------------------- part 1


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
            "handle": per_trip_us(b.responder["handle_cpu_s"] - a.responder["handle_cpu_s"]),
            "handle_wall": per_trip_us(b.responder["handle_s"] - a.responder["handle_s"]),
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


# --------------------------------------------------------------------------- part 2


def publish_bytes(topic: str, payload: int, qos: int) -> int:
    """MQTT bytes for one message over one hop: the PUBLISH packet, plus its PUBACK at QoS 1.

    Through a broker every message makes two hops (sender to broker, broker to receiver).
    """
    remaining = 2 + len(topic) + (2 if qos else 0) + payload
    head = 1 + (1 if remaining < 128 else 2 if remaining < 16384 else 3)
    return head + remaining + (4 if qos else 0)


@dataclass
class Replay:
    """Every message one device exchanges while updating, from decide() and the codec."""

    steps: int = 0
    status_bytes: int = 0
    command_bytes: int = 0
    writes: int = 0
    write_framing: int = 0
    swap_bytes: int = 0
    sync_bytes: int = 0
    status_sizes: tuple[int, ...] = ()
    command_sizes: tuple[int, ...] = ()


def replay(firmware: Firmware) -> Replay:
    out = Replay()
    device = SimulatedDevice(START, MTU)
    statuses: list[int] = []
    commands: list[int] = []
    for _ in range(4 * IMAGE_SIZE // MTU + 16):  # bounded: 258 steps expected
        status = encode_status(device.status())
        command = decide(decode_status(status), firmware)
        payload = encode_command(command)
        statuses.append(len(status))
        commands.append(len(payload))
        if isinstance(command, Write):
            out.writes += 1
            out.write_framing += len(payload) - len(command.data)
        elif isinstance(command, Swap):
            out.swap_bytes += len(payload)
        elif isinstance(command, Sync):
            out.sync_bytes += len(payload)
        device.apply(decode_command(payload))
        if device.synced:
            break
    out.steps = len(statuses)
    out.status_bytes, out.command_bytes = sum(statuses), sum(commands)
    out.status_sizes, out.command_sizes = tuple(statuses), tuple(commands)
    return out


def fleet_update(
    ctx: SpawnContext, port: int, root: Path, image: bytes, broker: int | None
) -> dict[str, Any]:
    qos = 1
    names = [f"dev{i}" for i in range(FLEET_DEVICES)]
    responder = Responder(ctx, "worker", port, qos, root)
    try:
        before = responder.stats()
        cpu0, broker0 = time.process_time(), process_cpu(broker)
        started = time.perf_counter()
        results = simulate_mqtt(
            f"mqtt://127.0.0.1:{port}",
            APP,
            names,
            START,
            MTU,
            qos=qos,
            timeout=FLEET_TIMEOUT_S,
        )
        wall = time.perf_counter() - started
        cpu1, broker1 = time.process_time(), process_cpu(broker)
        after = responder.stats()
    finally:
        responder.close()
    plan = replay(Firmware.from_image(TARGET.encode(), image))
    failed = [
        r.device
        for r in results
        if not r.synced or r.final != TARGET or r.bytes_received != IMAGE_SIZE
    ]
    if failed:
        raise SystemExit(f"{len(failed)} devices did not update, for example {failed[:3]}")
    off_plan = [r.device for r in results if r.steps != plan.steps]
    steps = sum(r.steps for r in results)
    handled = after["handled"] - before["handled"]
    if off_plan or handled != steps:
        raise SystemExit(
            f"the exchange differs from the replay: {len(off_plan)} devices took other than"
            f" {plan.steps} steps; the worker handled {handled} statuses for {steps} steps"
        )
    n = len(results)
    status_bytes, command_bytes = n * plan.status_bytes, n * plan.command_bytes
    actual = status_bytes + command_bytes
    ideal = n * (IMAGE_SIZE + plan.write_framing + plan.swap_bytes + plan.sync_bytes)
    mqtt_bytes = 0
    for name in names:
        status_topic = STATUS_TOPIC.format(app=APP, device=name)
        command_topic = COMMAND_TOPIC.format(app=APP, device=name)
        mqtt_bytes += sum(publish_bytes(status_topic, s, qos) for s in plan.status_sizes)
        mqtt_bytes += sum(publish_bytes(command_topic, c, qos) for c in plan.command_sizes)
    return {
        "devices": n,
        "qos": qos,
        "image_bytes": IMAGE_SIZE,
        "mtu": MTU,
        "wall_s": wall,
        "slowest_device_s": max(r.seconds for r in results),
        "round_trips": steps,
        "round_trips_per_s": steps / wall,
        "steps_per_device": plan.steps,
        "writes_per_device": plan.writes,
        "bytes": {
            "statuses": status_bytes,
            "commands": command_bytes,
            "actual": actual,
            "ideal": ideal,
            "image_total": n * IMAGE_SIZE,
            "write_framing_per_device": plan.write_framing,
            "swap": plan.swap_bytes,
            "sync": plan.sync_bytes,
            "mqtt_per_hop_computed": mqtt_bytes,
        },
        "efficiency": ideal / actual,
        "image_over_actual": n * IMAGE_SIZE / actual,
        "image_over_mqtt": n * IMAGE_SIZE / mqtt_bytes,
        "cpu_us_per_trip": {
            "worker": (after["cpu_s"] - before["cpu_s"]) / steps * 1e6,
            "handle": (after["handle_cpu_s"] - before["handle_cpu_s"]) / steps * 1e6,
            "handle_wall": (after["handle_s"] - before["handle_s"]) / steps * 1e6,
            "driver": (cpu1 - cpu0) / steps * 1e6,
            "broker": (broker1 - broker0) / steps * 1e6,
        },
        "worker_counters": after.get("counters", {}),
    }


# --------------------------------------------------------------------------- part 3


def per_op_ns(fn: Callable[[], object], budget_s: float = 0.08, repeats: int = 5) -> float:
    """Best-of-``repeats`` ns per call of ``fn``, each repeat about ``budget_s`` long."""
    start = time.perf_counter_ns()
    for _ in range(10):
        fn()
    once = max((time.perf_counter_ns() - start) / 10, 1.0)
    n = max(10, min(200_000, int(budget_s * 1e9 / once)))
    best = float("inf")
    gc.collect()
    for _ in range(repeats):
        start = time.perf_counter_ns()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter_ns() - start) / n)
    return best


def codec(image: bytes) -> dict[str, Any]:
    firmware = Firmware.from_image(TARGET.encode(), image)
    offset = 64 * KIB
    write = Write(TARGET.encode(), 7, offset, image[offset : offset + MTU])
    write_bytes = encode_command(write)
    status = Status(START, MTU, 7, UpdateStatus(TARGET.encode(), offset))
    status_bytes = encode_status(status)
    call = per_op_ns(lambda: None)
    ops: dict[str, Callable[[], object]] = {
        "encode_command(Write 512 B)": lambda: encode_command(write),
        "decode_command(Write 512 B)": lambda: decode_command(write_bytes),
        "encode_status(with update)": lambda: encode_status(status),
        "decode_status(with update)": lambda: decode_status(status_bytes),
        "decide(status, 128 KiB target)": lambda: decide(status, firmware),
    }
    ns = {name: per_op_ns(fn) - call for name, fn in ops.items()}
    framing = {
        f"offset {off} ({label})": len(write_reply(image, off)) - MTU
        for off, label in ((0, "1-byte offset"), (512, "3-byte"), (offset, "5-byte"))
    }
    plan = replay(firmware)
    return {
        "call_overhead_ns": call,
        "ns_per_op": ns,
        "status_bytes": len(status_bytes),
        "write_bytes": len(write_bytes),
        "write_framing_bytes": framing,
        "write_framing_mean": plan.write_framing / plan.writes,
    }


HANDLE_STEPS = (
    "targets.knows",
    "decode_status",
    "targets.source (effective spec, model_dump_json key)",
    "source.target (OCI layout: index, manifest, config; blob LRU)",
    "Firmware(...)",
    "decide",
    "counters.add",
    "_observed (firmware_spec, DeviceStatus)",
    "store.observe, in-memory SQLite (serve default)",
    "encode_command",
)


def handle_parts(root: Path, iterations: int = 2000) -> dict[str, Any]:
    """Where ``Worker.handle`` spends its time: its steps, one by one, timed in place.

    Each iteration replays the steps of ``Worker.handle`` for a 512-byte Write (the same
    calls, in the same order, on the same objects), then calls ``Worker.handle`` itself, and
    also times an upsert into a file-backed store (``serve --store``) for comparison. Timing
    the steps in place, rather than each in a tight loop of its own, keeps the caches as
    cold or warm as they are in the worker; the medians of the steps add up to the whole.
    """
    worker = make_worker(root)
    file_store = StatusStore(root / "status.db")
    targets, counters, app, device = worker.targets, worker.counters, APP, "dev0"
    payload = encode_status(Status(START, MTU, None, UpdateStatus(TARGET.encode(), 64 * KIB)))
    clock = time.perf_counter_ns
    samples: list[list[int]] = [[] for _ in range(len(HANDLE_STEPS) + 2)]
    gc.collect()
    for _ in range(iterations):
        t0 = clock()
        targets.knows(app, device)
        t1 = clock()
        status = decode_status(payload)
        t2 = clock()
        source = targets.source(app, device)
        t3 = clock()
        assert source is not None
        found = source.target()
        t4 = clock()
        firmware = Firmware(found.version, found.data, found.checksum)
        t5 = clock()
        command = decide(status, firmware)
        t6 = clock()
        counters.add(type(command).__name__.lower())
        t7 = clock()
        observed = worker._observed(app, device, status, firmware, command, "")
        t8 = clock()
        assert worker.store is not None
        worker.store.observe(observed)
        t9 = clock()
        encode_command(command)
        t10 = clock()
        worker.handle(app, device, payload)
        t11 = clock()
        file_store.observe(observed)
        t12 = clock()
        marks = (t0, t1, t2, t3, t4, t5, t6, t7, t8, t9, t10, t11, t12)
        for i, series in enumerate(samples):
            series.append(marks[i + 1] - marks[i])
    file_store.close()
    medians = [statistics.median(series) / 1e3 for series in samples]
    steps = dict(zip(HANDLE_STEPS, medians, strict=False))
    return {
        "iterations": iterations,
        "us_median": steps,
        "steps_sum_us": sum(steps.values()),
        "handle_us": medians[len(HANDLE_STEPS)],
        "handle_mean_us": statistics.fmean(samples[len(HANDLE_STEPS)]) / 1e3,
        "file_store_observe_us": medians[-1],
    }


# --------------------------------------------------------------------------- run, report


def machine() -> dict[str, Any]:
    try:
        out = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True, timeout=5)
        broker = (out.stdout or out.stderr).splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        broker = "?"
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "paho_mqtt": paho.mqtt.__version__,
        "mosquitto": broker,
        "loadavg_start": os.getloadavg(),
    }


def run(seconds: float, repeats: int, tcp_nodelay: bool) -> dict[str, Any]:
    started = time.perf_counter()
    info = machine()
    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="ajour-bench-delivery-") as tmp_name:
        tmp = Path(tmp_name)
        image = prepare(tmp, FLEET_DEVICES)
        with broker(tmp / "mqtt", tcp_nodelay) as port:
            pid = find_pid(str(tmp / "mqtt" / "mosquitto.conf"))
            rows = round_trips(ctx, port, tmp, seconds, repeats, pid)
            fleet = fleet_update(ctx, port, tmp, image, pid)
        parts = handle_parts(tmp)
        codec_result = codec(image)
    info["loadavg_end"] = os.getloadavg()
    return {
        "benchmark": "delivery",
        "machine": info,
        "settings": {
            "image_bytes": IMAGE_SIZE,
            "mtu": MTU,
            "seconds_per_window": seconds,
            "warmup_s": WARMUP_S,
            "repeats": repeats,
            "broker_set_tcp_nodelay": tcp_nodelay,
            "devices_structure": "one shared paho gateway client for all devices (both sides)",
            "responder_structure": "one paho client, own process, $share subscription",
            "echo_reply_bytes": len(echo_payload(image)),
        },
        "round_trips": rows,
        "goal": GOAL,
        "fleet_update": fleet,
        "worker_handle": parts,
        "codec": codec_result,
        "wall_seconds": time.perf_counter() - started,
    }


def print_round_trips(report: dict[str, Any]) -> None:
    s = report["settings"]
    nagle = "on (set_tcp_nodelay false)" if not s["broker_set_tcp_nodelay"] else "off"
    print(
        f"\n1. status→command round trips/s, best of {s['repeats']} x {s['seconds_per_window']} s;"
        f" replies {s['echo_reply_bytes']} B; devices on one gateway client;"
        f" broker Nagle {nagle}"
    )
    print(
        f"{'qos':>3}{'dev':>5}{'worker rt/s':>13}{'echo rt/s':>11}{'ratio':>8}"
        f"{'p50 ms w/e':>15}{'p99 ms w/e':>15}"
    )
    for r in report["round_trips"]:
        w, e = r["worker"], r["echo"]
        flag = "" if r["ratio"] >= report["goal"] else "  below goal"
        print(
            f"{r['qos']:>3}{r['devices']:>5}{w['round_trips_per_s']:>13.0f}"
            f"{e['round_trips_per_s']:>11.0f}{r['ratio']:>7.2f}{TIMES}"
            f"{w['latency_ms']['p50']:>9.2f}/{e['latency_ms']['p50']:<5.2f}"
            f"{w['latency_ms']['p99']:>9.2f}/{e['latency_ms']['p99']:<5.2f}{flag}"
        )
        problems = sum(x["unanswered"] + x["duplicates"] for x in (w, e))
        if problems:
            print(f"    WARNING: {problems} unanswered or duplicate replies in these windows")
    print(
        "\n   CPU µs per round trip (w = worker run, e = echo run); busy = responder CPU / wall;"
        " handle = CPU µs in Worker.handle"
    )
    print(
        f"{'qos':>3}{'dev':>5}{'worker proc':>13}{'handle':>11}{'busy':>6}"
        f"{'echo proc':>11}{'busy':>6}{'broker w/e':>14}{'devices w/e':>14}"
    )
    for r in report["round_trips"]:
        w, e = r["worker"], r["echo"]
        wc, ec = w["cpu_us_per_trip"], e["cpu_us_per_trip"]
        print(
            f"{r['qos']:>3}{r['devices']:>5}{wc['responder']:>13.0f}{wc['handle']:>11.0f}"
            f"{w['responder_busy']:>6.2f}{ec['responder']:>11.0f}{e['responder_busy']:>6.2f}"
            f"{wc['broker']:>8.0f}/{ec['broker']:<5.0f}{wc['driver']:>8.0f}/{ec['driver']:<5.0f}"
        )
    print(f"   goal: worker / echo >= {report['goal']:.1f}")


def print_fleet(f: dict[str, Any]) -> None:
    b = f["bytes"]
    print(
        f"\n2. fleet update: {f['devices']} devices, {f['image_bytes'] // KIB} KiB at mtu"
        f" {f['mtu']}, QoS {f['qos']} (simulate_mqtt)"
    )
    print(
        f"   wall {f['wall_s']:.1f} s, {f['round_trips']} round trips"
        f" ({f['steps_per_device']} per device), {f['round_trips_per_s']:.0f} rt/s"
    )
    print(
        f"   payload bytes: statuses {b['statuses']:,} + commands {b['commands']:,}"
        f" = {b['actual']:,}; ideal {b['ideal']:,} (image {b['image_total']:,}"
        f" + Write framing {b['write_framing_per_device']} + Swap {b['swap']}"
        f" + Sync {b['sync']} per device)"
    )
    print(
        f"   efficiency ideal/actual {f['efficiency']:.3f}; image/actual"
        f" {f['image_over_actual']:.3f}; image/MQTT bytes per hop (computed)"
        f" {f['image_over_mqtt']:.3f}"
    )
    c = f["cpu_us_per_trip"]
    print(
        f"   CPU µs per round trip: worker {c['worker']:.0f} (handle {c['handle']:.0f}),"
        f" broker {c['broker']:.0f}, devices {c['driver']:.0f}"
    )


def print_codec(report: dict[str, Any]) -> None:
    c = report["codec"]
    print(f"\n3. codec (ns/op, call overhead {c['call_overhead_ns']:.0f} ns subtracted)")
    for name, ns in c["ns_per_op"].items():
        print(f"   {name:<34}{ns:>8.0f}")
    framing = ", ".join(f"{k}: {v} B" for k, v in c["write_framing_bytes"].items())
    print(
        f"   Write framing (packed): {framing}; mean over the image"
        f" {c['write_framing_mean']:.2f} B; status with update {c['status_bytes']} B"
    )
    h = report["worker_handle"]
    print(f"\n   Worker.handle, its steps timed in place (median µs, {h['iterations']} iterations)")
    for name, us in h["us_median"].items():
        print(f"   {name:<64}{us:>8.1f}")
    print(f"   {'sum of the steps':<64}{h['steps_sum_us']:>8.1f}")
    print(
        f"   {'Worker.handle itself (mean ' + format(h['handle_mean_us'], '.1f') + ')':<64}"
        f"{h['handle_us']:>8.1f}"
    )
    print(
        f"   {'store.observe, SQLite file in WAL mode (serve --store)':<64}"
        f"{h['file_store_observe_us']:>8.1f}"
    )


def print_table(report: dict[str, Any]) -> None:
    m = report["machine"]
    print(
        f"machine: {m['nproc']} CPUs, {m['implementation']} {m['python']},"
        f" paho-mqtt {m['paho_mqtt']}, {m['mosquitto']}; load average"
        f" {m['loadavg_start'][0]:.2f} at the start, {m['loadavg_end'][0]:.2f} at the end"
    )
    print_round_trips(report)
    print_fleet(report["fleet_update"])
    print_codec(report)
    print(f"\nwhole run {report['wall_seconds']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per window")
    parser.add_argument("--repeats", type=int, default=2, help="windows per cell (best kept)")
    parser.add_argument(
        "--broker-nagle",
        action="store_true",
        help="run mosquitto as tests/broker.py does, without set_tcp_nodelay",
    )
    parser.add_argument("--json", action="store_true", help="print a JSON report")
    args = parser.parse_args(argv)
    if args.repeats < 1 or not 0.2 <= args.seconds <= 30:
        parser.error("--repeats must be at least 1 and --seconds between 0.2 and 30")
    report = run(args.seconds, args.repeats, not args.broker_nagle)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
