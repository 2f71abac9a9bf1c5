"""The delivery benchmark's responders: the timed worker and the echo baseline, each served
from a process of its own, and the parent's handle on that process."""

from __future__ import annotations

import threading
import time
import uuid
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext, SpawnProcess
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ajour_build.core.fleet import load_fleet
from benchmarks.delivery_fixtures import IMAGE_SIZE, MTU, STATUS_TOPIC, TARGET
from delivery.mqtt import MqttSettings, MqttTransport, TopicTemplate, nodelay
from delivery.protocol import Write, encode_command
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker

SETTLE_S = 0.3  # after the responder subscribes, before devices talk (shared-sub SUBACK)


def make_worker(root: Path) -> Worker:
    """The real worker as ``serve`` runs it, with no instrumentation of its own: what it
    spends in ``handle`` is read from its own latency histogram (``GET /metrics``). A
    per-message CPU clock (``thread_time_ns``) cost more than the handling itself here."""
    targets = Targets(load_fleet([root / "fleet"]), f"oci-layout://{root / 'oci'}")
    return Worker(targets, StatusStore())


def handled(worker: Worker) -> tuple[int, float]:
    """Statuses the worker has handled, and the seconds it spent handling them."""
    buckets, seconds = worker.counters.latency()
    return sum(buckets), seconds


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
    worker: Worker | None = None
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
            count, seconds = handled(worker)
            return {
                "cpu_s": time.process_time(),
                "handled": count,
                "handle_s": seconds,
                "counters": worker.counters.snapshot(),
            }
        assert echo is not None
        return {
            "cpu_s": time.process_time(),
            "handled": echo.handled,
            "handle_s": 0.0,
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
