"""A staged rollout end to end: 200 simulated devices, a real OCI layout, and the store on
a real SQLite file and on a real PostgreSQL database (the ``rollout_db`` fixture).

The rollout's clock is a test clock in the first test (the waves' dwell and the refresh
interval pass when the test says so, which makes the wave a criterion trips in exact);
the others run on real time with two workers on one database and a restart: two Worker
objects in this process, then two ``ajour-delivery serve`` processes.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ajour_build.core.fleet import load_fleet
from ajour_build.core.rollout.model import Outcome, State
from delivery.device import SimulatedDevice
from delivery.errors import DeliveryError
from delivery.protocol import decode_command, encode_status
from delivery.rollouts import Rollouts
from delivery.simulator import HttpDeviceLink, run_device
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.clock import Clock
from tests.conftest import REPO
from tests.postgres import RolloutDb
from tests.registry import free_port
from tests.test_sources import publish

N = 200
NAMES = [f"dev{i:03d}" for i in range(N)]
REVERTING = {n for i, n in enumerate(NAMES) if i % 10 == 3}  # 10 %
VANISHING = {"dev007", "dev157"}
SHARES = (5, 25, 50, 100)
IMAGE_ONE, IMAGE_TWO = b"\x01" * 1500, b"\x02" * 1500

FLEET = """\
kind: Application
metadata: {name: app}
spec:
  firmware: {container: {image: fw/app:latest}}
  rollout:
    waves: [{percent: 5, dwell: 200ms}, {percent: 25, dwell: 200ms},
            {percent: 50, dwell: 200ms}, {percent: 100, dwell: 200ms}]
    criteria:
      - {outcome: reverted, threshold: 0.1, minFinished: 10}
    confirmDeadline: 5s
""" + "".join(f"---\nmetadata: {{name: {n}, application: app}}\n" for n in NAMES)


def wave_by_hash(name: str) -> int:
    """The test's own reading of the assignment rule: sha256 of <app>/<device> -> bucket."""
    digest = hashlib.sha256(f"app/{name}".encode()).digest()
    share = int.from_bytes(digest[:8], "big") % 10_000
    return next(i for i, p in enumerate(SHARES) if share < p * 100)


def setup(tmp: Path) -> tuple[str, str]:
    (tmp / "fleet").mkdir()
    (tmp / "fleet" / "f.yaml").write_text(FLEET)
    url = f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest"
    publish(tmp, url, "1.0", IMAGE_ONE)
    return url, f"oci-layout://{tmp / 'oci'}"


def make_worker(tmp: Path, registry: str, db: RolloutDb, clock: Clock | None = None) -> Worker:
    targets = Targets(load_fleet([tmp / "fleet"]), registry, ttl=60)
    rollouts = Rollouts(db.open(), clock=clock or time.time)
    return Worker(targets, StatusStore(), rollouts=rollouts)


def drive(worker: Worker, name: str, device: SimulatedDevice, limit: int = 100) -> None:
    """Statuses until the device syncs (or is gone): one device's polls, in order."""
    device.synced = False
    for _ in range(limit):
        if device.vanished:
            return
        reply = worker.handle("app", name, encode_status(device.status()))
        assert reply is not None
        device.apply(decode_command(reply))
        if device.synced:
            return
    raise AssertionError(f"{name} did not settle")


