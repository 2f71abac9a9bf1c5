"""What a worker shows of its rollouts: :class:`RolloutReport` values (``core.rollout.report``)
and each device's rollout note in ``/v1/status``.

Per wave: the devices of the cohort assigned to it (``core.rollout.assignment``), those
downloading ``to_version`` now (their last status in this worker's status store), the
outcomes (``model.tally``: late swaps count as timed out) and the held-back devices. The
assignment is computed once per fleet and rollout policy and kept (100k devices: about
0.2 s); the outcome log of the current rollout is followed by its id, so a report reads
only the transitions since the last one.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ajour_build.core.fleet import Fleet
from ajour_build.core.rollout import model
from ajour_build.core.rollout.assignment import wave_of
from ajour_build.core.rollout.model import DeviceRecord, Outcome, Rollout, State
from ajour_build.core.rollout.report import OUTCOMES, RolloutReport, WaveReport, report_of
from ajour_build.core.spec.rollout import RolloutPolicy
from ajour_build.core.wire import DeliveryState
from delivery.errors import DeliveryError
from delivery.rollouts import Rollouts
from delivery.store import DeviceStatus
from delivery.worker import Worker

HELD_BACK_SHOWN = 100
_STORED_NOTE = re.compile(r"rollout [0-9]+: .+")  # Rollouts.note, as the status store has it


class NotFound(DeliveryError):
    """An application, rollout or device that this worker does not know."""


@dataclass
class _Waves:
    """Which wave each device of one application's cohort is in, for one fleet and policy."""

    fleet: Fleet
    policy_json: str
    policy: RolloutPolicy
    of: dict[str, int]  # device -> 0-based wave (len(waves): no wave covers it)
    sizes: list[int]


@dataclass
class _Log:
    """The newest outcome of each device in one rollout, followed by the log's id."""

    seq: int
    last_id: int = 0
    records: dict[str, DeviceRecord] = field(default_factory=dict)


def _words(outcome: Outcome) -> str:
    return outcome.value.replace("_", " ")


