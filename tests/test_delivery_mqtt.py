"""Delivery over MQTT with real mosquitto: convergence, shared subscriptions, broker ACL, TLS
(certificates made by the test), and Drogue mode's application check."""

from __future__ import annotations

import base64
import json
import logging
import queue
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ajour_build.core.fleet import load_fleet
from delivery.broker import broker_files, write
from delivery.decision import Policy
from delivery.errors import DeliveryError
from delivery.mqtt import (
    MqttSettings,
    MqttTls,
    MqttTransport,
    RateLimitedLog,
    TopicTemplate,
    parse_broker_url,
)
from delivery.mqtt_simulator import simulate_mqtt
from delivery.protocol import Status, decode_command, encode_status
from delivery.simulator import DeviceResult
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.broker import run_broker
from tests.tcp_faults import slow_uplink
from tests.test_delivery_http import DEVICES, fleet_yaml
from tests.test_sources import publish
from tests.tls import make_pki


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
            deadline = time.monotonic() + 10  # the worker counts it when it comes
            while worker.counters.snapshot().get("foreign_event", 0) < 1:
                assert time.monotonic() < deadline, "the telemetry event never reached the worker"
                time.sleep(0.02)
            assert worker.counters.snapshot()["foreign_event"] == 1
        finally:
            endpoint.disconnect()
            endpoint.loop_stop()
            transport.stop()


def drogue_event(app: str, device: str, status: Status) -> str:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": "1",
            "source": f"drogue://{app}/{device}",
            "type": "io.drogue.event.v1",
            "subject": "dfu",
            "application": app,
            "device": device,
            "datacontenttype": "application/cbor",
            "data_base64": base64.b64encode(encode_status(status)).decode(),
        }
    )


