"""Delivery over MQTT in Drogue mode (CloudEvents) with real mosquitto: the application check
and the rate-limited refusal log."""

from __future__ import annotations

import base64
import json
import logging
import queue
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from ajour_build.core.fleet import load_fleet
from delivery.mqtt import (
    MqttSettings,
    MqttTransport,
    RateLimitedLog,
)
from delivery.protocol import Status, decode_command, encode_status
from delivery.targets import Targets
from tests.broker import run_broker
from tests.mqtt_layout import layout_worker


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
