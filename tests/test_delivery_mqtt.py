"""Delivery over MQTT with real mosquitto: convergence, shared subscriptions, broker ACL, the
serve command, status routing."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ajour_build.core.fleet import load_fleet
from delivery.broker import broker_files, write
from delivery.decision import Policy
from delivery.mqtt import (
    MqttSettings,
    MqttTransport,
    TopicTemplate,
)
from delivery.mqtt_simulator import simulate_mqtt
from delivery.protocol import Status, decode_command, encode_status
from delivery.simulator import DeviceResult
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.broker import run_broker
from tests.mqtt_layout import layout_worker
from tests.tcp_faults import slow_uplink
from tests.test_delivery_http import DEVICES
from tests.test_sources import publish


def test_two_hundred_devices_converge_over_mqtt(tmp_path: Path) -> None:
    worker = layout_worker(tmp_path)
    with run_broker(tmp_path / "mqtt") as port:
        transport = MqttTransport(worker, MqttSettings(url=f"mqtt://127.0.0.1:{port}"))
        transport.start()
        try:
            names = [f"dev{i}" for i in range(DEVICES)]
            results = simulate_mqtt(
                f"mqtt://127.0.0.1:{port}", "app", names, b"0.1", 512, timeout=120
            )
        finally:
            transport.stop()
    assert [r.final for r in results] == ["4.0"] * DEVICES
    assert all(r.bytes_received == 8192 for r in results)


def test_a_status_sent_as_soon_as_start_returns_is_answered(tmp_path: Path) -> None:
    """start() returns once the broker has acknowledged the worker's subscription (SUBACK).
    The worker's packets reach the broker 0.5 s late here: had start() returned at the CONNACK,
    with the SUBSCRIBE still on its way, the broker would drop the device's status (nobody
    subscribed yet) and the device would wait for a command that never comes."""
    worker = layout_worker(tmp_path)
    with run_broker(tmp_path / "mqtt") as port, slow_uplink(port, delay=0.5) as slow:
        device = mqtt.Client(CallbackAPIVersion.VERSION2)
        got: queue.Queue[bytes] = queue.Queue()
        subscribed = threading.Event()
        device.on_message = lambda _c, _u, m: got.put(bytes(m.payload))
        device.on_subscribe = lambda *_: subscribed.set()
        device.connect("127.0.0.1", port)
        device.loop_start()
        transport = MqttTransport(worker, MqttSettings(url=f"mqtt://127.0.0.1:{slow}"))
        try:
            device.subscribe("ajour/app/dev1/dfu/cmd", qos=1)
            assert subscribed.wait(5)
            transport.start()
            device.publish("ajour/app/dev1/dfu", encode_status(Status(b"0.1", 512, 1)), qos=1)
            assert decode_command(got.get(timeout=5)).correlation_id == 1
        finally:
            transport.stop()
            device.disconnect()
            device.loop_stop()


def test_two_workers_share_the_load(tmp_path: Path) -> None:
    worker_a = layout_worker(tmp_path)
    worker_b = Worker(worker_a.targets, StatusStore())
    with run_broker(tmp_path / "mqtt") as port:
        url = f"mqtt://127.0.0.1:{port}"
        a = MqttTransport(worker_a, MqttSettings(url=url, group="g1"))
        b = MqttTransport(worker_b, MqttSettings(url=url, group="g1"))
        a.start()
        b.start()
        try:
            names = [f"dev{i}" for i in range(50)]
            results = simulate_mqtt(url, "app", names, b"0.1", 1024, timeout=120)
        finally:
            a.stop()
            b.stop()
    assert all(r.final == "4.0" for r in results)
    handled_a = sum(
        v for k, v in worker_a.counters.snapshot().items() if k in ("write", "swap", "sync", "wait")
    )
    handled_b = sum(
        v for k, v in worker_b.counters.snapshot().items() if k in ("write", "swap", "sync", "wait")
    )
    total = sum(r.steps for r in results)
    assert handled_a + handled_b == total, "each status was answered exactly once"
    assert handled_a > total * 0.1 and handled_b > total * 0.1, (handled_a, handled_b)


def _client(
    port: int, user: str, password: str
) -> tuple[mqtt.Client, queue.Queue[tuple[str, bytes]]]:
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2)
    client.username_pw_set(user, password)
    client.on_message = lambda _c, _u, m: got.put((m.topic, bytes(m.payload)))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, got


def test_broker_acl_confines_each_device(tmp_path: Path) -> None:
    worker = layout_worker(tmp_path)
    files = broker_files(worker.targets.fleet, "ajour-worker", "w0rker-pw")
    passwd, acl = write(files, tmp_path / "broker")
    assert "pw-1" not in passwd.read_text() and files.devices == DEVICES + 1
    status_t = TopicTemplate("ajour/{app}/{device}/dfu")
    cmd_t = TopicTemplate("ajour/{app}/{device}/dfu/cmd")
    with run_broker(tmp_path / "mqtt", passwd, acl) as port:
        transport = MqttTransport(
            worker, MqttSettings(url=f"mqtt://ajour-worker:w0rker-pw@127.0.0.1:{port}")
        )
        transport.start()
        a, got_a = _client(port, "dev1@app", "pw-1")
        b, got_b = _client(port, "dev2@app", "pw-2")
        try:
            a.subscribe(cmd_t.format("app", "dev1"), qos=1)
            a.subscribe(cmd_t.format("app", "dev2"), qos=1)  # B's commands: the ACL says no
            b.subscribe(cmd_t.format("app", "dev2"), qos=1)
            time.sleep(0.3)
            a.publish(status_t.format("app", "dev1"), encode_status(Status(b"0.1", 512, 1)), qos=1)
            topic, payload = got_a.get(timeout=5)
            assert topic == cmd_t.format("app", "dev1")
            assert decode_command(payload).correlation_id == 1
            # A reports as B: the broker drops it, so B gets no command and the worker saw nothing
            a.publish(status_t.format("app", "dev2"), encode_status(Status(b"0.1", 512, 2)), qos=1)
            b.publish(status_t.format("app", "dev2"), encode_status(Status(b"0.1", 512, 3)), qos=1)
            topic, payload = got_b.get(timeout=5)
            assert decode_command(payload).correlation_id == 3
            time.sleep(0.5)
            assert got_a.empty(), "A must not read B's commands"
            assert got_b.empty(), "B got a command for a status it never sent"
            assert worker.store is not None and worker.store.get("app", "dev2") is not None
            bad, _ = _client(port, "dev3@app", "wrong")
            time.sleep(0.3)
            assert not bad.is_connected()
            bad.loop_stop()
        finally:
            for client in (a, b):
                client.disconnect()
                client.loop_stop()
            transport.stop()


def test_serve_command_with_both_transports(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    from tests.registry import free_port

    layout_worker(tmp_path)  # writes the fleet and publishes 4.0 to the layout dir
    port = free_port()
    with run_broker(tmp_path / "mqtt") as mqtt_port:
        cli = [sys.executable, "-m", "delivery.cli"]
        proc = subprocess.Popen(
            [
                *cli,
                "serve",
                "--fleet",
                str(tmp_path / "fleet"),
                "--http",
                f"127.0.0.1:{port}",
                "--mqtt",
                f"mqtt://127.0.0.1:{mqtt_port}",
                "--registry",
                f"oci-layout://{tmp_path / 'oci'}",
                "--insecure-no-auth",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 20
            ready = ""
            while "devices in the fleet" not in ready and time.monotonic() < deadline:
                line = proc.stderr.readline() if proc.stderr else ""
                ready += line
                if not line and proc.poll() is not None:
                    break
            assert "serving HTTP" in ready and "serving MQTT as $share/ajour/" in ready, ready
            for flag, url in (
                ("--http", f"http://127.0.0.1:{port}"),
                ("--mqtt", f"mqtt://127.0.0.1:{mqtt_port}"),
            ):
                sim = subprocess.run(
                    [
                        *cli,
                        "simulate",
                        flag,
                        url,
                        "--app",
                        "app",
                        "--devices",
                        "5",
                        "--start-version",
                        "0.1",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert sim.returncode == 0, sim.stderr
                assert "5 devices on 4.0" in sim.stdout
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
        assert proc.returncode == 0


class _Recorder:
    """Stands in for the paho client's ``publish`` in the unit test below (the broker
    tests above exercise the real one)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, int]] = []

    def publish(self, topic: str, payload: bytes, qos: int = 0) -> None:
        self.sent.append((topic, payload, qos))


