"""Delivery over MQTT with real mosquitto: convergence, shared subscriptions, broker ACL."""

from __future__ import annotations

import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ajour_build.core.fleet import load_fleet
from delivery.broker import broker_files, write
from delivery.mqtt import MqttSettings, MqttTransport, TopicTemplate
from delivery.protocol import Status, decode_command, encode_status
from delivery.simulator import simulate_mqtt
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.broker import run_broker
from tests.test_delivery_http import DEVICES, fleet_yaml
from tests.test_sources import publish


def layout_worker(tmp: Path, image: bytes = b"m" * 8192, version: str = "4.0") -> Worker:
    (tmp / "fleet").mkdir(exist_ok=True)
    (tmp / "fleet" / "f.yaml").write_text(fleet_yaml())
    publish(tmp, f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest", version, image)
    return Worker(
        Targets(load_fleet([tmp / "fleet"]), f"oci-layout://{tmp / 'oci'}"), StatusStore()
    )


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


def test_drogue_cloudevents_integration_mode(tmp_path: Path) -> None:
    """Drogue Cloud's integration: CloudEvents on app/<app>, commands on command/…/dfu."""
    import base64
    import json

    from delivery.device import SimulatedDevice

    worker = layout_worker(tmp_path, b"d" * 3000, "8.0")
    with run_broker(tmp_path / "mqtt") as port:
        transport = MqttTransport(
            worker,
            MqttSettings(url=f"mqtt://127.0.0.1:{port}", mode="drogue", applications=("app",)),
        )
        transport.start()
        assert transport.subscriptions == ["$share/ajour/app/app"]
        endpoint = mqtt.Client(CallbackAPIVersion.VERSION2)  # plays Drogue's MQTT endpoint
        got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        endpoint.on_message = lambda _c, _u, m: got.put((m.topic, bytes(m.payload)))
        endpoint.connect("127.0.0.1", port)
        endpoint.subscribe("command/app/+/dfu", qos=1)
        endpoint.loop_start()
        try:
            time.sleep(0.3)
            device = SimulatedDevice(b"0.1", 1024)
            for _ in range(10):
                event = {
                    "specversion": "1.0",
                    "id": "1",
                    "source": "drogue://app/dev5",
                    "type": "io.drogue.event.v1",
                    "subject": "dfu",
                    "application": "app",
                    "device": "dev5",
                    "datacontenttype": "application/cbor",
                    "data_base64": base64.b64encode(encode_status(device.status())).decode(),
                }
                endpoint.publish("app/app", json.dumps(event), qos=1)
                topic, payload = got.get(timeout=5)
                assert topic == "command/app/dev5/dfu"
                device.apply(decode_command(payload))
                if device.synced:
                    break
            assert device.version == b"8.0" and device.synced
            endpoint.publish("app/app", json.dumps({"subject": "telemetry"}), qos=1)
            time.sleep(0.3)
            assert worker.counters.snapshot()["foreign_event"] == 1
        finally:
            endpoint.disconnect()
            endpoint.loop_stop()
            transport.stop()
