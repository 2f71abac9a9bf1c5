"""Rollouts in the worker: outcomes from statuses, the store, versions, restarts.

Real OCI layouts; the store's tests run on a SQLite file and on a real PostgreSQL database
(the ``rollout_db`` fixture, tests/postgres.py); a test clock for the deadlines.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ajour_build.core.fleet import load_fleet
from ajour_build.core.rollout.model import DeviceRecord, Outcome, RolloutError, State
from delivery.device import SimulatedDevice
from delivery.protocol import (
    Status,
    Swap,
    Sync,
    UpdateStatus,
    Wait,
    Write,
    decode_command,
    encode_status,
)
from delivery.rollout_store import SqliteRolloutStore
from delivery.rollouts import Rollouts
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.clock import Clock
from tests.postgres import RolloutDb
from tests.test_sources import publish

IMAGE_ONE, IMAGE_TWO = b"\x01" * 1024, b"\x02" * 1024


def fleet(rollout: str, devices: str = "") -> str:
    return (
        "kind: Application\nmetadata: {name: app}\n"
        "spec:\n  firmware: {container: {image: fw/app:latest}}\n"
        f"  rollout: {rollout}\n"
        "---\nkind: Application\nmetadata: {name: plain}\n"
        "spec: {firmware: {container: {image: fw/app:latest}}}\n"
        "---\nmetadata: {name: p1, application: plain}\n"
        + "".join(f"---\nmetadata: {{name: d{i}, application: app}}\n" for i in range(4))
        + devices
    )


ONE_WAVE = "{waves: [{percent: 100, dwell: 1h}], confirmDeadline: 10s, stallDeadline: 5s}"


class Setup:
    def __init__(
        self, tmp: Path, rollout: str = ONE_WAVE, devices: str = "", db: RolloutDb | None = None
    ) -> None:
        self.tmp = tmp
        self.db = db or RolloutDb(str(tmp / "rollouts.db"))  # SQLite, or a PostgreSQL DSN
        (tmp / "fleet").mkdir(exist_ok=True)
        (tmp / "fleet" / "f.yaml").write_text(fleet(rollout, devices))
        self.url = f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest"
        self.registry = f"oci-layout://{tmp / 'oci'}"
        self.clock = Clock(5_000.0)
        publish(tmp, self.url, "1.0", IMAGE_ONE)

    def worker(self) -> Worker:
        targets = Targets(load_fleet([self.tmp / "fleet"]), self.registry, ttl=60)
        store = self.db.open()
        return Worker(targets, StatusStore(), rollouts=Rollouts(store, clock=self.clock))

    def publish_two(self, *workers: Worker) -> None:
        publish(self.tmp, self.url, "1.1", IMAGE_TWO)
        for worker in workers:
            worker.targets.invalidate()
        self.clock.now += 1  # past the refresh interval


def ask(worker: Worker, device: SimulatedDevice, name: str = "d0", app: str = "app") -> object:
    reply = worker.handle(app, name, encode_status(device.status()))
    assert reply is not None
    command = decode_command(reply)
    device.apply(command)
    return command


def until(worker: Worker, device: SimulatedDevice, kind: type, name: str = "d0") -> None:
    for _ in range(50):
        if isinstance(ask(worker, device, name), kind):
            return
    raise AssertionError(f"no {kind.__name__}")


def outcome(worker: Worker, name: str = "d0") -> Outcome | None:
    assert worker.rollouts is not None
    rollout = worker.rollouts.store.latest("app")
    assert rollout is not None
    record = worker.rollouts.store.last("app", rollout.seq, name)
    return record.outcome if record else None


def test_confirmed_and_the_baseline(tmp_path: Path, rollout_db: RolloutDb) -> None:
    s = Setup(tmp_path, db=rollout_db)
    worker = s.worker()
    device = SimulatedDevice(b"0.9")
    until(worker, device, Sync)  # the baseline (first version seen) goes to everyone
    assert device.version == b"1.0" and outcome(worker) is None
    s.publish_two(worker)
    until(worker, device, Swap)
    assert outcome(worker) is Outcome.SWAPPED
    assert isinstance(ask(worker, device), Sync) and device.version == b"1.1"
    assert outcome(worker) is Outcome.CONFIRMED
    # an application without spec.rollout behaves as before: the newest version at once
    plain = SimulatedDevice(b"1.0")
    for _ in range(10):
        if isinstance(ask(worker, plain, "p1", "plain"), Sync):
            break
    assert plain.version == b"1.1"


def test_reverted_device_is_not_offered_the_version_again_until_retried(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    s = Setup(tmp_path, db=rollout_db)
    worker = s.worker()
    device = SimulatedDevice(b"1.0", revert=True)
    ask(worker, device)
    s.publish_two(worker)
    until(worker, device, Swap)
    assert device.version == b"1.0"  # its bootloader rolled back
    command = ask(worker, device)
    assert isinstance(command, Sync) and command.version == b"1.0"
    assert outcome(worker) is Outcome.REVERTED
    for _ in range(5):  # no re-download loop
        assert isinstance(ask(worker, device), Sync)
    assert device.bytes_received == len(IMAGE_TWO)
    row = worker.store.get("app", "d0") if worker.store else None
    assert row is not None and (row.state, row.current, row.target) == ("Synced", "1.0", "1.0")
    assert row.detail == "rollout 2: reverted with 1.1; stays on 1.0 until retried"
    assert worker.rollouts is not None
    worker.rollouts.retry("app", "d0")
    device.revert = False
    assert isinstance(ask(worker, device), Write)
    until(worker, device, Sync)
    assert device.version == b"1.1" and outcome(worker) is Outcome.CONFIRMED


def test_another_worker_sees_the_swap_before_it_refreshes(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    """Worker A sends the Swap; the reverted device's next status reaches worker B, which
    followed the log before the swap: B looks the device up instead of starting again."""
    s = Setup(tmp_path, db=rollout_db)
    a, b = s.worker(), s.worker()
    device = SimulatedDevice(b"1.0", revert=True)
    ask(a, device)
    s.publish_two(a, b)
    ask(b, SimulatedDevice(b"1.0"), "d1")  # B follows the new rollout now
    until(a, device, Swap)
    command = ask(b, device)
    assert isinstance(command, Sync) and command.version == b"1.0"
    assert outcome(b) is Outcome.REVERTED


def test_failed_download_by_repeated_swap_and_by_stall(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    s = Setup(tmp_path, db=rollout_db)
    worker = s.worker()
    ask(worker, SimulatedDevice(b"1.0"))
    s.publish_two(worker)
    # a device that reports its finished download again and again: its swaps fail
    finished = UpdateStatus(b"1.1", len(IMAGE_TWO))
    kinds = []
    for _ in range(4):
        status = encode_status(Status(b"1.0", 512, None, finished))
        reply = worker.handle("app", "d1", status)
        assert reply is not None
        kinds.append(type(decode_command(reply)).__name__)
    assert kinds == ["Swap", "Swap", "Swap", "Sync"]
    assert outcome(worker, "d1") is Outcome.FAILED_DOWNLOAD
    # a device stuck at one offset past the stall deadline (5 s)
    stuck = encode_status(Status(b"1.0", 512, None, UpdateStatus(b"1.1", 512)))
    assert isinstance(decode_command(worker.handle("app", "d2", stuck) or b""), Write)
    s.clock.now += 6
    assert isinstance(decode_command(worker.handle("app", "d2", stuck) or b""), Write)
    assert outcome(worker, "d2") is Outcome.FAILED_DOWNLOAD
    command = decode_command(worker.handle("app", "d2", stuck) or b"")
    assert isinstance(command, Sync) and command.version == b"1.0"  # stays on its version


def test_timed_out_is_counted_lazily(tmp_path: Path, rollout_db: RolloutDb) -> None:
    s = Setup(tmp_path, db=rollout_db)
    worker = s.worker()
    device = SimulatedDevice(b"1.0", vanish=True)
    ask(worker, device)
    s.publish_two(worker)
    until(worker, device, Swap)
    assert worker.rollouts is not None
    assert worker.rollouts.counts("app")[0].of("timed_out") == 0
    s.clock.now += 10
    counts = worker.rollouts.counts("app")[0]
    assert counts.of("timed_out") == 1 and counts.of("failed") == 1


def test_criteria_pause_with_min_finished_and_manual_approval(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    policy = (
        "{waves: [{selector: {matchLabels: {canary: 'true'}}, dwell: 1s},"
        " {percent: 100, approval: manual}],"
        " criteria: [{outcome: failed, threshold: 0.5, minFinished: 2}]}"
    )
    labelled = "".join(
        f"---\nmetadata: {{name: c{i}, application: app, labels: {{canary: 'true'}}}}\n"
        for i in range(3)
    )
    s = Setup(tmp_path, policy, labelled, db=rollout_db)
    worker = s.worker()
    devices = {n: SimulatedDevice(b"1.0", revert=n == "c0") for n in ("c0", "c1", "c2", "d0")}
    for name, device in devices.items():
        ask(worker, device, name)
    s.publish_two(worker)
    assert worker.rollouts is not None
    until(worker, devices["c0"], Swap, "c0")
    ask(worker, devices["c0"], "c0")  # reverted: 1 of 1 finished, under minFinished 2
    s.clock.now += 1
    ask(worker, devices["d0"], "d0")
    current = worker.rollouts.current("app")
    assert current is not None and current.state is State.RUNNING
    until(worker, devices["c1"], Sync, "c1")  # confirmed: 1 of 2 failed, 50 %
    s.clock.now += 1
    ask(worker, devices["d0"], "d0")
    current = worker.rollouts.current("app")
    assert current is not None and current.state is State.PAUSED
    assert current.reason == (
        "wave 1: 1 of 2 finished devices failed (50%) >= threshold 50% with min_finished 2"
    )
    worker.rollouts.resume("app")
    s.clock.now += 2
    ask(worker, devices["d0"], "d0")
    current = worker.rollouts.current("app")
    assert current is not None and current.state is State.RUNNING
    assert current.wave == 0, "the next wave needs manual approval"
    assert devices["d0"].version == b"1.0" and devices["d0"].bytes_received == 0
    promoted = worker.rollouts.promote("app")
    assert promoted.wave == 1
    until(worker, devices["d0"], Sync, "d0")
    assert devices["d0"].version == b"1.1"
    with pytest.raises(RolloutError, match="cannot resume rollout 2 of 'app': it is completed"):
        worker.rollouts.resume("app")


def test_rollouts_survive_a_restart_and_are_immutable_in_sequence(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    s = Setup(tmp_path, db=rollout_db)
    worker = s.worker()
    ask(worker, SimulatedDevice(b"1.0"))
    s.publish_two(worker)
    ask(worker, SimulatedDevice(b"1.0"), "d1")
    assert worker.rollouts is not None
    worker.rollouts.pause("app")
    worker.rollouts.store.close()
    again = s.worker()
    assert again.rollouts is not None
    current = again.rollouts.current("app")
    assert current is not None and (current.seq, current.state) == (2, State.PAUSED)
    publish(tmp_path, s.url, "1.2", b"\x03" * 100)  # a newer version supersedes it
    again.targets.invalidate()
    s.clock.now += 1
    ask(again, SimulatedDevice(b"1.0"), "d2")
    history = [
        (r.seq, r.from_version, r.to_version, r.state) for r in again.rollouts.store.history("app")
    ]
    assert history == [
        (1, "", "1.0", State.COMPLETED),
        (2, "1.0", "1.1", State.SUPERSEDED),
        (3, "1.0", "1.2", State.RUNNING),
    ]
    # only transitions were written
    assert [again.rollouts.store.records("app", seq) for seq in (1, 2, 3)] == [[], [], []]


def test_a_stale_revision_is_not_saved(tmp_path: Path, rollout_db: RolloutDb) -> None:
    s = Setup(tmp_path, db=rollout_db)
    worker = s.worker()
    ask(worker, SimulatedDevice(b"1.0"))
    s.publish_two(worker)
    ask(worker, SimulatedDevice(b"1.0"), "d1")
    store = rollout_db.open()
    current = store.latest("app")
    assert current is not None
    from ajour_build.core.rollout import model

    assert store.save(model.pause(current))
    assert not store.save(model.abort(current)), "derived from a revision already replaced"
    latest = store.latest("app")
    assert latest is not None and latest.state is State.PAUSED


def test_simulate_with_a_fail_rate_and_fleet_names_over_http(tmp_path: Path) -> None:
    """``ajour-delivery simulate --fleet --fail-rate``: the reverting devices it picks are
    the ones the worker records as reverted, over real HTTP."""
    from click.testing import CliRunner

    from delivery.cli import main
    from delivery.http import HttpSettings
    from delivery.simulator import Failures
    from tests.http_wire import serving

    s = Setup(tmp_path)
    worker = s.worker()
    http = HttpSettings(port=0, authenticate=False)
    names = ["d0", "d1", "d2", "d3"]
    with serving(worker, http) as transport:
        for name in names:  # the baseline
            ask(worker, SimulatedDevice(b"1.0"), name)
        s.publish_two(worker)
        fleet_dir = str(tmp_path / "fleet")
        args = ["simulate", "--http", transport.url, "--app", "app", "--start-version", "1.0",
                "--fleet", fleet_dir, "--fail-rate", "0.5", "--seed", "3"]  # fmt: skip
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    failing = Failures.share(names, 0.5, "revert", 3).devices
    assert 0 < len(failing) < len(names)
    assert f"{len(failing)} devices fail after a swap (revert)" in result.output
    assert f"{len(names) - len(failing)} devices on 1.1" in result.output
    assert {n for n in names if outcome(worker, n) is Outcome.REVERTED} == failing


class CountingStore(SqliteRolloutStore):
    """The real store, counting the per-device lookups."""

    lookups = 0

    def last(self, application: str, seq: int, device: str) -> DeviceRecord | None:
        self.lookups += 1
        return super().last(application, seq, device)


def test_a_device_starting_over_costs_one_lookup_per_refresh_interval(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    worker = s.worker()
    store = CountingStore(tmp_path / "counted.db")
    worker.rollouts = Rollouts(store, clock=s.clock)
    ask(worker, SimulatedDevice(b"1.0"))
    s.publish_two(worker)
    start = encode_status(SimulatedDevice(b"1.0").status())
    for _ in range(20):  # answered from the reply memo after the first
        assert isinstance(decode_command(worker.handle("app", "d0", start) or b""), Write)
    assert store.lookups == 1
    s.clock.now += 0.6
    worker.handle("app", "d0", start)
    assert store.lookups == 2


def test_the_previous_version_comes_from_its_tag_in_a_registry(tmp_path: Path) -> None:
    """A device outside the open waves updates to from_version, read from the registry by
    its version tag while the moving tag already names the new version."""
    from tests.registry import run_registry

    (tmp_path / "fleet").mkdir()
    policy = (
        "{waves: [{selector: {matchLabels: {canary: 'true'}}}, {percent: 100, approval: manual}]}"
    )
    (tmp_path / "fleet" / "f.yaml").write_text(fleet(policy))
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/ajour/fw/app:latest"
        publish(tmp_path, url, "1.0", IMAGE_ONE)
        targets = Targets(load_fleet([tmp_path / "fleet"]), f"{registry.host}/ajour", ttl=60)
        clock = Clock(5_000.0)
        worker = Worker(
            targets, StatusStore(), rollouts=Rollouts(SqliteRolloutStore(), clock=clock)
        )
        ask(worker, SimulatedDevice(b"1.0"))  # the baseline
        publish(tmp_path, url, "1.1", IMAGE_TWO)
        worker.targets.invalidate()
        clock.now += 1
        old = SimulatedDevice(b"0.9")  # behind: it is brought to 1.0, not 1.1
        until(worker, old, Sync, "d1")
        assert old.version == b"1.0" and old.bytes_received == len(IMAGE_ONE)
        plain = SimulatedDevice(b"1.0")  # no rollout: the newest at once
        for _ in range(10):
            if isinstance(ask(worker, plain, "p1", "plain"), Sync):
                break
        assert plain.version == b"1.1"


def test_a_locked_database_means_wait_never_a_crash(tmp_path: Path) -> None:
    s = Setup(tmp_path)
    targets = Targets(load_fleet([tmp_path / "fleet"]), s.registry, ttl=60)
    store = SqliteRolloutStore(tmp_path / "rollouts.db", timeout=0.1)
    worker = Worker(targets, StatusStore(), rollouts=Rollouts(store, clock=s.clock))
    device = SimulatedDevice(b"1.0")
    ask(worker, device)
    s.publish_two(worker)
    holder = sqlite3.connect(tmp_path / "rollouts.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        command = ask(worker, device)  # the new rollout cannot be written
        assert isinstance(command, Wait)
        row = worker.store.get("app", "d0") if worker.store else None
        assert row is not None and row.state == "Failed"
        assert "database is locked" in row.detail and "rollouts.db" in row.detail
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert isinstance(ask(worker, device), Write)
