"""The worker's Prometheus metrics: counted on the hot path, exposed from a snapshot."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from delivery.device import SimulatedDevice
from delivery.metrics import render
from delivery.protocol import decode_command, encode_status
from delivery.worker import Worker
from tests.registry import run_registry
from tests.test_sources import publish
from tests.test_worker import make_worker


def scrape(worker: Worker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = render(worker.metrics).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_follow_what_devices_did(tmp_path: Path) -> None:
    with run_registry(tmp_path / "registry") as registry:
        image = bytes(range(256)) * 8  # 2 KiB: 4 writes of 512 bytes, then a swap
        publish(tmp_path, f"oci://{registry.host}/ajour/fw/app:latest", "1.0", image)
        worker = make_worker(tmp_path, f"{registry.host}/ajour")
        device = SimulatedDevice(b"0.9", mtu=512)
        while not device.synced:
            reply = worker.handle("app", "dev0", encode_status(device.status()))
            assert reply is not None
            device.apply(decode_command(reply))
        assert worker.handle("app", "dev1", b"\xff garbage") is None
        assert worker.handle("app", "nobody", encode_status(device.status())) is None
        got = scrape(worker)
    p = "ajour_delivery_"
    assert got[(p + "commands_total", (("type", "write"),))] == 4
    assert got[(p + "commands_total", (("type", "swap"),))] == 1
    assert got[(p + "commands_total", (("type", "sync"),))] == 1
    assert got[(p + "statuses_total", (("outcome", "answered"),))] == 6
    assert got[(p + "statuses_total", (("outcome", "rejected"),))] == 1
    assert got[(p + "statuses_total", (("outcome", "unknown_device"),))] == 1
    assert got[(p + "bytes_served_total", ())] == len(image)
    assert got[(p + "handle_seconds_count", ())] == 8
    assert got[(p + "handle_seconds_bucket", (("le", "+Inf"),))] == 8
    # dev0 is synced; the other 19 of the fleet's 20 devices were never (validly) seen
    assert got[(p + "devices", (("state", "Synced"),))] == 1
    assert got[(p + "devices", (("state", "Unknown"),))] == 19
    assert got[(p + "devices", (("state", "Updating"),))] == 0


def test_each_worker_has_its_own_registry(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = make_worker(tmp_path / "a", "127.0.0.1:1/ajour")
    second = make_worker(tmp_path / "b", "127.0.0.1:1/ajour")
    first.counters.add("write", 3)
    assert scrape(first)[("ajour_delivery_commands_total", (("type", "write"),))] == 3
    assert scrape(second)[("ajour_delivery_commands_total", (("type", "write"),))] == 0


def test_rollout_state_follows_the_current_rollout(tmp_path: Path) -> None:
    from delivery.protocol import Swap
    from tests.test_rollouts import Setup, ask, until

    s = Setup(tmp_path)
    worker = s.worker()
    device = SimulatedDevice(b"1.0")
    ask(worker, device)
    s.publish_two(worker)
    until(worker, device, Swap)  # rollout 2 (1.0 → 1.1) is running

    def state(name: str) -> float:
        return scrape(worker)[
            ("ajour_delivery_rollout_state", (("application", "app"), ("state", name)))
        ]

    assert (state("running"), state("paused")) == (1, 0)
    assert worker.rollouts is not None
    worker.rollouts.pause("app", "looks wrong")
    assert (state("running"), state("paused"), state("aborted")) == (0, 1, 0)
    worker.rollouts.abort("app")
    assert (state("paused"), state("aborted")) == (0, 1)