def test_rollout_pauses_at_the_first_wave_whose_criteria_trip(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    url, registry = setup(tmp_path)
    clock = Clock(1_000_000.0)
    worker = make_worker(tmp_path, registry, rollout_db, clock)
    rollouts = worker.rollouts
    assert rollouts is not None
    devices = {
        n: SimulatedDevice(b"1.0", revert=n in REVERTING, vanish=n in VANISHING) for n in NAMES
    }

    def round_(seconds: float = 0.6) -> None:
        clock.now += seconds  # past the dwell (0.2 s) and the refresh interval (0.5 s)
        for name, device in devices.items():
            drive(worker, name, device)

    round_()  # the first version seen is the baseline: everyone syncs on 1.0
    assert [r.state for r in rollouts.store.history("app")] == [State.COMPLETED]
    publish(tmp_path, url, "1.1", IMAGE_TWO)
    worker.targets.invalidate()

    waves = {n: wave_by_hash(n) for n in NAMES}
    expected_trip = None
    for wave in range(len(SHARES)):
        members = [n for n in NAMES if waves[n] == wave and n not in VANISHING]
        bad = sum(n in REVERTING for n in members)
        if len(members) >= 10 and bad >= 0.1 * len(members):
            expected_trip = (wave, bad, len(members))
            break
    assert expected_trip is not None, "the fixture must trip some wave"
    trip_wave, bad, finished = expected_trip

    for _ in range(12):
        round_()
        current = rollouts.store.latest("app")
        assert current is not None
        if current.state is not State.RUNNING:
            break
    assert current is not None
    assert current.seq == 2 and (current.from_version, current.to_version) == ("1.0", "1.1")
    assert current.state is State.PAUSED and current.wave == trip_wave
    assert current.reason == (
        f"wave {trip_wave + 1}: {bad} of {finished} finished devices reverted"
        f" ({bad / finished * 100:.4g}%) >= threshold 10% with min_finished 10"
    )
    # exactly the open waves took the new version; later waves never saw it
    for name, device in devices.items():
        opened = waves[name] <= trip_wave
        updated = opened and name not in REVERTING and name not in VANISHING
        assert device.version == (b"1.1" if updated else b"1.0"), name
        assert device.bytes_received == (len(IMAGE_TWO) if opened else 0), name
    # no re-download loop: reverted devices sync on their version, poll after poll
    round_()
    round_()
    for name in REVERTING:
        assert devices[name].bytes_received <= len(IMAGE_TWO)
        assert devices[name].synced or devices[name].vanished
    counts = rollouts.counts("app")
    assert counts[trip_wave].of("reverted") == bad
    gone = [n for n in VANISHING if waves[n] <= trip_wave]
    assert sum(c.of("timed_out") for c in counts.values()) == 0  # confirm deadline is 5 s
    clock.now += 5
    counts = rollouts.counts("app")
    assert sum(c.of("timed_out") for c in counts.values()) == len(gone)

    # retry: a reverted device whose bootloader now keeps the new version confirms it
    retried = next(n for n in sorted(REVERTING) if waves[n] <= trip_wave)
    devices[retried].revert = False
    rollouts.retry("app", retried)
    drive(worker, retried, devices[retried])
    assert devices[retried].version == b"1.1"
    assert rollouts.counts("app")[waves[retried]].of("confirmed") >= 1

    # resume: the criteria count afresh, the next wave opens after the dwell
    resumed = rollouts.resume("app")
    assert resumed.state is State.RUNNING and resumed.reason == ""
    round_()
    round_()
    current = rollouts.store.latest("app")
    assert current is not None and current.wave > trip_wave

    # abort: devices not updated stay on 1.0; updated ones keep 1.1
    if current.state is State.PAUSED or current.state is State.RUNNING:
        rollouts.abort("app")
    opened_now = current.wave
    round_()
    for name, device in devices.items():
        kept = waves[name] <= opened_now and name not in REVERTING | VANISHING
        assert device.version == (b"1.1" if kept or name == retried else b"1.0"), name
    assert all(devices[n].bytes_received == 0 for n in NAMES if waves[n] > opened_now)

    # rollback: every device is offered 1.0 again
    rolled = rollouts.rollback("app")
    assert rolled.state is State.ROLLED_BACK
    round_()
    assert {d.version for n, d in devices.items() if n not in VANISHING} == {b"1.0"}
    rollouts.store.close()


def test_two_workers_and_a_restart_continue_one_rollout(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    url, registry = setup(tmp_path)
    db = rollout_db
    first, second = make_worker(tmp_path, registry, db), make_worker(tmp_path, registry, db)
    workers = [first, second]
    devices = {n: SimulatedDevice(b"1.0") for n in NAMES}
    for i, name in enumerate(NAMES):  # the baseline, seen by both
        drive(workers[i % 2], name, devices[name])
    publish(tmp_path, url, "1.1", IMAGE_TWO)
    for worker in workers:
        worker.targets.invalidate()

    stop = threading.Event()
    errors: list[BaseException] = []
    rounds = [0] * 4  # statuses sent by each thread to all its devices so far

    def poll(index: int, names: list[str]) -> None:
        """Devices that keep polling, each status to one worker or the other."""
        step = 0
        try:
            while not stop.is_set():
                for name in names:
                    device = devices[name]
                    reply = workers[step % len(workers)].handle(
                        "app", name, encode_status(device.status())
                    )
                    step += 1
                    assert reply is not None
                    device.apply(decode_command(reply))
                rounds[index] += 1
                time.sleep(0.02)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=poll, args=(i, NAMES[i::4])) for i in range(4)]
    for thread in threads:
        thread.start()
    try:
        seen_wave = -1
        restarted = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            current = first.rollouts.store.latest("app") if first.rollouts else None
            assert current is not None
            seen_wave = max(seen_wave, current.wave if current.seq == 2 else -1)
            if not restarted and seen_wave >= 1:  # restart one worker mid-rollout
                stopped, workers[1] = workers[1], make_worker(tmp_path, registry, db)
                rounds_ended(rounds, list(rounds), errors)  # its statuses in flight are answered
                assert stopped.rollouts is not None
                stopped.rollouts.store.close()  # gone, with what it held in memory
                restarted = True
            if current.seq == 2 and current.state is State.COMPLETED and confirmed(first):
                break  # the last wave's devices have also reported after their swap
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert not errors, errors
    history = first.rollouts.store.history("app") if first.rollouts else []
    assert [(r.seq, r.from_version, r.to_version, r.state) for r in history] == [
        (1, "", "1.0", State.COMPLETED),
        (2, "1.0", "1.1", State.COMPLETED),
    ]
    assert restarted
    assert {d.version for d in devices.values()} == {b"1.1"}
    assert first.rollouts is not None
    counts = first.rollouts.counts("app")
    assert sum(c.of("confirmed") for c in counts.values()) == N
    assert sum(c.of("failed") for c in counts.values()) == 0


