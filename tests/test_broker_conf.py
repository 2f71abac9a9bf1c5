"""``broker-config``'s ``mosquitto.conf``: the real mosquitto runs on it alone, with the
password file and ACL, a shared subscription, persistence, and a worker queue sized for the
fleet (mosquitto's default of 1,000 queued messages per client drops the rest)."""

from __future__ import annotations

import os
import pwd
import queue
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from click.testing import CliRunner, Result
from paho.mqtt.enums import CallbackAPIVersion

from delivery.broker_conf import BrokerConf, queued_messages, render
from delivery.cli import main
from tests.broker import start_mosquitto
from tests.registry import free_port
from tests.test_broker_config import fleet_text
from tests.tls import make_pki

SHARED = "$share/ajour/ajour/+/+/dfu"


@pytest.fixture
def out_root() -> Iterator[Path]:
    """A directory that mosquitto's user may enter (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="ajour-broker-conf-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _as_broker() -> list[str]:
    """As root, mosquitto switches to its own user: hand it the files (``--owner``)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("running as root, and no mosquitto user to run the broker as")
    return ["--owner", "mosquitto"]


def broker_config(fleet: Path, out: Path, *args: str) -> Result:
    return CliRunner().invoke(
        main,
        ["broker-config", "--fleet", str(fleet), "--out", str(out), *_as_broker(), *args],
        env={"AJOUR_MQTT_WORKER_PASSWORD": "w0rker"},
    )


class Client:
    """A paho client logged in as ``user``; its messages go to a queue, ``hold`` stops them."""

    def __init__(
        self, port: int, user: str, password: str | None, tls: tuple[str, ...] = ()
    ) -> None:
        self.got: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.hold = threading.Event()
        self.hold.set()
        codes: queue.Queue[int] = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}")
        self.client.max_inflight_messages_set(0)
        if password is not None:
            self.client.username_pw_set(user, password)
        self.client.on_connect = lambda c, u, f, rc, p: codes.put(rc.value)
        self.client.on_message = self._message
        if tls:  # CA, and a client certificate and its key
            self.client.tls_set(tls[0], *(tls[1:] or (None, None)))
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        try:
            self.code = codes.get(timeout=5)
        except queue.Empty:  # no CONNACK: the broker closed the connection (a TLS refusal)
            self.code = -1

    def _message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        self.hold.wait(30)  # until then, nothing is acknowledged: the broker queues the rest
        self.got.put((msg.topic, bytes(msg.payload)))

    def subscribe(self, topic: str) -> None:
        done = threading.Event()
        self.client.on_subscribe = lambda c, u, mid, codes, p: done.set()
        self.client.subscribe(topic, qos=1)
        assert done.wait(5)

    def received(self, wait: float) -> list[tuple[str, bytes]]:
        out: list[tuple[str, bytes]] = []
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.got.get(timeout=left))
            except queue.Empty:
                break
        return out

    def close(self) -> None:
        self.hold.set()
        self.client.disconnect()
        self.client.loop_stop()


def login(port: int, user: str, password: str | None, tls: tuple[str, ...] = ()) -> int:
    """The broker's answer to a login as ``user`` (0: accepted, -1: the connection was
    refused or closed without one); the client is closed."""
    try:
        client = Client(port, user, password, tls)
    except OSError:  # a TLS handshake that failed, or plain MQTT on a TLS port
        return -1
    client.close()
    return client.code


