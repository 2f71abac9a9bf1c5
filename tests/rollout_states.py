"""The rollout states the console's rollout tests read, made on a real delivery worker
(tests/rollout_worker.py) the worker's way.

* fw (200 devices): rollout 1 the baseline 1.4.1 (41 days ago), rollout 2 to 1.4.2 (9 days
  ago, promoted through its waves), rollout 3 to 1.5.0 (3 hours ago) paused by its
  criterion in wave 2, with 5 devices held back;
* sensor (12 devices): rollout 2 to 1.0.0 running in wave 1;
* gateway (1 device): no ``spec.rollout``.

A version published to the worker's OCI layout starts a rollout when a device reports; a
wave opens when the worker sees its dwell over; the outcomes are written to the rollout
store as the worker records them after a swap; devices downloading report over HTTP; and the
worker pauses rollout 3 when its criterion trips, on the test clock.
"""

from __future__ import annotations

from ajour_build.core.rollout.model import DeviceRecord, Outcome, State
from delivery.device import SimulatedDevice
from delivery.protocol import Sync, Write
from tests.rollout_worker import RolloutWorker

PASSWORD = "device-pw-1"
REASON = "wave 2: 5 of 40 finished devices reverted (12.5%) >= threshold 10% with min_finished 10"
HOUR, DAY = 3600.0, 86_400.0

# fw's rollout 3 (1.4.2 -> 1.5.0): wave 1 the 5 canaries, wave 2 the 50 early devices, wave 3
# the other 145 (manual approval). In wave 2, by name: 5 held back (reverted), 34 confirmed,
# 4 swapped, 1 timed out, 3 downloading, 3 pending.
CANARIES = [f"fw-{i:04d}" for i in range(1, 6)]
EARLY = [f"fw-{i:04d}" for i in range(101, 151)]
HELD = ["fw-0107", "fw-0112", "fw-0125", "fw-0131", "fw-0144"]
_REST = [n for n in EARLY if n not in HELD]
CONFIRMED, SWAPPED, TIMED_OUT, DOWNLOADING = _REST[:34], _REST[34:38], _REST[38], _REST[39:42]
LATER = [f"fw-{i:04d}" for i in (*range(6, 101), *range(151, 201))]


def _device(app: str, name: str, ring: str = "") -> str:
    labels = f", labels: {{ring: {ring}}}" if ring else ""
    return (
        f"---\nmetadata: {{name: {name}, application: {app}{labels}}}\n"
        f"spec: {{credentials: {{credentials: [{{pass: {PASSWORD}}}]}}}}\n"
    )


def _app(name: str, rollout: str = "") -> str:
    return (
        f"---\nkind: Application\nmetadata: {{name: {name}}}\n"
        f"spec:\n  firmware: {{container: {{image: fw/{name}:latest}}}}\n{rollout}"
    )


WORKER_FLEET = (
    _app("fw", "  rollout:\n    waves:\n"
         "      - {selector: {matchLabels: {ring: canary}}, dwell: 1h}\n"
         "      - {selector: {matchLabels: {ring: early}}, dwell: 1h}\n"
         "      - {percent: 100, approval: manual}\n"
         "    criteria: [{outcome: reverted, threshold: 0.1, minFinished: 10}]\n"
         "    confirmDeadline: 30m\n")
    + "".join(_device("fw", n, "canary") for n in CANARIES)
    + "".join(_device("fw", n, "early") for n in EARLY)
    + "".join(_device("fw", n) for n in LATER)
    + _app("sensor", "  rollout:\n    waves:\n"
           "      - {selector: {matchLabels: {ring: canary}}, dwell: 24h}\n"
           "      - {percent: 100}\n")
    + "".join(_device("sensor", f"s{i}", "canary" if i <= 2 else "") for i in range(1, 13))
    + _app("gateway")
    + _device("gateway", "g1")
)  # fmt: skip


def report(w: RolloutWorker, app: str, name: str, version: str) -> object:
    """A status of device ``name`` running ``version``, over HTTP; the command answered."""
    return w.report(app, name, SimulatedDevice(version.encode()), PASSWORD)


def populate(w: RolloutWorker, now: float) -> None:
    """fw: rollout 3 paused by its criterion, after two; sensor: rollout 2 running; gateway:
    no rollout. The worker's clock ends at ``now``."""
    rollouts, store = w.rollouts, w.store
    w.clock.now = now - 41 * DAY  # the first version a worker sees is the baseline
    for app, version, device in (("fw", "1.4.1", "fw-0001"), ("sensor", "0.9.0", "s1"),
                                 ("gateway", "2.0.1", "g1")):  # fmt: skip
        w.publish(app, version)
        assert isinstance(report(w, app, device, version), Sync)
    w.clock.now = now - 9 * DAY  # fw 1.4.2: rollout 2, promoted through its waves
    w.publish("fw", "1.4.2")
    assert isinstance(report(w, "fw", "fw-0001", "1.4.1"), Write)
    for _ in range(3):
        done = rollouts.promote("fw")
    assert (done.seq, done.state) == (2, State.COMPLETED)
    w.clock.now = now - 3 * HOUR  # fw 1.5.0: rollout 3, wave 1 open
    w.publish("fw", "1.5.0")
    assert isinstance(report(w, "fw", "fw-0001", "1.4.2"), Write)
    w.clock.now = now - 2 * HOUR  # wave 1's dwell is over: wave 2 opens
    assert isinstance(report(w, "fw", LATER[0], "1.4.2"), Sync)  # wave 3: not offered 1.5.0
    w.clock.now = now - HOUR  # sensor 1.0.0: rollout 2, wave 1 open
    w.publish("sensor", "1.0.0")
    assert isinstance(report(w, "sensor", "s1", "0.9.0"), Write)
    fw = rollouts.current("fw")
    assert fw is not None and (fw.seq, fw.wave) == (3, 1), fw
    w.clock.now = now

    def record(app: str, names: list[str], outcome: Outcome, wave: int, ago: float) -> None:
        """Outcomes in the application's current rollout, as the worker records them."""
        current = rollouts.current(app)
        assert current is not None
        for name in names:
            at = now - ago
            store.record(app, current.seq, name,
                         DeviceRecord(outcome, wave, at, current.from_version))  # fmt: skip

    record("fw", CANARIES, Outcome.CONFIRMED, 0, 2.5 * HOUR)
    record("fw", CONFIRMED, Outcome.CONFIRMED, 1, 1.5 * HOUR)
    record("fw", HELD, Outcome.REVERTED, 1, 1.2 * HOUR)
    record("fw", [TIMED_OUT], Outcome.SWAPPED, 1, 1.5 * HOUR)  # never confirmed: timed out
    record("fw", SWAPPED, Outcome.SWAPPED, 1, 5 * 60)  # within the confirm deadline
    record("sensor", ["s1"], Outcome.CONFIRMED, 0, 30 * 60)
    # devices report: the worker follows its store, and its criterion trips
    for name in DOWNLOADING:
        assert isinstance(report(w, "fw", name, "1.4.2"), Write)  # and they stop there
    assert isinstance(report(w, "sensor", "s2", "0.9.0"), Write)
    assert isinstance(report(w, "fw", "fw-0001", "1.5.0"), Sync)
    assert isinstance(report(w, "fw", "fw-0107", "1.4.2"), Sync)  # held back on 1.4.2
    paused = rollouts.current("fw")
    assert paused is not None and (paused.state, paused.reason) == (State.PAUSED, REASON)
