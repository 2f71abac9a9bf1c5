"""Delivery over HTTP, end to end: registry → worker → 200 simulated devices, and bad input."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from ajour_build.core.fleet import load_fleet
from delivery.cli import main
from delivery.http import HttpSettings, HttpTransport
from delivery.protocol import Status, decode_command, encode_status
from delivery.simulator import simulate_http
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.http_wire import EVENTS_TOKEN, STATUS_TOKEN
from tests.registry import Registry, run_registry
from tests.test_sources import publish

DEVICES = 200


def fleet_yaml() -> str:
    docs = [
        "kind: Application\nmetadata: {name: app}\n"
        "spec: {firmware: {container: {image: fw/app:latest}}}\n"
    ]
    for i in range(DEVICES):
        docs.append(
            f"metadata: {{name: dev{i}, application: app}}\n"
            f"spec: {{credentials: {{credentials: [{{pass: pw-{i}}}]}}}}\n"
        )
    docs.append(
        "metadata: {name: userdev, application: app}\n"
        "spec: {credentials: {credentials: [{user: {username: alice, password: wonder}}]}}\n"
    )
    return "---\n".join(docs)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Registry, HttpTransport, Path]]:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_yaml())
    with run_registry(tmp_path / "registry") as registry:
        worker = Worker(
            Targets(load_fleet([tmp_path / "fleet"]), f"{registry.host}/ajour", ttl=600),
            StatusStore(tmp_path / "status.db"),
        )
        tokens = HttpSettings(port=0, status_token=STATUS_TOKEN, events_token=EVENTS_TOKEN)
        transport = HttpTransport(worker, tokens)
        transport.start()
        try:
            yield registry, transport, tmp_path
        finally:
            transport.stop()


def post(url: str, body: bytes, auth: str | None = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/cbor"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        data = exc.read()
        exc.close()
        return exc.code, data


def test_two_hundred_devices_update_over_http_and_follow_a_new_publish(
    served: tuple[Registry, HttpTransport, Path],
) -> None:
    registry, transport, tmp = served
    url = f"oci://{registry.host}/ajour/fw/app:latest"
    publish(tmp, url, "1.0", bytes(range(256)) * 64)  # 16 KiB
    names = [f"dev{i}" for i in range(DEVICES)]
    results = simulate_http(
        transport.url, "app", names, b"0.1", 512, lambda name: f"pw-{name[3:]}"
    )  # each device its own password
    assert [r.final for r in results] == ["1.0"] * DEVICES
    assert all(r.synced and not r.error and r.swaps_rejected == 0 for r in results)

    publish(tmp, url, "1.1", bytes(range(255, -1, -1)) * 64)
    event = json.dumps(
        {"image": f"{registry.host}/ajour/fw/app", "tag": "latest", "digest": "x", "version": "1.1"}
    ).encode()
    req = urllib.request.Request(
        f"{transport.url}/v1/events",
        data=event,
        method="POST",
        headers={"Authorization": f"Bearer {EVENTS_TOKEN}"},
    )
    with urllib.request.urlopen(req) as resp:
        assert json.loads(resp.read()) == {"invalidated": 1}
    again = simulate_http(transport.url, "app", ["dev0"], b"1.0", 512, "pw-0")
    assert again[0].final == "1.1"

    status = urllib.request.Request(
        f"{transport.url}/v1/status/app/dev0", headers={"Authorization": f"Bearer {STATUS_TOKEN}"}
    )
    with urllib.request.urlopen(status) as resp:
        (row,) = json.loads(resp.read())
    assert (row["state"], row["current"], row["target"]) == ("Synced", "1.1", "1.1")


def test_many_devices_concurrently_without_auth(tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_yaml())
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "2.0", b"z" * 8192)
    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"), StatusStore()
    )
    transport = HttpTransport(worker, HttpSettings(port=0, authenticate=False))
    transport.start()
    try:
        names = [f"dev{i}" for i in range(DEVICES)]
        results = simulate_http(transport.url, "app", names, b"0.1", 256, None, concurrency=32)
        assert [r.final for r in results] == ["2.0"] * DEVICES
        assert all(r.bytes_received == 8192 and r.steps == 8192 // 256 + 2 for r in results)
        store = worker.store
        assert store is not None
        assert {r.state for r in store.devices("app")} == {"Synced"}
    finally:
        transport.stop()


def test_http_authentication_and_bad_requests(served: tuple[Registry, HttpTransport, Path]) -> None:
    registry, transport, tmp = served
    publish(tmp, f"oci://{registry.host}/ajour/fw/app:latest", "1.0", b"x" * 100)
    status = encode_status(Status(b"0.1", 512, 5))
    dfu = f"{transport.url}/v1/dfu?application=app&device=dev7&ct=30"
    assert post(dfu, status)[0] == 401
    assert post(dfu, status, "dev7@app:wrong")[0] == 401
    code, body = post(dfu, status, "dev7@app:pw-7")
    assert code == 200 and decode_command(body).correlation_id == 5
    by_user = post(f"{transport.url}/v1/dfu", status, "dev7@app:pw-7")
    assert by_user[0] == 200, "the device may be named by its basic-auth username"
    assert (
        post(f"{transport.url}/v1/dfu?application=app&device=userdev", status, "alice:wonder")[0]
        == 200
    )
    assert (
        post(f"{transport.url}/v1/dfu?application=app&device=userdev", status, "mallory:wonder")[0]
        == 401
    )
    # an unknown device gets the same answer as a wrong password (no enumeration)
    assert post(f"{transport.url}/v1/dfu?application=app&device=ghost", status, "x:y")[0] == 401
    code, body = post(dfu, b"\xffgarbage", "dev7@app:pw-7")
    assert code == 400 and b"not a valid embedded-update CBOR Status" in body
    assert post(dfu, b"\x00" * 5000, "dev7@app:pw-7")[0] == 413
    assert post(f"{transport.url}/v1/dfu", status)[0] == 400


def test_status_cli_reads_the_worker(tmp_path: Path) -> None:
    """``ajour-delivery status`` reads a loopback --insecure-no-auth worker without a token
    (with one: tests/test_delivery_status_token.py)."""
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_yaml())
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "1.0", b"x" * 600)
    worker = Worker(
        Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{tmp_path / 'oci'}"), StatusStore()
    )
    transport = HttpTransport(worker, HttpSettings(port=0, authenticate=False))
    transport.start()
    try:
        post(
            f"{transport.url}/v1/dfu?application=app&device=dev3",
            encode_status(Status(b"0.1", 256)),
        )
        result = CliRunner().invoke(main, ["status", "--url", transport.url])
        assert result.exit_code == 0, result.output
        (row,) = [line for line in result.output.splitlines() if line.startswith("app/dev3 ")]
        assert row.split()[:5] == ["app/dev3", "Updating", "0.1", "1.0", "0/600"]
    finally:
        transport.stop()


def test_simulate_cli_authenticates_with_the_password(
    served: tuple[Registry, HttpTransport, Path],
) -> None:
    registry, transport, tmp = served
    publish(tmp, f"oci://{registry.host}/ajour/fw/app:latest", "1.0", b"x" * 600)
    args = ["simulate", "--http", transport.url, "--app", "app", "--devices", "1"]
    sim = CliRunner().invoke(main, [*args, "--prefix", "dev", "--password", "pw-0"])
    assert sim.exit_code == 0 and "1 devices on 1.0" in sim.output
    wrong = CliRunner().invoke(main, [*args, "--prefix", "dev", "--password", "pw-1"])
    assert wrong.exit_code == 1 and "HTTP 401" in wrong.output


def test_registry_notification_reaches_the_worker(tmp_path: Path) -> None:
    """A push by any client: the registry's own notification, authenticated with the header
    distribution sends (``notifications.endpoints[].headers``), invalidates the tag at once."""
    import time

    from tests.registry import free_port

    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(fleet_yaml())
    port = free_port()
    worker_url = f"http://127.0.0.1:{port}"
    with run_registry(
        tmp_path / "registry",
        also_notify=f"{worker_url}/v1/events",
        notify_headers={"Authorization": f"Bearer {EVENTS_TOKEN}"},
    ) as registry:
        url = f"oci://{registry.host}/ajour/fw/app:latest"
        publish(tmp_path, url, "1.0", b"a" * 500)
        worker = Worker(
            Targets(load_fleet([tmp_path / "fleet"]), f"{registry.host}/ajour", ttl=3600),
            StatusStore(),
        )
        settings = HttpSettings(port=port, events_token=EVENTS_TOKEN, status_token=STATUS_TOKEN)
        transport = HttpTransport(worker, settings)
        transport.start()
        try:
            assert simulate_http(worker_url, "app", ["dev0"], b"0", 512, "pw-0")[0].final == "1.0"
            publish(tmp_path, url, "1.1", b"b" * 500)  # no --notify: only the registry tells
            # any notification moving the 'events' counter is not enough: the pulls above, and
            # the 1.0 pushes retried from before the worker listened, are notified too; with
            # a TTL of an hour, 1.1 within 15 s is the push's notification
            deadline = time.monotonic() + 15
            while simulate_http(worker_url, "app", ["dev0"], b"1.0", 512, "pw-0")[0].final != "1.1":
                assert time.monotonic() < deadline, "the registry never notified the worker"
                time.sleep(0.05)
            assert worker.counters.snapshot().get("unauthorized", 0) == 0
        finally:
            transport.stop()