def test_mosquitto_runs_on_the_generated_conf_alone(out_root: Path, tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_text())
    out, port = out_root / "broker", free_port()
    result = broker_config(tmp_path / "fleet", out, "--port", str(port), "--bind", "127.0.0.1")
    assert result.exit_code == 0, result.output
    conf = (out / "mosquitto.conf").read_text()
    assert f"config {out / 'mosquitto.conf'}" in result.output
    assert f"password_file {out / 'passwd'}\nacl_file {out / 'acl'}\n" in conf
    assert f"listener {port} 127.0.0.1\nallow_anonymous false\n" in conf
    assert "w0rker" not in conf and "pw-" not in conf and "$7$" not in conf
    data = out / "data"
    with start_mosquitto(out / "mosquitto.conf", port, tmp_path / "mosquitto.log"):
        assert login(port, "plain@app", "nope") != 0
        assert login(port, "anonymous", None) != 0
        worker = Client(port, "ajour-worker", "w0rker")
        plain, both = Client(port, "plain@app", "pw-plain"), Client(port, "both@app", "pw-both")
        try:
            assert (worker.code, plain.code, both.code) == (0, 0, 0)
            worker.subscribe(SHARED)
            plain.subscribe("ajour/app/plain/dfu/cmd")
            plain.subscribe("ajour/app/both/dfu/cmd")  # B's commands: the ACL keeps them
            plain.client.publish("ajour/app/both/dfu", b"as B", qos=1).wait_for_publish(5)
            plain.client.publish("ajour/app/plain/dfu", b"mine", qos=1).wait_for_publish(5)
            both.client.publish("ajour/app/both/dfu", b"B", qos=1).wait_for_publish(5)
            assert sorted(worker.received(1.0)) == [
                ("ajour/app/both/dfu", b"B"),
                ("ajour/app/plain/dfu", b"mine"),
            ]
            worker.client.publish("ajour/app/both/dfu/cmd", b"for B", qos=1).wait_for_publish(5)
            worker.client.publish("ajour/app/plain/dfu/cmd", b"for A", qos=1).wait_for_publish(5)
            assert plain.received(1.0) == [("ajour/app/plain/dfu/cmd", b"for A")]
            assert both.received(0.2) == []  # it subscribed to nothing
        finally:
            for client in (worker, plain, both):
                client.close()
    # mosquitto saved its database on the way out: the directory is the broker user's
    assert (data / "mosquitto.db").is_file()


def test_a_grown_fleet_is_taken_on_a_reload(out_root: Path, tmp_path: Path) -> None:
    """broker-config again, then SIGHUP: mosquitto reads the new users, ACL and limits."""
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_text())
    out, port = out_root / "broker", free_port()
    args = ("--port", str(port), "--bind", "127.0.0.1")
    assert broker_config(tmp_path / "fleet", out, *args).exit_code == 0
    with start_mosquitto(out / "mosquitto.conf", port, tmp_path / "mosquitto.log") as proc:
        assert login(port, "d0@more", "pw-0") != 0
        _big_fleet(tmp_path / "more", 600, "more")
        result = broker_config(tmp_path / "fleet", out, *args, "--fleet", str(tmp_path / "more"))
        assert result.exit_code == 0, result.output
        assert "\nmax_queued_messages 1212\n" in (out / "mosquitto.conf").read_text()
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while (code := login(port, "d0@more", "pw-0")) != 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert code == 0, "the reloaded password file has the new device"
        assert login(port, "plain@app", "pw-plain") == 0


