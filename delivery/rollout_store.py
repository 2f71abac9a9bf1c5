"""Where rollouts and device outcomes live: one database shared by every worker.

``RolloutStore`` is the protocol; ``SqliteRolloutStore`` one implementation (stdlib
sqlite3, WAL, one transaction per change, safe for several processes on one file),
``PostgresRolloutStore`` (``delivery/rollout_store_pg.py``) the other, for workers on
several machines. ``":memory:"`` keeps rollouts per process. The row conversions and what
``begin`` writes are shared here.

Rollouts are immutable values: ``save`` writes one only if the stored revision is the one
it was derived from, so two workers never both advance or pause the same rollout. Device
outcomes are an append-only log of transitions; readers follow it by its id.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple, Protocol

from ajour_build.core.rollout.model import (
    DeviceRecord,
    Outcome,
    Rollout,
    RolloutError,
    State,
    start,
)
from ajour_build.core.spec.rollout import RolloutPolicy
from delivery.errors import DeliveryError


class StoreUnavailable(DeliveryError):
    """The rollout database cannot be read or written now (locked too long, gone, full)."""


_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rollouts (
    application TEXT NOT NULL, seq INTEGER NOT NULL, from_version TEXT NOT NULL,
    to_version TEXT NOT NULL, policy TEXT NOT NULL, created REAL NOT NULL, state TEXT NOT NULL,
    wave INTEGER NOT NULL, wave_started TEXT NOT NULL, reason TEXT NOT NULL,
    criteria_since REAL NOT NULL, revision INTEGER NOT NULL, PRIMARY KEY (application, seq))""",
    """CREATE TABLE IF NOT EXISTS outcomes (
    id INTEGER PRIMARY KEY AUTOINCREMENT, application TEXT NOT NULL, seq INTEGER NOT NULL,
    device TEXT NOT NULL, outcome TEXT NOT NULL, wave INTEGER NOT NULL, at REAL NOT NULL,
    before TEXT NOT NULL, swaps INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS outcomes_by_rollout ON outcomes (application, seq, id)",
    "CREATE INDEX IF NOT EXISTS outcomes_by_device ON outcomes (application, seq, device, id)",
)
COLUMNS = (
    "application, seq, from_version, to_version, policy, created, state, wave, wave_started,"
    " reason, criteria_since, revision"
)


class RolloutStore(Protocol):
    def latest(self, application: str) -> Rollout | None: ...

    def history(self, application: str) -> list[Rollout]: ...

    def begin(
        self, application: str, version: str, policy: RolloutPolicy, now: float
    ) -> Rollout: ...

    def start(
        self, application: str, version: str, policy: RolloutPolicy, now: float,
        supersede: bool = False,
    ) -> Rollout: ...  # fmt: skip

    def save(self, rollout: Rollout) -> bool: ...

    def record(self, application: str, seq: int, device: str, record: DeviceRecord) -> None: ...

    def records(
        self, application: str, seq: int, after: int = 0
    ) -> list[tuple[int, str, DeviceRecord]]: ...

    def last(self, application: str, seq: int, device: str) -> DeviceRecord | None: ...

    def close(self) -> None: ...


def rollout_row(rollout: Rollout) -> tuple[object, ...]:
    """The values of ``COLUMNS`` for ``rollout``."""
    r = rollout
    return (
        r.application, r.seq, r.from_version, r.to_version, r.policy, r.created, r.state.value,
        r.wave, json.dumps(list(r.wave_started)), r.reason, r.criteria_since, r.revision,
    )  # fmt: skip


# Statements both stores run, with ``?`` placeholders (PostgreSQL's store writes ``%s``).
HISTORY_SQL = f"SELECT {COLUMNS} FROM rollouts WHERE application=? ORDER BY seq"
SUPERSEDE_SQL = "UPDATE rollouts SET state=?, reason=?, revision=? WHERE application=? AND seq=?"
INSERT_SQL = f"INSERT INTO rollouts ({COLUMNS}) VALUES ({','.join('?' * 12)})"
SAVE_SQL = (
    "UPDATE rollouts SET state=?, wave=?, wave_started=?, reason=?, criteria_since=?,"
    " revision=? WHERE application=? AND seq=? AND revision=?"
)

Execute = Callable[[str, tuple[object, ...]], object]


def write_begun(execute: Execute, application: str, begun: Begun) -> None:
    """Write what ``begun`` changes: the superseded rollout, the new one."""
    old = begun.superseded
    if old is not None:
        execute(SUPERSEDE_SQL, (old.state.value, old.reason, old.revision, application, old.seq))
    if begun.new:
        execute(INSERT_SQL, rollout_row(begun.rollout))


def save_args(rollout: Rollout) -> tuple[object, ...]:
    """The arguments of ``SAVE_SQL``: ``rollout`` over the revision it came from."""
    return (
        rollout.state.value, rollout.wave, json.dumps(list(rollout.wave_started)),
        rollout.reason, rollout.criteria_since, rollout.revision,
        rollout.application, rollout.seq, rollout.revision - 1,
    )  # fmt: skip


def rollout_of(row: tuple[object, ...]) -> Rollout:
    """The rollout of a row of ``COLUMNS``."""
    app, seq, old, new, policy, created, state, wave, started, why, since, rev = row
    return Rollout(
        str(app), int(str(seq)), str(old), str(new), str(policy), float(str(created)),
        State(str(state)), int(str(wave)), tuple(float(t) for t in json.loads(str(started))),
        str(why), float(str(since)), int(str(rev)),
    )  # fmt: skip


def record_of(row: tuple[object, ...]) -> DeviceRecord:
    """The outcome of a row of (outcome, wave, at, before, swaps)."""
    outcome, wave, at, before, swaps = row
    return DeviceRecord(
        Outcome(str(outcome)), int(str(wave)), float(str(at)), str(before), int(str(swaps))
    )


class Begun(NamedTuple):
    """What ``begin`` found: the rollout to its version, whether that one is new (to insert),
    and the running or paused rollout it supersedes (to update), if any."""

    rollout: Rollout
    new: bool
    superseded: Rollout | None = None


def next_rollout(
    history: list[Rollout], application: str, version: str, policy: RolloutPolicy, now: float
) -> Begun:
    """The rollout to ``version`` after ``history`` (oldest first): the latest one if it goes
    there already (or went there before: a worker that has not seen the newest version yet),
    else a new one.

    The first version an application is seen with is its baseline: a completed rollout from
    nothing. A newer version supersedes a running or paused rollout.
    """
    for old in reversed(history):
        if old.to_version == version:
            return Begun(history[-1], False)
    if not history:
        baseline = Rollout(
            application, 1, "", version,
            policy.model_dump_json(by_alias=True, exclude_none=True), now,
            state=State.COMPLETED, wave_started=(now,),
            reason="baseline: the first version seen", criteria_since=now,
        )  # fmt: skip
        return Begun(baseline, True)
    last = history[-1]
    source = last.to_version if last.state is State.COMPLETED else last.from_version
    superseded = None
    if last.state in (State.RUNNING, State.PAUSED):
        superseded = last.changed(state=State.SUPERSEDED, reason=f"superseded by version {version}")
    return Begun(start(application, last.seq + 1, source, version, policy, now), True, superseded)


def started_rollout(
    history: list[Rollout], application: str, version: str, policy: RolloutPolicy, now: float,
    supersede: bool = False,
) -> Begun:  # fmt: skip
    """The rollout an operator starts to ``version`` after ``history`` (oldest first): from
    the version the last rollout finished on (as ``next_rollout``), to ``version``, at wave 1.

    Refused (RolloutError): without a rollout yet, while the last one is running or paused
    (unless ``supersede``), and when the devices would be offered what they already run.
    """
    if not history:
        raise RolloutError(
            f"application {application!r} has no rollout yet, so there is no version to start"
            " from: the first one (its baseline) starts when a worker first resolves its"
            " firmware for a device"
        )
    last = history[-1]
    going = last.state in (State.RUNNING, State.PAUSED)
    if going and not supersede:
        raise RolloutError(
            f"cannot start a rollout of {application!r} to {version}: rollout {last.seq}"
            f" ({last.from_version} -> {last.to_version}) is {last.state.value}; abort it"
            ' first, or start with supersede (body {"supersede": true}, --supersede)'
        )
    source = last.to_version if last.state is State.COMPLETED else last.from_version
    if source == version:
        if last.state in (State.COMPLETED, State.ROLLED_BACK):
            why = f"its devices are offered {version} already"
        else:
            why = (
                f"it started from {version}; to offer every device of its cohort {version}"
                " again, roll it back"
            )
        raise RolloutError(
            f"cannot start a rollout of {application!r} to {version}: rollout {last.seq}"
            f" ({last.from_version} -> {last.to_version}) is {last.state.value}, and {why}"
        )
    superseded = None
    if going:
        superseded = last.changed(
            state=State.SUPERSEDED,
            reason=f"superseded by rollout {last.seq + 1} to {version}, started by an operator",
        )
    new = start(application, last.seq + 1, source, version, policy, now)
    return Begun(replace(new, reason=STARTED_BY_HAND), True, superseded)


STARTED_BY_HAND = "started by an operator"


class SqliteRolloutStore:
    def __init__(self, path: Path | str = ":memory:", timeout: float = 10.0) -> None:
        self.path = str(path)
        self._db = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=timeout
        )
        self._mutex = threading.Lock()
        with self._lock():
            self._prepare(timeout)

    def _prepare(self, timeout: float) -> None:
        """WAL mode and the schema. Switching a new file to WAL takes an exclusive lock for
        which SQLite may not wait (its busy handler is skipped there), so two workers that
        start together on one new file retry that step until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.path != ":memory:":
                    mode = self._db.execute("PRAGMA journal_mode").fetchone()[0]
                    if str(mode).lower() != "wal":
                        self._db.execute("PRAGMA journal_mode=WAL")
                    self._db.execute("PRAGMA synchronous=NORMAL")
                for statement in _SCHEMA:
                    self._db.execute(statement)
                return
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.05)

    @contextmanager
    def _lock(self) -> Iterator[None]:
        """The connection, to one thread at a time; database errors as StoreUnavailable."""
        with self._mutex:
            try:
                yield
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"rollout database {self.path}: {exc}") from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; IMMEDIATE takes the file's write lock at once, so a check
        and the write that follows it are atomic across processes."""
        with self._lock():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def latest(self, application: str) -> Rollout | None:
        with self._lock():
            row = self._db.execute(
                f"SELECT {COLUMNS} FROM rollouts WHERE application=? ORDER BY seq DESC LIMIT 1",
                (application,),
            ).fetchone()
        return rollout_of(row) if row else None

    def history(self, application: str) -> list[Rollout]:
        with self._lock():
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM rollouts WHERE application=? ORDER BY seq",
                (application,),
            ).fetchall()
        return [rollout_of(r) for r in rows]

    def begin(self, application: str, version: str, policy: RolloutPolicy, now: float) -> Rollout:
        """The rollout to ``version`` (``next_rollout``), written in one transaction."""
        return self._write(
            application, lambda history: next_rollout(history, application, version, policy, now)
        )

    def start(
        self, application: str, version: str, policy: RolloutPolicy, now: float,
        supersede: bool = False,
    ) -> Rollout:  # fmt: skip
        """A rollout an operator starts (``started_rollout``), written in one transaction:
        of two operators starting at once, the second sees the first's rollout."""
        return self._write(
            application,
            lambda history: started_rollout(history, application, version, policy, now, supersede),
        )

    def _write(self, application: str, plan: Callable[[list[Rollout]], Begun]) -> Rollout:
        """What ``plan`` makes of the application's history, written in one transaction."""
        with self._transaction() as db:
            rows = db.execute(HISTORY_SQL, (application,)).fetchall()
            begun = plan([rollout_of(r) for r in rows])
            write_begun(db.execute, application, begun)
            return begun.rollout

    def save(self, rollout: Rollout) -> bool:
        """Write ``rollout`` if the stored one is the revision it came from."""
        with self._transaction() as db:
            return db.execute(SAVE_SQL, save_args(rollout)).rowcount == 1

    def record(self, application: str, seq: int, device: str, record: DeviceRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO outcomes (application, seq, device, outcome, wave, at, before,"
                " swaps) VALUES (?,?,?,?,?,?,?,?)",
                (application, seq, device, record.outcome.value, record.wave, record.at,
                 record.before, record.swaps),
            )  # fmt: skip

    def records(
        self, application: str, seq: int, after: int = 0
    ) -> list[tuple[int, str, DeviceRecord]]:
        """Outcome transitions of one rollout after log id ``after``, oldest first."""
        with self._lock():
            rows = self._db.execute(
                "SELECT id, device, outcome, wave, at, before, swaps FROM outcomes"
                " WHERE application=? AND seq=? AND id>? ORDER BY id",
                (application, seq, after),
            ).fetchall()
        return [(int(row[0]), str(row[1]), record_of(row[2:])) for row in rows]

    def last(self, application: str, seq: int, device: str) -> DeviceRecord | None:
        """The device's newest outcome in one rollout."""
        with self._lock():
            row = self._db.execute(
                "SELECT outcome, wave, at, before, swaps FROM outcomes"
                " WHERE application=? AND seq=? AND device=? ORDER BY id DESC LIMIT 1",
                (application, seq, device),
            ).fetchone()
        return record_of(row) if row is not None else None

    def close(self) -> None:
        with self._lock():
            self._db.close()
