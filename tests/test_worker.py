"""The worker core: real codec, real registry, simulated devices, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ajour_build.core.fleet import load_fleet
from delivery.device import SimulatedDevice
from delivery.protocol import Status, UpdateStatus, Wait, decode_command, encode_status
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.registry import free_port, run_registry
from tests.test_sources import publish

FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
""" + "".join(f"---\nmetadata: {{name: dev{i}, application: app}}\n" for i in range(20))


def make_worker(tmp_path: Path, registry: str) -> Worker:
    (tmp_path / "fleet").mkdir(exist_ok=True)
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    targets = Targets(load_fleet([tmp_path / "fleet"]), registry, ttl=60)
    return Worker(targets, StatusStore())


def converge(worker: Worker, device: SimulatedDevice, name: str, limit: int = 10_000) -> int:
    for step in range(limit):
        reply = worker.handle("app", name, encode_status(device.status()))
        assert reply is not None
        device.apply(decode_command(reply))
        if device.synced:
            return step
    raise AssertionError("device did not converge")


def test_devices_converge_and_pick_up_a_new_publish(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/ajour/fw/app:latest"
        image_one = bytes(range(256)) * 40  # 10 KiB
        publish(tmp_path, url, "1.0", image_one)
        worker = make_worker(tmp_path, f"{registry.host}/ajour")
        devices = [SimulatedDevice(b"0.9", mtu=[0, 64, 512, 2**32 - 1][i % 4]) for i in range(20)]
        for i, device in enumerate(devices):
            converge(worker, device, f"dev{i}")
            assert device.version == b"1.0" and device.swaps_rejected == 0
        row = worker.store.get("app", "dev3") if worker.store else None
        assert row is not None and (row.state, row.current, row.target) == ("Synced", "1.0", "1.0")

        publish(tmp_path, url, "1.1", image_one[::-1])
        assert worker.targets.invalidate(f"{registry.host}/ajour/fw/app", "latest") == 1
        for i, device in enumerate(devices):
            converge(worker, device, f"dev{i}")
            assert device.version == b"1.1"
        counts = worker.counters.snapshot()
        assert counts["swap"] == 40 and counts.get("rejected", 0) == 0


def test_bad_input_never_stops_the_worker(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        publish(tmp_path, f"oci://{registry.host}/ajour/fw/app:latest", "2.0", b"\xaa" * 5000)
        worker = make_worker(tmp_path, f"{registry.host}/ajour")
        good = encode_status(Status(b"1.0", 512))
        bad_inputs = [
            b"\xff\x00garbled",
            json.dumps({"version": "1.0"}).encode(),
            bytes.fromhex("a1011902"),  # truncated
            encode_status(Status(b"1.0", 512))[:-1],
            b"\xa1\x01\x19\x02\x00",  # no version
            b"\x00" * 5000,  # over 4 KiB
        ]
        for payload in bad_inputs:
            assert worker.handle("app", "dev0", payload) is None
        assert worker.counters.snapshot()["rejected"] == len(bad_inputs)
        assert worker.handle("app", "stranger", good) is None
        assert worker.counters.snapshot()["unknown_device"] == 1
        # mtu 0 and 2^32-1 are clamped; an offset past the end and an unknown update
        # version restart at 0
        for status in (
            Status(b"1.0", 0),
            Status(b"1.0", 2**32 - 1),
            Status(b"1.0", 512, 7, UpdateStatus(b"2.0", 99_999)),
            Status(b"1.0", 512, 8, UpdateStatus(b"9.9", 100)),
        ):
            reply = worker.handle("app", "dev1", encode_status(status))
            assert reply is not None
            command = decode_command(reply)
            assert getattr(command, "offset", None) == 0
            assert command.correlation_id == status.correlation_id
        for _ in range(10_000):  # a flood from one device id: answered, nothing breaks
            assert worker.handle("app", "dev2", good) is not None
        device = SimulatedDevice(b"1.0")
        converge(worker, device, "dev3")
        assert device.version == b"2.0"


def test_registry_down_means_wait_and_a_failed_state(tmp_path: Path) -> None:
    worker = make_worker(tmp_path, f"127.0.0.1:{free_port()}/ajour")
    reply = worker.handle("app", "dev0", encode_status(Status(b"1.0", 512, 42)))
    assert reply is not None
    command = decode_command(reply)
    assert isinstance(command, Wait) and command.correlation_id == 42 and command.poll == 30
    row = worker.store.get("app", "dev0") if worker.store else None
    assert row is not None and row.state == "Failed" and "unreachable" in row.detail


def test_corrupted_blob_is_not_served(tmp_path: Path) -> None:

    with run_registry(tmp_path / "registry") as registry:
        content = b"\x5a" * 3000
        publish(tmp_path, f"oci://{registry.host}/ajour/fw/app:latest", "3.0", content)
        blob = registry.blob_file(content)
        blob.write_bytes(b"\x5b" + content[1:])
        worker = make_worker(tmp_path, f"{registry.host}/ajour")
        reply = worker.handle("app", "dev0", encode_status(Status(b"1.0", 512)))
        assert reply is not None and isinstance(decode_command(reply), Wait)


@pytest.mark.parametrize("mtu", [None, 1, 100, 512, 4096])
def test_write_sizes_respect_mtu(tmp_path: Path, mtu: int | None) -> None:
    from ajour_build.core.artifact.layout_store import LayoutStore

    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "1", b"q" * 3000)
    assert LayoutStore(tmp_path / "oci" / "fw" / "app").tags() == ["1", "latest"]
    worker = make_worker(tmp_path, f"oci-layout://{tmp_path / 'oci'}")
    device = SimulatedDevice(b"0", mtu=mtu)
    steps = converge(worker, device, "dev0")
    eff = {None: 512, 1: 16}.get(mtu, mtu)
    assert eff is not None and steps == -(-3000 // eff) + 1 and device.version == b"1"


def test_poll_intervals_per_application(tmp_path: Path) -> None:
    from delivery.decision import Policy
    from delivery.errors import DeliveryError
    from delivery.protocol import Sync
    from delivery.serve_settings import poll_policies

    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "5", b"p" * 10)
    worker = make_worker(tmp_path, f"oci-layout://{tmp_path / 'oci'}")
    default, per_app = poll_policies(300, 30, ("app=60:5",))
    assert per_app == {"app": Policy(poll_synced=60, poll_wait=5)}
    worker.policy, worker.policies = default, per_app
    reply = worker.handle("app", "dev0", encode_status(Status(b"5", 512)))
    assert reply is not None
    command = decode_command(reply)
    assert isinstance(command, Sync) and command.poll == 60
    with pytest.raises(DeliveryError, match="APP=SYNCED"):
        poll_policies(300, 30, ("app=soon",))


def test_simulated_device_retries_a_failed_exchange(tmp_path: Path) -> None:
    from delivery.errors import DeliveryError
    from delivery.simulator import run_device

    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "6", b"r" * 100)
    worker = make_worker(tmp_path, f"oci-layout://{tmp_path / 'oci'}")
    failures = {"left": 2}

    def flaky(status: bytes) -> bytes:
        if failures["left"]:
            failures["left"] -= 1
            raise DeliveryError("HTTP 503")
        reply = worker.handle("app", "dev0", status)
        assert reply is not None
        return reply

    result = run_device("app", "dev0", SimulatedDevice(b"1"), flaky)
    assert result.synced and result.final == "6" and failures["left"] == 0

    def down(status: bytes) -> bytes:
        raise DeliveryError("HTTP 503")

    gave_up = run_device("app", "dev1", SimulatedDevice(b"1"), down, retries=3)
    assert not gave_up.synced and gave_up.error == "HTTP 503" and gave_up.steps == 0


def test_status_lists_devices_never_seen_as_unknown(tmp_path: Path) -> None:
    publish(tmp_path, f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest", "1", b"u" * 10)
    worker = make_worker(tmp_path, f"oci-layout://{tmp_path / 'oci'}")
    worker.handle("app", "dev1", encode_status(Status(b"1", 512)))
    rows = {r.device: r for r in worker.statuses("app")}
    assert len(rows) == 20
    assert rows["dev1"].state == "Synced" and rows["dev0"].state == "Unknown"
    assert rows["dev0"].detail == "no status received yet"
    assert worker.statuses("other") == []