class RolloutReports:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self._waves: dict[str, _Waves] = {}
        self._logs: dict[str, _Log] = {}
        self._lock = threading.Lock()

    @property
    def rollouts(self) -> Rollouts:
        if self.worker.rollouts is None:
            raise NotFound("this worker runs no rollouts")
        return self.worker.rollouts

    # -- what exists --------------------------------------------------------------------------
    def applications(self) -> list[str]:
        """The fleet's applications with ``spec.rollout``, by name."""
        apps = self.worker.targets.fleet.applications
        return sorted(name for name, app in apps.items() if app.rollout is not None)

    def current(self, application: str) -> Rollout:
        """The application's newest rollout, or NotFound saying why there is none."""
        app = self.worker.targets.fleet.applications.get(application)
        if app is None:
            raise NotFound(f"application {application!r} is not in the fleet")
        if app.rollout is None:
            raise NotFound(
                f"application {application!r} has no spec.rollout: its devices get the newest"
                " version at once"
            )
        rollout = self.rollouts.current(application)
        if rollout is None:
            raise NotFound(
                f"application {application!r} has no rollout yet: the first one starts when a"
                " worker first resolves its firmware for a device"
            )
        return rollout

    def device(self, application: str, device: str) -> None:
        """NotFound unless ``device`` is a device of ``application`` in the fleet."""
        if (application, device) not in self.worker.targets.fleet.devices:
            raise NotFound(f"device {device!r} is not in application {application!r}")

    # -- reports ------------------------------------------------------------------------------
    def all(self) -> list[RolloutReport]:
        """The current rollout of every application with ``spec.rollout`` that has one."""
        found = []
        for application in self.applications():
            rollout = self.rollouts.current(application)
            if rollout is not None:
                found.append(self._current_report(rollout))
        return found

    def report(self, application: str) -> RolloutReport:
        return self._current_report(self.current(application))

    def history(self, application: str) -> list[RolloutReport]:
        """Every rollout of the application, newest first."""
        latest = self.current(application)
        found = [self._current_report(latest)]
        for rollout in reversed(self.rollouts.store.history(application)):
            if rollout.seq != latest.seq:
                log = self.rollouts.store.records(application, rollout.seq)
                records = {device: record for _, device, record in log}
                found.append(self._report(rollout, records, set(), keep=False))
        return found

    def _current_report(self, rollout: Rollout) -> RolloutReport:
        records = self._records(rollout)
        store = self.worker.store
        downloading: set[str] = set()
        if store is not None and rollout.from_version:
            downloading = store.updating(rollout.application, rollout.to_version)
        return self._report(rollout, records, downloading)

    def _report(
        self, rollout: Rollout, records: Mapping[str, DeviceRecord], downloading: set[str],
        keep: bool = True,
    ) -> RolloutReport:  # fmt: skip
        waves: list[WaveReport] = []
        held: list[str] = []
        if rollout.from_version:  # the baseline has no waves: every device got it at once
            assigned = self._assigned(rollout, keep)
            policy = assigned.policy
            counts = model.tally(records.values(), self.rollouts.clock(), policy.confirm_seconds)
            held_by_wave: dict[int, list[str]] = {}
            for device, record in records.items():
                if record.outcome in model.BLOCKED:
                    held_by_wave.setdefault(record.wave, []).append(device)
            moving = [0] * len(policy.waves)
            for device in downloading:
                wave = assigned.of.get(device)
                found = records.get(device)
                active = found is not None and found.outcome is not Outcome.RETRIED
                if wave is not None and wave < len(moving) and not active:
                    moving[wave] += 1
            for i, wave_spec in enumerate(policy.waves):
                tallied = counts.get(i, model.WaveCounts()).counts
                names = sorted(held_by_wave.get(i, ()))
                held += names
                waves.append(
                    WaveReport(
                        number=i + 1,
                        open=_open(rollout, i),
                        opened_at=(
                            rollout.wave_started[i] if i < len(rollout.wave_started) else None
                        ),
                        approval=wave_spec.approval,
                        devices=assigned.sizes[i],
                        downloading=moving[i],
                        outcomes={k: tallied.get(Outcome(k), 0) for k in OUTCOMES},
                        held_back=names[:HELD_BACK_SHOWN],
                    )
                )
        return report_of(rollout, waves, sorted(held)[:HELD_BACK_SHOWN])

    # -- /v1/status -----------------------------------------------------------------------------
    def annotate(self, rows: Iterable[DeviceStatus]) -> list[DeviceStatus]:
        """The rows, each device of a rollout's cohort with its rollout note in ``detail``
        (e.g. ``rollout 3 wave 2: confirmed``) before what the status store said."""
        out: list[DeviceStatus] = []
        notes: dict[str, _Notes | None] = {}
        for row in rows:
            app = row.application
            if app not in notes:
                notes[app] = self._notes(app)
            found = notes[app]
            note = found.note(row) if found is not None else ""
            if note:
                stored = row.detail
                if stored and not _STORED_NOTE.fullmatch(stored):
                    note = f"{note}; {stored}"
                row = DeviceStatus(
                    row.application, row.device, row.current, row.target, row.offset, row.size,
                    row.state, row.source, note, row.last_seen,
                )  # fmt: skip
            out.append(row)
        return out

    def _notes(self, application: str) -> _Notes | None:
        app = self.worker.targets.fleet.applications.get(application)
        if app is None or app.rollout is None or self.worker.rollouts is None:
            return None
        rollout = self.worker.rollouts.current(application)
        if rollout is None or not rollout.from_version:
            return None
        assigned = self._assigned(rollout)
        return _Notes(rollout, assigned, self._records(rollout), self.rollouts.clock())

    # -- caches ---------------------------------------------------------------------------------
    def _assigned(self, rollout: Rollout, keep: bool = True) -> _Waves:
        """The wave of each device of the rollout's cohort; computed once per fleet and
        policy (a reloaded fleet may have new devices or labels). One is kept per
        application: an older rollout's other policy (``keep=False``) does not replace it."""
        application, fleet = rollout.application, self.worker.targets.fleet
        with self._lock:
            found = self._waves.get(application)
            if found is not None and found.fleet is fleet and found.policy_json == rollout.policy:
                return found
            policy = rollout.parsed_policy()
            of: dict[str, int] = {}
            sizes = [0] * (len(policy.waves) + 1)
            for device in fleet.devices_of(application):
                if device.firmware is not None:  # its own firmware: not in the app's rollout
                    continue
                labels = fleet.labels.get((application, device.name))
                wave = wave_of(policy, application, device.name, labels)
                if wave is not None:
                    of[device.name] = wave
                    sizes[wave] += 1
            found = _Waves(fleet, rollout.policy, policy, of, sizes)
            if keep:
                self._waves[application] = found
            return found

    def _records(self, rollout: Rollout) -> dict[str, DeviceRecord]:
        """The newest outcome of each device in the rollout (a copy)."""
        application = rollout.application
        with self._lock:
            log = self._logs.get(application)
            if log is None or log.seq != rollout.seq:
                log = self._logs[application] = _Log(rollout.seq)
            for log_id, device, record in self.rollouts.store.records(
                application, rollout.seq, log.last_id
            ):
                log.records[device] = record
                log.last_id = log_id
            return dict(log.records)