def test_status_topics_are_routed_once_and_foreign_ones_never_answered(tmp_path: Path) -> None:
    worker = layout_worker(tmp_path)
    transport = MqttTransport(worker, MqttSettings(url="mqtt://127.0.0.1:1", qos=1))
    client = _Recorder()
    status = encode_status(Status(b"1.0", None, None, None))
    name = "dev0"

    def deliver(topic: str) -> None:
        message = mqtt.MQTTMessage(topic=topic.encode())
        message.payload = status
        transport._on_message(client, None, message)  # type: ignore[arg-type]

    for _ in range(3):
        deliver(f"ajour/app/{name}/dfu")
    for foreign in ("ajour/app/+/dfu", "ajour/app//dfu", "ajour/app/x/y/dfu", "other/app/d/dfu"):
        deliver(foreign)
    assert [t for t, _, _ in client.sent] == [f"ajour/app/{name}/dfu/cmd"] * 3
    assert {q for _, _, q in client.sent} == {1}
    assert decode_command(client.sent[0][1]) == decode_command(client.sent[2][1])
    assert worker.counters.snapshot()["foreign_topic"] == 4
    info = transport._route.cache_info()  # type: ignore[attr-defined]
    assert (info.hits, info.misses, info.maxsize) == (2, 5, 65536)


def test_devices_keep_polling_until_they_run_the_new_version(tmp_path: Path) -> None:
    """``until``: devices in sync with the old version poll on (after the Sync's poll,
    capped by ``wait_cap``), pick up a version published while they poll, and end on it."""
    layout_worker(tmp_path, b"o" * 3000, "1.0")  # the fleet, and 1.0 published
    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"),
        StatusStore(),
        Policy(poll_synced=1),
    )
    names = [f"dev{i}" for i in range(20)]
    with run_broker(tmp_path / "mqtt") as port:
        transport = MqttTransport(worker, MqttSettings(url=f"mqtt://127.0.0.1:{port}"))
        transport.start()
        try:
            results: list[DeviceResult] = []
            run = threading.Thread(
                target=lambda: results.extend(
                    simulate_mqtt(
                        f"mqtt://127.0.0.1:{port}",
                        "app",
                        names,
                        b"1.0",
                        512,
                        timeout=60,
                        wait_cap=0.2,
                        until=b"1.1",
                    )
                )
            )
            run.start()
            time.sleep(1.0)  # every device is in sync with 1.0 and polling
            assert run.is_alive() and not results
            publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "1.1",
                    b"n" * 3000)  # fmt: skip
            worker.targets.invalidate()  # what the publish event does
            run.join(30)
        finally:
            transport.stop()
    assert [(r.final, r.synced, r.error) for r in results] == [("1.1", True, "")] * 20
    assert all(r.bytes_received == 3000 for r in results)
    # polls of 1.0 (each answered Sync), then 6 Writes, the Swap and the Sync of 1.1
    assert all(r.steps > 8 for r in results), [r.steps for r in results]
