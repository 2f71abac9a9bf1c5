"""Staged rollouts in the worker: which version a device is offered, and what it did.

For an application with ``spec.rollout``, a new version of its firmware (a new target seen
by a worker) starts a rollout (``ajour_build.core.rollout``) in the shared store. A device
of the cohort is offered ``to_version`` while its wave is open and it has not failed, else
``from_version`` (its image is the immutable version tag of the same repository). What the
device reports after a ``Swap`` is its outcome: the new version (confirmed), the version it
ran before (reverted), the same finished download again ``max_swaps`` times or one offset
for longer than the stall deadline (failed download), nothing within the confirm deadline
(timed out, counted lazily). Only transitions are written.

The hot path reads no database: each worker keeps the rollout, and the outcome log, in
memory and follows the store at most every ``refresh`` seconds (and at once after its own
changes); a refresh also evaluates the criteria and the dwell, and saves what changes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ajour_build.core.fleet import Fleet
from ajour_build.core.rollout import model
from ajour_build.core.rollout.assignment import wave_of
from ajour_build.core.rollout.model import DeviceRecord, Outcome, Rollout
from ajour_build.core.spec.rollout import RolloutPolicy
from delivery.decision import FirmwareImage
from delivery.protocol import PATCH_DETOOLS, ProtocolError, decode_status
from delivery.replies import Reply
from delivery.rollout_store import RolloutStore, StoreUnavailable

log = logging.getLogger("delivery.rollouts")

ImageOf = Callable[[str], FirmwareImage]
"""The firmware of one version of the device's repository (raises when it cannot)."""


@dataclass
class _Live:
    """One application's current rollout, as this worker last read it."""

    rollout: Rollout
    policy: RolloutPolicy
    to_bytes: bytes
    records: dict[str, DeviceRecord] = field(default_factory=dict)
    last_id: int = 0
    refreshed: float = 0.0
    stalls: dict[str, tuple[int, float]] = field(default_factory=dict)  # offset, since
    waves: dict[str, int | None] = field(default_factory=dict)  # by device
    looked: dict[str, float] = field(default_factory=dict)  # devices read from the store
    waves_of: Fleet | None = None  # the fleet the waves were found in
    from_bytes: bytes = field(init=False)
    stall_seconds: float = field(init=False)
    confirm_seconds: float = field(init=False)

    def __post_init__(self) -> None:  # parsed once, not per status
        self.from_bytes = self.rollout.from_version.encode()
        self.stall_seconds = self.policy.stall_seconds
        self.confirm_seconds = self.policy.confirm_seconds


