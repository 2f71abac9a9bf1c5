"""Delivery over MQTT with TLS to a real mosquitto (certificates made by the test)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from delivery.errors import DeliveryError
from delivery.mqtt import (
    MqttSettings,
    MqttTls,
    MqttTransport,
    parse_broker_url,
)
from delivery.mqtt_simulator import simulate_mqtt
from tests.broker import run_broker
from tests.mqtt_layout import layout_worker
from tests.tls import make_pki

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