def test_drogue_mode_refuses_events_that_claim_another_application(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CloudEvent on app/app claiming application 'other' is never answered for 'other'."""
    worker = layout_worker(tmp_path)
    (tmp_path / "fleet" / "other.yaml").write_text(  # 'other' exists, with a device dev5 too
        "kind: Application\nmetadata: {name: other}\n"
        "spec: {firmware: {container: {image: fw/app:latest}}}\n"
        "---\nmetadata: {name: dev5, application: other}\n"
    )
    worker.targets = Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}")
    assert worker.targets.knows("other", "dev5")
    with run_broker(tmp_path / "mqtt") as port:
        transport = MqttTransport(
            worker,
            MqttSettings(url=f"mqtt://127.0.0.1:{port}", mode="drogue", applications=("app",)),
        )
        transport.start()
        endpoint = mqtt.Client(CallbackAPIVersion.VERSION2)
        got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        endpoint.on_message = lambda _c, _u, m: got.put((m.topic, bytes(m.payload)))
        endpoint.connect("127.0.0.1", port)
        endpoint.subscribe("command/#", qos=1)
        endpoint.loop_start()
        try:
            time.sleep(0.3)
            with caplog.at_level(logging.INFO, logger="delivery"):
                for i in range(200):  # a flood from a device of 'app' speaking for 'other'
                    event = drogue_event("other", "dev5", Status(b"0.1", 512, i))
                    endpoint.publish("app/app", event, qos=1)
                endpoint.publish("app/app", drogue_event("app", "dev5/x", Status(b"0.1")), qos=1)
                endpoint.publish(
                    "app/app", drogue_event("app", "dev5", Status(b"0.1", 512, 7)), qos=1
                )
                topic, payload = got.get(timeout=10)  # the worker keeps serving 'app'
            assert topic == "command/app/dev5/dfu"
            assert decode_command(payload).correlation_id == 7
            time.sleep(0.3)
            assert got.empty(), "nothing was answered for 'other'"
        finally:
            endpoint.disconnect()
            endpoint.loop_stop()
            transport.stop()
    counters = worker.counters.snapshot()
    assert counters["application_mismatch"] == 200
    assert counters["foreign_event"] == 1, "a device name that is not one topic level"
    assert worker.store is not None and worker.store.get("other", "dev5") is None
    refusals = [r for r in caplog.records if "claims application" in r.getMessage()]
    assert len(refusals) == 1, "one line, not one per message"
    assert "on topic 'app/app': it claims application 'other'" in refusals[0].getMessage()
    assert refusals[0].levelno == logging.WARNING


def test_refusal_log_is_rate_limited_and_counts_what_it_held_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    limited = RateLimitedLog(logging.getLogger("delivery.mqtt"), 60, lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="delivery.mqtt"):
        for _ in range(5):
            limited.warning("refused %s", "x")
        now[0] = 59.9
        limited.warning("refused %s", "x")
        now[0] = 60.0
        limited.warning("refused %s", "y")
    assert [r.getMessage() for r in caplog.records] == [
        "refused x",
        "refused y (and 5 more like it since the last such line, not logged)",
    ]


# -- TLS to the broker --------------------------------------------------------------------------


def tls_listener(cert: Path, key: Path, ca: Path, require_certificate: bool = False) -> str:
    text = f"cafile {ca}\ncertfile {cert}\nkeyfile {key}\n"
    return text + ("require_certificate true\n" if require_certificate else "")


def test_worker_and_devices_over_mqtts_with_a_verified_broker(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    worker = layout_worker(tmp_path)
    listener = tls_listener(pki.server_cert, pki.server_key, pki.ca)
    with run_broker(tmp_path / "mqtt", listener=listener) as port:
        tls = MqttTls(ca_file=pki.ca)
        transport = MqttTransport(worker, MqttSettings(url=f"mqtts://localhost:{port}", tls=tls))
        transport.start()
        try:
            names = [f"dev{i}" for i in range(10)]
            results = simulate_mqtt(
                f"mqtts://127.0.0.1:{port}", "app", names, b"0.1", 1024, tls=tls, timeout=60
            )
        finally:
            transport.stop()
    assert [r.final for r in results] == ["4.0"] * 10


def test_mqtts_verifies_the_ca_and_the_host_name(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    worker = layout_worker(tmp_path)
    other_cert, other_key = pki.issue("other", "DNS:broker.example.com")
    with run_broker(tmp_path / "named", listener=tls_listener(other_cert, other_key, pki.ca)) as p:
        wrong_name = MqttTransport(
            worker, MqttSettings(url=f"mqtts://127.0.0.1:{p}", tls=MqttTls(pki.ca))
        )
        with pytest.raises(DeliveryError, match="failed TLS verification") as caught:
            wrong_name.start(timeout=3)
        assert "IP address mismatch" in str(caught.value) or "mismatch" in str(caught.value)
        assert "names '127.0.0.1'" in str(caught.value)
    listener = tls_listener(pki.server_cert, pki.server_key, pki.ca)
    with run_broker(tmp_path / "mqtt", listener=listener) as port:
        system_cas = MqttTransport(worker, MqttSettings(url=f"mqtts://localhost:{port}"))
        with pytest.raises(DeliveryError, match=r"failed TLS verification: .*certificate"):
            system_cas.start(timeout=3)  # the test CA is not one of the system's
        plain = MqttTransport(worker, MqttSettings(url=f"mqtt://127.0.0.1:{port}"))
        with pytest.raises(DeliveryError, match=r"if it is a TLS listener, use mqtts://"):
            plain.start(timeout=2)
    with pytest.raises(DeliveryError, match=r"need an mqtts:// broker URL; got mqtt://h:1883"):
        MqttTransport(worker, MqttSettings(url="mqtt://h", tls=MqttTls(pki.ca)))


def test_mqtts_client_certificate(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    worker = layout_worker(tmp_path)
    listener = tls_listener(pki.server_cert, pki.server_key, pki.ca, require_certificate=True)
    with run_broker(tmp_path / "mqtt", listener=listener) as port:
        url = f"mqtts://localhost:{port}"
        anonymous = MqttTransport(worker, MqttSettings(url=url, tls=MqttTls(pki.ca)))
        with pytest.raises(DeliveryError, match="client certificate"):
            anonymous.start(timeout=3)
        tls = MqttTls(pki.ca, pki.client_cert, pki.client_key)
        transport = MqttTransport(worker, MqttSettings(url=url, tls=tls))
        transport.start()
        try:
            results = simulate_mqtt(url, "app", ["dev1"], b"0.1", 2048, tls=tls, timeout=60)
        finally:
            transport.stop()
    assert results[0].final == "4.0"


def test_mqtt_tls_files_are_checked_with_precise_errors(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    with pytest.raises(
        DeliveryError, match=r"cannot use the CA file '.*missing\.pem' \(--mqtt-ca\)"
    ):
        MqttTls(tmp_path / "missing.pem").context()
    with pytest.raises(DeliveryError, match="cannot use the CA file"):
        MqttTls(pki.client_key).context()  # a key, not a certificate
    with pytest.raises(DeliveryError, match=r"needs --mqtt-cert too"):
        MqttTls(pki.ca, key_file=pki.client_key).context()
    with pytest.raises(DeliveryError, match=r"cannot use the client certificate .* matching"):
        MqttTls(pki.ca, pki.client_cert, pki.server_key).context()
    with pytest.raises(DeliveryError, match=r"expected mqtt://\[user:password@\]host\[:port\]"):
        parse_broker_url("tcp://broker:1883")
    broker = parse_broker_url("mqtts://w%40rk:s3cr3t@broker.example.com")
    assert (broker.host, broker.port, broker.username, broker.tls) == (
        "broker.example.com",
        8883,
        "w@rk",
        True,
    )
    assert "s3cr3t" not in repr(broker)


def test_serve_and_simulate_commands_over_mqtts(tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys

    pki = make_pki(tmp_path / "pki")
    layout_worker(tmp_path)
    listener = tls_listener(pki.server_cert, pki.server_key, pki.ca, require_certificate=True)
    with run_broker(tmp_path / "mqtt", listener=listener) as port:
        cli = [sys.executable, "-m", "delivery.cli"]
        tls = ["--mqtt-ca", str(pki.ca), "--mqtt-cert", str(pki.client_cert)]
        tls += ["--mqtt-key", str(pki.client_key)]
        url = f"mqtts://localhost:{port}"
        proc = subprocess.Popen(
            [
                *cli,
                "serve",
                "--fleet",
                str(tmp_path / "fleet"),
                "--mqtt",
                url,
                *tls,
                "--registry",
                f"oci-layout://{tmp_path / 'oci'}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline, ready = time.monotonic() + 20, ""
            while "devices in the fleet" not in ready and time.monotonic() < deadline:
                line = proc.stderr.readline() if proc.stderr else ""
                ready += line
                if not line and proc.poll() is not None:
                    break
            assert "serving MQTT as $share/ajour/" in ready, ready
            sim = subprocess.run(
                [
                    *cli,
                    "simulate",
                    "--mqtt",
                    url,
                    *tls,
                    "--app",
                    "app",
                    "--devices",
                    "3",
                    "--start-version",
                    "0.1",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert sim.returncode == 0, sim.stderr
            assert "3 devices on 4.0" in sim.stdout
            bad = subprocess.run(
                [*cli, "simulate", "--mqtt", url, "--app", "app"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert bad.returncode == 1 and "error: the MQTT broker at" in bad.stderr, bad.stderr
            assert "failed TLS verification" in bad.stderr and "Traceback" not in bad.stderr
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