@dataclass
class Rollouts:
    store: RolloutStore
    clock: Callable[[], float] = time.time
    refresh: float = 0.5
    max_swaps: int = 3
    _live: dict[str, _Live] = field(default_factory=dict, repr=False)
    _rolled: dict[str, set[str]] = field(default_factory=dict, repr=False)  # see _follow
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -- the hot path ---------------------------------------------------------------------
    def target(
        self, fleet: Fleet, application: str, device: str, latest: FirmwareImage,
        payload: bytes, image_of: ImageOf,
    ) -> FirmwareImage:  # fmt: skip
        """The firmware ``device`` is offered, when its source's newest is ``latest``."""
        app = fleet.applications.get(application)
        if app is None or app.rollout is None:
            return latest
        known = fleet.devices.get((application, device))
        if known is None or known.firmware is not None:  # its own spec: not the app's rollout
            return latest
        live = self._current(application, latest, app.rollout)
        rollout = live.rollout
        if not rollout.from_version:  # the baseline: nothing to roll out from
            return self._image(live, True, latest, image_of)
        wave = self._wave(live, fleet, application, device)
        if wave is None:  # outside the cohort: not in the rollout
            return latest
        record = live.records.get(device)
        if record is not None and record.outcome is Outcome.SWAPPED:
            new = self._image(live, True, latest, image_of)
            record = self._after_swap(live, device, record, payload, new)
        return self._image(live, model.offers_new(rollout, wave, record), latest, image_of)

    @staticmethod
    def _image(live: _Live, new: bool, latest: FirmwareImage, image_of: ImageOf) -> FirmwareImage:
        version = live.to_bytes if new else live.from_bytes
        if version == latest.version:
            return latest
        rollout = live.rollout
        return image_of(rollout.to_version if new else rollout.from_version)

    def answered(self, application: str, device: str, target: FirmwareImage, reply: Reply) -> bool:
        """What ``_answered`` says; a database that fails loses the note (logged), not the
        reply."""
        try:
            return self._answered(application, device, target, reply)
        except StoreUnavailable as exc:
            log.error("rollout of %s: %s not recorded: %s", application, device, exc)
            return False

    def _answered(self, application: str, device: str, target: FirmwareImage, reply: Reply) -> bool:
        """Note a ``Swap`` sent for the new version, and downloads that stall.

        True when the reply must be computed again: a device starting its download of the
        new version (a ``Write`` at 0) is looked up once in the store, where another worker
        may have recorded its swap or failure since this one last followed the log.
        """
        live = self._live.get(application)
        if live is None or target.version != live.to_bytes or not live.rollout.from_version:
            return False
        if reply.kind == "swap":
            live.stalls.pop(device, None)
            record = live.records.get(device)
            if record is None or record.outcome is not Outcome.SWAPPED:
                wave = live.waves.get(device, 0) or 0
                self._write(live, device, DeviceRecord(
                    Outcome.SWAPPED, wave, self.clock(), reply.observed[0]))  # fmt: skip
        elif reply.kind in ("write", "writepatch"):  # a download, of the image or a patch
            offset = reply.observed[2] or 0
            if offset == 0 and device not in live.records and self._look_up(live, device):
                rollout = live.rollout
                found = self.store.last(rollout.application, rollout.seq, device)
                if found is not None:
                    live.records[device] = found
                    return True
            self._progress(live, device, offset)
        return False

    def _look_up(self, live: _Live, device: str) -> bool:
        """Whether to read the device's outcome from the store now: at most once per
        refresh interval (a device that keeps starting at 0 costs no query per status)."""
        now = self.clock()
        if now - live.looked.get(device, -self.refresh) < self.refresh:
            return False
        live.looked[device] = now
        return True

    # -- outcomes -------------------------------------------------------------------------
    def _after_swap(
        self, live: _Live, device: str, record: DeviceRecord, payload: bytes, new: FirmwareImage
    ) -> DeviceRecord:
        try:
            status = decode_status(payload)
        except ProtocolError:
            return record  # the worker rejects it
        to = live.to_bytes
        now = self.clock()
        update = status.update
        size = new.size  # where a finished download stands: the image's end, or the patch's
        patch = new.patch_from(status.version) if (status.patch or 0) & PATCH_DETOOLS else None
        if patch is not None:
            size = len(patch.data)
        if status.version == to:
            found = DeviceRecord(Outcome.CONFIRMED, record.wave, now, record.before)
        elif update is not None and update.version == to and update.offset == size:
            # it asks for the swap again: the last one failed; give up after max_swaps
            failed = record.swaps >= self.max_swaps
            outcome = Outcome.FAILED_DOWNLOAD if failed else Outcome.SWAPPED
            swaps = record.swaps if failed else record.swaps + 1
            found = DeviceRecord(outcome, record.wave, now, record.before, swaps)
        elif status.version.decode(errors="replace") == record.before:
            found = DeviceRecord(Outcome.REVERTED, record.wave, now, record.before)
        else:
            return record
        self._write(live, device, found)
        return found

    def _progress(self, live: _Live, device: str, offset: int) -> None:
        now = self.clock()
        seen = live.stalls.get(device)
        if seen is None or seen[0] != offset:
            live.stalls[device] = (offset, now)
            return
        if now - seen[1] >= live.stall_seconds and device not in live.records:
            live.stalls.pop(device, None)
            wave = live.waves.get(device, 0) or 0
            self._write(live, device, DeviceRecord(Outcome.FAILED_DOWNLOAD, wave, now))

    def _write(self, live: _Live, device: str, record: DeviceRecord) -> None:
        rollout = live.rollout
        self.store.record(rollout.application, rollout.seq, device, record)
        live.records[device] = record  # the log's copy arrives with the next refresh
        log.info("rollout %s/%d: %s %s", rollout.application, rollout.seq, device,
                 record.outcome.value)  # fmt: skip

    # -- the rollout, followed --------------------------------------------------------------
    @staticmethod
    def _wave(live: _Live, fleet: Fleet, application: str, device: str) -> int | None:
        if live.waves_of is not fleet:  # a reloaded fleet: labels may have changed
            live.waves, live.waves_of = {}, fleet
        try:
            return live.waves[device]
        except KeyError:
            labels = fleet.labels.get((application, device))
            found = live.waves[device] = wave_of(live.policy, application, device, labels)
            return found

    def _current(self, application: str, latest: FirmwareImage, policy: RolloutPolicy) -> _Live:
        live = self._live.get(application)
        now = self.clock()
        if live is not None and now - live.refreshed < self.refresh:
            return live
        with self._lock:
            live = self._live.get(application)
            if live is None or now - live.refreshed >= self.refresh:
                live = self._follow(application, latest, policy, live, now)
        return live

    def _follow(
        self, application: str, latest: FirmwareImage, policy: RolloutPolicy,
        live: _Live | None, now: float,
    ) -> _Live:  # fmt: skip
        version = latest.version.decode(errors="replace")
        rollout = self.store.latest(application)
        # versions known to be in the history: they start no rollout (next_rollout), so a
        # hand-started rollout of another version costs no write transaction per refresh
        rolled = self._rolled.setdefault(application, set())
        if rollout is None or (rollout.to_version != version and version not in rolled and (
                live is None or live.rollout.to_version != version)):  # fmt: skip
            rollout = self.store.begin(application, version, policy, now)
            rolled.add(version)
        if live is None or live.rollout.seq != rollout.seq:
            live = _Live(rollout, rollout.parsed_policy(), rollout.to_version.encode())
        live.rollout = rollout
        for log_id, device, record in self.store.records(application, rollout.seq, live.last_id):
            live.records[device] = record
            live.last_id = log_id
        live.refreshed = now
        changed = model.evaluate(rollout, live.policy, self._counts(live, now), now)
        if changed is not None and self.store.save(changed):
            live.rollout = changed
            log.info("rollout %s/%d: %s wave %d %s", application, changed.seq,
                     changed.state.value, changed.wave + 1, changed.reason)  # fmt: skip
        self._live[application] = live
        return live

    def _counts(self, live: _Live, now: float) -> dict[int, model.WaveCounts]:
        return model.tally(
            live.records.values(), now, live.confirm_seconds, live.rollout.criteria_since
        )

    # -- reading and operating ---------------------------------------------------------------
    def note(self, application: str, device: str) -> str:
        """What the status store shows of a device held back by the rollout ("" if none)."""
        live = self._live.get(application)
        record = live.records.get(device) if live is not None else None
        if live is None or record is None or record.outcome not in model.BLOCKED:
            return ""
        rollout = live.rollout
        return (
            f"rollout {rollout.seq}: {record.outcome.value.replace('_', ' ')} with"
            f" {rollout.to_version}; stays on {rollout.from_version} until retried"
        )

    def current(self, application: str) -> Rollout | None:
        return self.store.latest(application)

    def counts(self, application: str) -> dict[int, model.WaveCounts]:
        """Finished devices per wave (0-based) of the current rollout, by outcome."""
        rollout = self.store.latest(application)
        if rollout is None:
            return {}
        records: dict[str, DeviceRecord] = {}
        for _, device, record in self.store.records(application, rollout.seq):
            records[device] = record
        policy = rollout.parsed_policy()
        return model.tally(records.values(), self.clock(), policy.confirm_seconds)

    def _operate(self, application: str, change: Callable[[Rollout], Rollout]) -> Rollout:
        for _ in range(5):  # another worker may save in between: derive again
            rollout = self.store.latest(application)
            if rollout is None:
                raise model.RolloutError(f"application {application!r} has no rollout")
            changed = change(rollout)
            if self.store.save(changed):
                self._stale(application)
                return changed
        raise model.RolloutError(f"rollout of {application!r} kept changing; try again")

    def _stale(self, application: str) -> None:
        live = self._live.get(application)
        if live is not None:
            live.refreshed = 0.0

    def pause(self, application: str, reason: str = "paused by an operator") -> Rollout:
        return self._operate(application, lambda r: model.pause(r, reason))

    def resume(self, application: str) -> Rollout:
        return self._operate(application, lambda r: model.resume(r, self.clock()))

    def abort(self, application: str) -> Rollout:
        return self._operate(application, model.abort)

    def rollback(self, application: str) -> Rollout:
        return self._operate(application, model.rollback)

    def promote(self, application: str) -> Rollout:
        return self._operate(
            application, lambda r: model.promote(r, r.parsed_policy(), self.clock())
        )

    def start(
        self, application: str, version: str, policy: RolloutPolicy, supersede: bool = False
    ) -> Rollout:
        """A new rollout to ``version`` from the version the last one finished on, at wave
        1 (``started_rollout``: refused while one is running or paused, unless
        ``supersede``). The version must be published: the caller checks its tag."""
        rollout = self.store.start(application, version, policy, self.clock(), supersede)
        log.info("rollout %s/%d: %s -> %s started by an operator", application, rollout.seq,
                 rollout.from_version, rollout.to_version)  # fmt: skip
        self._stale(application)
        return rollout

    def retry(self, application: str, device: str) -> None:
        """Clear a device's outcome: it is offered the new version again."""
        rollout = self.store.latest(application)
        if rollout is None:
            raise model.RolloutError(f"application {application!r} has no rollout")
        self.store.record(application, rollout.seq, device,
                          DeviceRecord(Outcome.RETRIED, 0, self.clock()))  # fmt: skip
        live = self._live.get(application)
        if live is not None:
            live.records.pop(device, None)
            live.stalls.pop(device, None)
        self._stale(application)