def _open(rollout: Rollout, wave: int) -> bool:
    """Whether the wave's devices are offered ``to_version`` now (those that did not fail)."""
    if rollout.state is State.COMPLETED:
        return True
    return rollout.state in (State.RUNNING, State.PAUSED) and wave <= rollout.wave


class _Notes:
    """Rollout notes of one application's devices; what depends on the rollout alone is
    worked out once (a ``/v1/status`` of 100k devices makes 100k notes)."""

    def __init__(
        self, rollout: Rollout, assigned: _Waves, records: dict[str, DeviceRecord], now: float
    ) -> None:
        r = self.rollout = rollout
        self.assigned, self.records, self.now = assigned, records, now
        self.confirm_seconds = assigned.policy.confirm_seconds
        self.waves = len(assigned.policy.waves)
        state = r.state
        going = state in (State.RUNNING, State.PAUSED)
        self.open_through = self.waves if state is State.COMPLETED else r.wave if going else -1
        self.closed = "wave not open yet" if going else "not offered"
        self.kept = self.stays = ""
        if state is State.ROLLED_BACK:
            self.kept = self.stays = f"; rolled back to {r.from_version}"
        elif state is State.ABORTED:
            self.kept = f"; aborted, keeps {r.to_version}"
            self.stays = f"; aborted, on {r.from_version}"
        self.blocked = f" with {r.to_version}; stays on {r.from_version} until retried"

    def note(self, row: DeviceStatus) -> str:
        wave = self.assigned.of.get(row.device)
        if wave is None:  # outside the cohort, or its own firmware: not in the rollout
            return ""
        r = self.rollout
        if wave >= self.waves:
            return f"rollout {r.seq}: in no wave; offered {r.to_version} once it completes"
        record = self.records.get(row.device)
        suffix = self.stays
        if record is not None and record.outcome is not Outcome.RETRIED:
            outcome = record.effective(self.now, self.confirm_seconds)
            if outcome in model.BLOCKED:
                return f"rollout {r.seq} wave {wave + 1}: {_words(outcome)}{self.blocked}"
            what = _words(outcome)
            if record.outcome is Outcome.SWAPPED or record.outcome is Outcome.CONFIRMED:
                suffix = self.kept
        elif wave <= self.open_through:
            updating = row.state == DeliveryState.UPDATING and row.target == r.to_version
            what = "downloading" if updating else "pending"
        else:
            what = self.closed
        return f"rollout {r.seq} wave {wave + 1}: {what}{suffix}"
