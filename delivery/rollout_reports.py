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
from dataclasses import dataclass, field, replace

from ajour_build.core.fleet import Fleet
from ajour_build.core.rollout import model
from ajour_build.core.rollout.assignment import wave_of
from ajour_build.core.rollout.model import DeviceRecord, Outcome, Rollout, State
from ajour_build.core.rollout.report import OUTCOMES, RolloutReport, WaveReport
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
                found.append(self._report(rollout, records, set()))
        return found

    def _current_report(self, rollout: Rollout) -> RolloutReport:
        records = self._records(rollout)
        store = self.worker.store
        downloading: set[str] = set()
        if store is not None and rollout.from_version:
            downloading = store.updating(rollout.application, rollout.to_version)
        return self._report(rollout, records, downloading)

    def _report(
        self, rollout: Rollout, records: Mapping[str, DeviceRecord], downloading: set[str]
    ) -> RolloutReport:
        waves: list[WaveReport] = []
        held: list[str] = []
        if rollout.from_version:  # the baseline has no waves: every device got it at once
            assigned = self._assigned(rollout)
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
        return RolloutReport(
            application=rollout.application,
            seq=rollout.seq,
            from_version=rollout.from_version,
            to_version=rollout.to_version,
            state=rollout.state.value,
            reason=rollout.reason,
            created=rollout.created,
            revision=rollout.revision,
            waves=waves,
            held_back=sorted(held)[:HELD_BACK_SHOWN],
        )

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
                stored = "" if _STORED_NOTE.fullmatch(row.detail) else row.detail
                row = replace(row, detail=f"{note}; {stored}" if stored else note)
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
        return _Notes(
            rollout, assigned, self._records(rollout), self.rollouts.clock(),
            assigned.policy.confirm_seconds,
        )  # fmt: skip

    # -- caches ---------------------------------------------------------------------------------
    def _assigned(self, rollout: Rollout) -> _Waves:
        """The wave of each device of the rollout's cohort; computed once per fleet and
        policy (a reloaded fleet may have new devices or labels)."""
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
            found = self._waves[application] = _Waves(fleet, rollout.policy, policy, of, sizes)
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


@dataclass
class _Notes:
    rollout: Rollout
    assigned: _Waves
    records: dict[str, DeviceRecord]
    now: float
    confirm_seconds: float

    def note(self, row: DeviceStatus) -> str:
        wave = self.assigned.of.get(row.device)
        if wave is None:  # outside the cohort, or its own firmware: not in the rollout
            return ""
        r = self.rollout
        head = f"rollout {r.seq} wave {wave + 1}"
        if wave >= len(self.assigned.policy.waves):
            return f"rollout {r.seq}: in no wave; offered {r.to_version} once it completes"
        record = self.records.get(row.device)
        if record is not None and record.outcome is not Outcome.RETRIED:
            outcome = record.effective(self.now, self.confirm_seconds)
            if outcome in model.BLOCKED:
                return (
                    f"{head}: {_words(outcome)} with {r.to_version}; stays on"
                    f" {r.from_version} until retried"
                )
            what = _words(outcome)
        elif _open(r, wave):
            updating = row.state == DeliveryState.UPDATING and row.target == r.to_version
            what = "downloading" if updating else "pending"
        elif r.state in (State.RUNNING, State.PAUSED):
            what = "wave not open yet"
        else:
            what = "not offered"
        if r.state is State.ROLLED_BACK:
            what += f"; rolled back to {r.from_version}"
        elif r.state is State.ABORTED:
            kept = record is not None and record.outcome in (Outcome.SWAPPED, Outcome.CONFIRMED)
            what += f"; aborted, {'keeps ' + r.to_version if kept else 'on ' + r.from_version}"
        return f"{head}: {what}"
