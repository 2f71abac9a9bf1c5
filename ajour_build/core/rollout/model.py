"""Rollout objects, device outcomes, and what follows from them (pure functions).

A rollout takes one application from ``from_version`` to ``to_version`` in waves. It is an
immutable value: every operation returns a new one with ``revision + 1``, so a store can
write it only if nobody changed it in between (two workers, one database).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from ajour_build.core.errors import AjourError
from ajour_build.core.spec.rollout import Criterion, RolloutPolicy


class RolloutError(AjourError):
    """An operation that the rollout's state does not allow, or an unknown rollout."""


class State(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"
    COMPLETED = "completed"
    SUPERSEDED = "superseded"  # a newer version started a newer rollout


class Outcome(StrEnum):
    """A device's outcome in a rollout. Only transitions are stored."""

    SWAPPED = "swapped"  # sent Swap; waiting for the device to report
    CONFIRMED = "confirmed"
    REVERTED = "reverted"
    FAILED_DOWNLOAD = "failed_download"
    RETRIED = "retried"  # an operator cleared the outcome
    TIMED_OUT = "timed_out"  # never stored: SWAPPED past the confirm deadline


FAILURES = (Outcome.REVERTED, Outcome.TIMED_OUT, Outcome.FAILED_DOWNLOAD)
BLOCKED = frozenset({Outcome.REVERTED, Outcome.FAILED_DOWNLOAD})


@dataclass(frozen=True, slots=True)
class DeviceRecord:
    """A device's newest outcome: when, in which wave, what it ran before the swap."""

    outcome: Outcome
    wave: int
    at: float
    before: str = ""
    swaps: int = 1

    def effective(self, now: float, confirm_seconds: float) -> Outcome:
        if self.outcome is Outcome.SWAPPED and now - self.at >= confirm_seconds:
            return Outcome.TIMED_OUT
        return self.outcome


@dataclass(frozen=True, slots=True)
class Rollout:
    application: str
    seq: int
    from_version: str
    to_version: str
    policy: str  # the policy's JSON as it was when the rollout started: it never changes
    created: float
    state: State = State.RUNNING
    wave: int = 0  # waves 0..wave are open
    wave_started: tuple[float, ...] = ()
    reason: str = ""
    criteria_since: float = 0.0  # outcomes before this (a resume) no longer count
    revision: int = 0

    def changed(self, **changes: object) -> Rollout:
        return replace(self, revision=self.revision + 1, **changes)  # type: ignore[arg-type]

    def parsed_policy(self) -> RolloutPolicy:
        return RolloutPolicy.model_validate_json(self.policy)


def start(
    application: str,
    seq: int,
    from_version: str,
    to_version: str,
    policy: RolloutPolicy,
    now: float,
) -> Rollout:
    """A new rollout at wave 1 (index 0), opened now."""
    return Rollout(
        application,
        seq,
        from_version,
        to_version,
        policy.model_dump_json(by_alias=True, exclude_none=True),
        now,
        wave_started=(now,),
        criteria_since=now,
    )


@dataclass(frozen=True, slots=True)
class WaveCounts:
    """Finished devices of one wave, by outcome (``swapped`` ones are still pending)."""

    counts: Mapping[Outcome, int] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return sum(n for o, n in self.counts.items() if o is not Outcome.SWAPPED)

    def of(self, outcome: str) -> int:
        if outcome == "failed":
            return sum(self.counts.get(o, 0) for o in FAILURES)
        return self.counts.get(Outcome(outcome), 0)


def tally(
    records: Iterable[DeviceRecord], now: float, confirm_seconds: float, since: float = 0.0
) -> dict[int, WaveCounts]:
    """Counts per wave of the records at or after ``since``; late swaps count as timed out."""
    raw: dict[int, dict[Outcome, int]] = {}
    for record in records:
        if record.at < since or record.outcome is Outcome.RETRIED:
            continue
        outcome = record.effective(now, confirm_seconds)
        per = raw.setdefault(record.wave, {})
        per[outcome] = per.get(outcome, 0) + 1
    return {wave: WaveCounts(counts) for wave, counts in raw.items()}


def tripped(criterion: Criterion, counts: WaveCounts) -> bool:
    finished = counts.finished
    if finished < criterion.min_finished or finished == 0:
        return False
    return counts.of(criterion.outcome) >= criterion.threshold * finished


def _percent(x: float) -> str:
    return f"{x * 100:.4g}%"


def reason(wave: int, criterion: Criterion, counts: WaveCounts) -> str:
    bad, finished = counts.of(criterion.outcome), counts.finished
    what = "failed" if criterion.outcome == "failed" else criterion.outcome.replace("_", " ")
    return (
        f"wave {wave + 1}: {bad} of {finished} finished devices {what}"
        f" ({_percent(bad / finished)}) >= threshold {_percent(criterion.threshold)}"
        f" with min_finished {criterion.min_finished}"
    )


def evaluate(
    rollout: Rollout, policy: RolloutPolicy, counts: Mapping[int, WaveCounts], now: float
) -> Rollout | None:
    """The rollout after looking at its counts now (None: nothing changes).

    A running rollout pauses when a criterion trips in an open wave; otherwise, once the
    current wave's dwell has passed, the next wave opens (unless it needs manual approval),
    and after the last wave's dwell the rollout completes.
    """
    if rollout.state is not State.RUNNING:
        return None
    empty = WaveCounts()
    for wave in range(rollout.wave + 1):
        for criterion in policy.criteria:
            if tripped(criterion, counts.get(wave, empty)):
                return rollout.changed(
                    state=State.PAUSED, reason=reason(wave, criterion, counts.get(wave, empty))
                )
    waves = policy.waves
    current = min(rollout.wave, len(waves) - 1)
    if now - rollout.wave_started[-1] < waves[current].dwell_seconds:
        return None
    if rollout.wave + 1 >= len(waves):
        return rollout.changed(state=State.COMPLETED, reason="every wave finished its dwell")
    if waves[rollout.wave + 1].approval == "manual":
        return None
    return open_next(rollout, now)


def open_next(rollout: Rollout, now: float) -> Rollout:
    return rollout.changed(wave=rollout.wave + 1, wave_started=(*rollout.wave_started, now))


# -- operations ------------------------------------------------------------------------------


def _need(rollout: Rollout, action: str, *states: State) -> None:
    if rollout.state not in states:
        allowed = " or ".join(s.value for s in states)
        raise RolloutError(
            f"cannot {action} rollout {rollout.seq} of {rollout.application!r}: it is"
            f" {rollout.state.value}, and {action} needs it {allowed}"
        )


def pause(rollout: Rollout, why: str = "paused by an operator") -> Rollout:
    _need(rollout, "pause", State.RUNNING)
    return rollout.changed(state=State.PAUSED, reason=why)


def resume(rollout: Rollout, now: float) -> Rollout:
    """Running again; the criteria count only outcomes from now on."""
    _need(rollout, "resume", State.PAUSED)
    return rollout.changed(state=State.RUNNING, reason="", criteria_since=now)


def abort(rollout: Rollout, why: str = "aborted by an operator") -> Rollout:
    _need(rollout, "abort", State.RUNNING, State.PAUSED)
    return rollout.changed(state=State.ABORTED, reason=why)


def rollback(rollout: Rollout, why: str = "rolled back by an operator") -> Rollout:
    _need(rollout, "roll back", State.RUNNING, State.PAUSED, State.ABORTED, State.COMPLETED)
    return rollout.changed(state=State.ROLLED_BACK, reason=why)


def promote(rollout: Rollout, policy: RolloutPolicy, now: float) -> Rollout:
    """Open the next wave now (the last one: complete)."""
    _need(rollout, "promote", State.RUNNING, State.PAUSED)
    if rollout.wave + 1 >= len(policy.waves):
        return rollout.changed(state=State.COMPLETED, reason="promoted past the last wave")
    return open_next(rollout, now)


def offers_new(rollout: Rollout, wave: int, record: DeviceRecord | None) -> bool:
    """Whether a device of the cohort in ``wave`` is offered ``to_version`` (else
    ``from_version``). A reverted or failed device is not, until it is retried."""
    if record is not None and record.outcome in BLOCKED:
        return False
    state = rollout.state
    if state is State.COMPLETED:
        return True
    if state in (State.RUNNING, State.PAUSED):
        return wave <= rollout.wave
    if state is State.ABORTED:  # updated devices keep the new version
        return record is not None and record.outcome in (Outcome.SWAPPED, Outcome.CONFIRMED)
    return False  # rolled back, superseded