def rounds_ended(rounds: list[int], before: list[int], errors: list[BaseException]) -> None:
    """Wait (10 s at most) until every polling thread has ended the round it was in when
    ``before`` was taken, so the statuses it had in flight are answered, or one failed."""
    deadline = time.monotonic() + 10
    while not errors and any(now <= then for now, then in zip(rounds, before, strict=True)):
        assert time.monotonic() < deadline, f"the polling threads stopped: {rounds}"
        time.sleep(0.01)


def confirmed(worker: Worker) -> bool:
    """Whether every device's outcome is confirmed (the rollout completes when the last
    wave's dwell passed, which may be before its devices' next status)."""
    assert worker.rollouts is not None
    return sum(c.of("confirmed") for c in worker.rollouts.counts("app").values()) == N


SERVED_FLEET = """\
kind: Application
metadata: {name: app}
spec:
  firmware: {container: {image: fw/app:latest}}
  rollout:
    waves: [{percent: 10, dwell: 300ms}, {percent: 50, dwell: 300ms}, {percent: 100}]
""" + "".join(f"---\nmetadata: {{name: s{i:02d}, application: app}}\n" for i in range(40))


class Balanced:
    """One device's link to whichever worker of ``urls`` answers, alternating (as behind a
    load balancer that skips a worker that is starting or stopping)."""

    def __init__(self, urls: list[str], name: str) -> None:
        self.urls, self.name, self.turn = urls, name, 0

    def __call__(self, status: bytes) -> bytes:
        for _ in range(40):
            self.turn += 1
            link = HttpDeviceLink(self.urls[self.turn % len(self.urls)], "app", self.name, None, 2)
            try:
                return link(status)
            except (OSError, DeliveryError):
                time.sleep(0.1)
            finally:
                link.close()
        raise DeliveryError("no worker answered")


def serve(tmp: Path, db: str, procs: list[subprocess.Popen[bytes]]) -> str:
    """Start ``ajour-delivery serve --rollout-db`` on a free port; its URL."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "AJOUR_CONFIG": str(tmp / "none.yaml")}
    (tmp / "none.yaml").write_text("{}\n")
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "delivery.cli", "serve", "--fleet", str(tmp / "fleet"),
         "--http", f"127.0.0.1:{port}", "--insecure-no-auth", "--rollout-db", db,
         "--registry", f"oci-layout://{tmp / 'oci'}", "--poll-synced", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    ))  # fmt: skip
    return f"http://127.0.0.1:{port}"


def test_two_serve_processes_and_a_restart_share_the_rollout_db(
    tmp_path: Path, rollout_db: RolloutDb
) -> None:
    """``ajour-delivery serve --rollout-db``, as installed: two worker processes on one file
    or PostgreSQL database, one restarted mid-rollout; devices poll either."""
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(SERVED_FLEET)
    url = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest"
    publish(tmp_path, url, "1.0", IMAGE_ONE)
    db = rollout_db.location
    procs: list[subprocess.Popen[bytes]] = []
    urls = [serve(tmp_path, db, procs), serve(tmp_path, db, procs)]
    names = [f"s{i:02d}" for i in range(40)]
    try:
        for name in names:  # the baseline
            run_device("app", name, SimulatedDevice(b"1.0"), Balanced(urls, name), wait_cap=0.1)
        publish(tmp_path, url, "1.1", IMAGE_TWO)
        devices = {n: SimulatedDevice(b"1.0") for n in names}
        threads = [
            threading.Thread(
                target=run_device,
                args=("app", n, devices[n], Balanced(urls, n)),
                kwargs={"wait_cap": 0.1, "keep_polling": 6.0},
            )
            for n in names
        ]
        for thread in threads:
            thread.start()
        store = rollout_db.open()
        deadline, restarted = time.monotonic() + 20, False
        while time.monotonic() < deadline:
            current = store.latest("app")
            assert current is not None
            if not restarted and current.seq == 2 and current.wave >= 1:
                procs[1].send_signal(signal.SIGTERM)
                code = procs[1].wait(15)
                assert code == 0, (
                    procs[1].stderr.read().decode()[-3000:] if procs[1].stderr else code
                )
                urls[1] = serve(tmp_path, db, procs)  # restarted, with nothing in memory
                restarted = True
            if restarted and current.state is State.COMPLETED:
                break
            time.sleep(0.1)
        for thread in threads:
            thread.join(15)
        history = [(r.seq, r.from_version, r.to_version, r.state) for r in store.history("app")]
        assert history == [(1, "", "1.0", State.COMPLETED), (2, "1.0", "1.1", State.COMPLETED)]
        assert restarted and {d.version for d in devices.values()} == {b"1.1"}
        outcomes = {device: r.outcome for _, device, r in store.records("app", 2)}
        assert set(outcomes) == set(names) and set(outcomes.values()) == {Outcome.CONFIRMED}
        store.close()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
            _, err = proc.communicate(timeout=15)
            assert b"Traceback" not in err, err.decode()
            if rollout_db.secret:  # the DSN's password is in no log line
                assert rollout_db.secret.encode() not in err
