"""``ajour-delivery simulate`` as an engineer runs it: the fleet's own device names and
passwords, refusals that end a device at once with the worker's or broker's reason, a
bounded run, a worker or broker that is not there, and one MQTT connection per device under
the users and ACL that ``broker-config`` writes (real mosquitto, real worker)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from click.testing import CliRunner, Result

from delivery.broker import broker_files, write
from delivery.cli import main
from delivery.mqtt import MqttSettings, MqttTransport
from delivery.worker import Worker
from tests.broker import run_broker
from tests.http_wire import serving, settings, small_worker
from tests.registry import free_port


def simulate(*args: str) -> tuple[Result, float]:
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["simulate", "--app", "app", "--start-version", "0.1", *args])
    return result, time.perf_counter() - start


def test_http_devices_of_the_fleet_log_in_with_their_own_passwords(tmp_path: Path) -> None:
    worker = small_worker(tmp_path)  # dev0..dev3, passwords pw-0..pw-3
    fleet = str(tmp_path / "fleet")
    with serving(worker, settings()) as transport:
        everyone, _ = simulate("--http", transport.url, "--fleet", fleet)
        named, _ = simulate("--http", transport.url, "--fleet", fleet, "--device", "dev2")
        stranger, _ = simulate("--http", transport.url, "--fleet", fleet, "--device", "dev9")
    assert everyone.exit_code == 0, everyone.output
    assert "4 devices on 1.0" in everyone.output
    assert named.exit_code == 0 and "1 devices on 1.0" in named.output, named.output
    assert stranger.exit_code == 1
    assert "--device dev9: not a device of 'app' in the fleet" in stranger.output
    assert "dev0, dev1, dev2, dev3" in stranger.output


def test_http_refusals_end_each_device_at_once_with_the_reason_as_text(tmp_path: Path) -> None:
    worker = small_worker(tmp_path)
    with serving(worker, settings()) as transport:
        refused, seconds = simulate(
            "--http", transport.url, "--device", "dev1", "--device", "ghost", "--password", "pw-1"
        )
    assert refused.exit_code == 1 and seconds < 5, (seconds, refused.output)
    assert "dev1" not in refused.stderr.replace("ghost", "")  # dev1 synced
    (line,) = [x for x in refused.stderr.splitlines() if x.startswith("ghost:")]
    assert line.startswith("ghost: not synced: HTTP 401: ")
    assert "b'" not in line and 'b"' not in line and "\\n" not in line
    assert "check --password" in line and "error: 1 of 2 devices did not sync" in refused.stderr
    open_worker = small_worker(tmp_path / "open")
    with serving(open_worker, settings(authenticate=False)) as transport:
        unknown, seconds = simulate("--http", transport.url, "--device", "ghost")
    assert unknown.exit_code == 1 and seconds < 5
    (line,) = [x for x in unknown.stderr.splitlines() if x.startswith("ghost:")]
    assert line.startswith("ghost: not synced: HTTP 404: unknown device"), line
    assert "b'" not in line and "ajour-delivery targets --fleet" in line


def test_a_worker_or_broker_that_is_not_there_is_one_error(tmp_path: Path) -> None:
    port = free_port()
    http, _ = simulate("--http", f"http://127.0.0.1:{port}", "--devices", "3")
    assert http.exit_code == 1 and "Traceback" not in http.output
    assert http.stderr.strip() == (
        f"error: cannot reach the delivery worker at http://127.0.0.1:{port}: Connection"
        " refused; is `ajour-delivery serve --http HOST:PORT` running there? check --http"
    )
    mqtt, _ = simulate("--mqtt", f"mqtt://127.0.0.1:{port}")
    assert mqtt.exit_code == 1 and "Traceback" not in mqtt.output
    assert mqtt.stderr.strip() == (
        f"error: cannot reach the MQTT broker at mqtt://127.0.0.1:{port}: Connection refused;"
        " is the broker running and listening there? start it, or fix the host and port of --mqtt"
    )


@contextmanager
def acl_broker(tmp_path: Path) -> Iterator[tuple[int, Worker]]:
    """mosquitto with broker-config's password file and ACL, and a worker logged in to it."""
    worker = small_worker(tmp_path)
    files = broker_files(worker.targets.fleet, "ajour-worker", "w0rker-pw")
    passwd, acl = write(files, tmp_path / "broker")
    with run_broker(tmp_path / "mqtt", passwd, acl) as port:
        url = f"mqtt://ajour-worker:w0rker-pw@127.0.0.1:{port}"
        transport = MqttTransport(worker, MqttSettings(url=url))
        transport.start()
        try:
            yield port, worker
        finally:
            transport.stop()