def test_tls_on_the_listener_with_client_certificates(out_root: Path, tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_text())
    pki = make_pki(out_root / "pki")
    for path in pki.root.iterdir():
        path.chmod(0o644)  # mosquitto may read them as its own user (test files only)
    out, port = out_root / "broker", free_port()
    tls = ["--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key)]
    result = broker_config(
        tmp_path / "fleet", out, "--port", str(port), "--bind", "127.0.0.1", *tls,
        "--tls-client-ca", str(pki.ca),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (
        f"\ncertfile {pki.server_cert}\nkeyfile {pki.server_key}\ncafile {pki.ca}\n"
        "require_certificate true\n"
    ) in (out / "mosquitto.conf").read_text()
    ca, cert, key = str(pki.ca), str(pki.client_cert), str(pki.client_key)
    with start_mosquitto(out / "mosquitto.conf", port, tmp_path / "mosquitto.log"):
        assert login(port, "plain@app", "pw-plain", (ca, cert, key)) == 0
        assert login(port, "plain@app", "nope", (ca, cert, key)) != 0  # and the password
        assert login(port, "plain@app", "pw-plain", (ca,)) == -1  # no client certificate
        assert login(port, "plain@app", "pw-plain") == -1  # plain MQTT on a TLS port
    default = broker_config(tmp_path / "fleet", tmp_path / "other", *tls)
    assert "\nlistener 8883\ncertfile " in (tmp_path / "other" / "mosquitto.conf").read_text()
    assert default.exit_code == 0, default.output
    half = broker_config(tmp_path / "fleet", tmp_path / "half", *tls[:2])
    assert half.exit_code == 1 and not (tmp_path / "half").exists()
    assert "--tls-cert without --tls-key: TLS on the listener needs both" in half.output


def _big_fleet(path: Path, devices: int, name: str = "app") -> Path:
    app = {"kind": "Application", "metadata": {"name": name}}
    app["spec"] = {"firmware": {"container": {"image": "fw/app:latest"}}}
    docs = [app] + [
        {
            "metadata": {"name": f"d{i}", "application": name},
            "spec": {"credentials": {"credentials": [{"pass": f"pw-{i}"}]}},
        }
        for i in range(devices)
    ]
    path.mkdir(parents=True)
    (path / "fleet.yaml").write_text(yaml.safe_dump_all(docs))
    return path


def test_the_worker_queue_holds_two_statuses_of_every_device(
    out_root: Path, tmp_path: Path
) -> None:
    """1,200 devices: 2,400 statuses wait for a worker that does not acknowledge; with
    mosquitto's default (1,000) all but ~1,100 would be dropped."""
    devices = 1200
    fleet = _big_fleet(tmp_path / "fleet", devices)
    out, port = out_root / "broker", free_port()
    result = broker_config(fleet, out, "--port", str(port), "--bind", "127.0.0.1")
    assert result.exit_code == 0, result.output
    assert "\nmax_queued_messages 2400\n" in (out / "mosquitto.conf").read_text()
    with start_mosquitto(out / "mosquitto.conf", port, tmp_path / "mosquitto.log"):
        worker, device = Client(port, "ajour-worker", "w0rker"), Client(port, "d7@app", "pw-7")
        try:
            worker.subscribe(SHARED)
            worker.hold.clear()  # the worker is busy: nothing is acknowledged
            sent = [
                device.client.publish("ajour/app/d7/dfu", str(i).encode(), qos=1)
                for i in range(2 * devices)
            ]
            for info in sent:
                info.wait_for_publish(10)  # the broker has it (queued, or dropped)
            worker.hold.set()
            got = worker.received(3.0)
        finally:
            worker.close()
            device.close()
    assert len(got) == 2 * devices
    assert {p for _, p in got} == {str(i).encode() for i in range(2 * devices)}


def test_limits_and_persistence_can_be_overridden(out_root: Path, tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_text())
    out = out_root / "broker"
    result = broker_config(
        tmp_path / "fleet", out, "--max-queued-messages", "5000", "--max-inflight-messages",
        "1", "--no-persistence", "--port", "8883",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    conf = (out / "mosquitto.conf").read_text()
    assert "\nlistener 8883\n" in conf  # every interface
    assert "\nmax_queued_messages 5000\nmax_inflight_messages 1\npersistence false\n" in conf
    assert "persistence_location" not in conf and not (out / "data").exists()
    data = tmp_path / "state"
    text = render(BrokerConf(persistence_dir=data), 6, out, "mosquitto")
    assert f"\npersistence true\npersistence_location {data}/\n" in text
    assert "\nuser mosquitto\n" in text and "\nmax_inflight_messages 100\n" in text
    assert [queued_messages(n) for n in (0, 499, 500, 501, 10_000)] == [
        1000, 1000, 1000, 1002, 20_000,
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bind", "0.0.0.0\nallow_anonymous true"], "--bind '0.0.0.0\\nallow_anonymous true':"),
        (["--bind", "-x"], "expected an IP address (127.0.0.1, ::1) or a host name"),
        (["--persistence-dir", "/tmp/a\nb"], "mosquitto.conf cannot hold a path with control"),
        (["--port", "0"], "Invalid value for '--port': 0 is not in the range 1<=x<=65535"),
    ],
)
def test_values_that_do_not_fit_in_the_conf_are_refused(
    args: list[str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_text())
    result = broker_config(tmp_path / "fleet", tmp_path / "out", *args)
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "out").exists(), "refused before anything is written"