def test_mqtt_one_connection_per_device_under_broker_configs_acl(tmp_path: Path) -> None:
    fleet = str(tmp_path / "fleet")
    with acl_broker(tmp_path) as (port, worker):
        url = f"mqtt://127.0.0.1:{port}"
        each, _ = simulate("--mqtt", url, "--mqtt-connection", "device", "--fleet", fleet)
        wrong, wrong_s = simulate(
            "--mqtt", url, "--mqtt-connection", "device", "--device", "dev1", "--password", "nope"
        )
        # the gateway way, as the worker's user: the ACL drops its device statuses
        gateway, gateway_s = simulate(
            "--mqtt", f"mqtt://ajour-worker:w0rker-pw@127.0.0.1:{port}", "--device", "dev2",
            "--timeout", "3",
        )  # fmt: skip
        refused, refused_s = simulate("--mqtt", f"mqtt://ajour-worker:nope@127.0.0.1:{port}")
    assert each.exit_code == 0, each.output
    assert "4 devices on 1.0" in each.output
    assert {r.device: r.current for r in worker.statuses("app")} == dict.fromkeys(
        ["dev0", "dev1", "dev2", "dev3"], "1.0"
    )
    assert wrong.exit_code == 1 and wrong_s < 5, (wrong_s, wrong.output)
    (line,) = [x for x in wrong.stderr.splitlines() if x.startswith("dev1:")]
    assert "the MQTT broker refused dev1@app: Not authorized" in line, line
    assert "password file that broker-config wrote" in line
    assert gateway.exit_code == 1 and gateway_s < 8, (gateway_s, gateway.output)
    (line,) = [x for x in gateway.stderr.splitlines() if x.startswith("dev2:")]
    assert re.search(r"no answer within [23] s to its status on ajour/app/dev2/dfu", line), line
    assert "use --mqtt-connection device" in line
    assert refused.exit_code == 1 and refused_s < 5, (refused_s, refused.output)
    assert "refused the gateway connection as 'ajour-worker': Not authorized" in refused.stderr


def test_mqtt_an_unknown_device_fails_within_the_timeout_not_in_silence(tmp_path: Path) -> None:
    worker = small_worker(tmp_path)
    with run_broker(tmp_path / "mqtt") as port:
        url = f"mqtt://127.0.0.1:{port}"
        transport = MqttTransport(worker, MqttSettings(url=url))
        transport.start()
        try:
            result, seconds = simulate(
                "--mqtt", url, "--device", "dev0", "--device", "ghost", "--timeout", "2"
            )
        finally:
            transport.stop()
    assert result.exit_code == 1 and seconds < 6, (seconds, result.output)
    assert "1 devices on 1.0" in result.output and "1 devices on 0.1" in result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("ghost:")]
    assert re.search(r"no answer within [12] s", line) and "is ghost a device of app" in line


def test_an_http_device_outlives_the_servers_keep_alive_timeout(tmp_path: Path) -> None:
    """A device polls less often than the worker keeps an idle connection open: the worker
    closes it, and the device's next status goes out on a new connection instead of failing
    with a broken pipe (a status is idempotent; a refusal is never sent twice)."""
    from delivery.device import SimulatedDevice
    from delivery.errors import DeliveryError
    from delivery.http_exchange import Limits
    from delivery.protocol import decode_command, encode_status
    from delivery.simulator import HttpDeviceLink

    worker = small_worker(tmp_path)
    limits = Limits(keep_alive_timeout=0.2)
    with serving(worker, settings(limits=limits)) as transport:
        link = HttpDeviceLink(transport.url, "app", "dev0", "pw-0")
        device = SimulatedDevice(version=b"0.1")
        try:
            first = decode_command(link(encode_status(device.status())))
            connections = transport.stats()["connections"]  # accepted so far
            deadline = time.monotonic() + 10  # until the worker closed the idle connection
            while transport.stats()["connections_open"] and time.monotonic() < deadline:
                time.sleep(0.05)
            assert transport.stats()["timeout_keep_alive"] == 1
            again = decode_command(link(encode_status(device.status())))
            assert again == first  # the same status, the same reply
            assert transport.stats()["connections"] == connections + 1
        finally:
            link.close()
        wrong = HttpDeviceLink(transport.url, "app", "dev0", "not-pw-0")
        try:
            wrong(encode_status(device.status()))
            raise AssertionError("a wrong password was answered")
        except DeliveryError as exc:
            assert "HTTP 401" in str(exc)
        finally:
            wrong.close()
