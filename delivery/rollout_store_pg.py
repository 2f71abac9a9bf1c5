"""The rollout store in PostgreSQL: delivery workers on several machines share rollouts.

``PostgresRolloutStore(dsn)`` keeps the semantics of ``SqliteRolloutStore`` (the row
conversions and what ``begin`` writes are shared in ``delivery/rollout_store.py``):

- ``save`` is a compare-and-set: ``UPDATE … WHERE revision = <the one it came from>``; two
  concurrent saves of one revision update one row, and PostgreSQL re-checks the second
  against the row the first wrote, so exactly one wins.
- ``begin`` runs in one transaction under a transaction-scoped advisory lock per
  application, and locks the application's rows (``FOR UPDATE``): two workers racing for a
  new version create one rollout, and a ``save`` in flight is not overwritten by the
  rollout being superseded.
- ``record`` takes an advisory lock per rollout, so outcome ids are committed in the order
  they are allocated and a reader that follows the log by id never skips one.
- The schema is created if missing, under an advisory lock (workers may start at once).

psycopg 3 is imported when a store is made (the ``delivery-postgres`` extra): a worker on
SQLite never loads it. One connection per store, one thread at a time, reconnected when it
breaks. ``connect_timeout``, ``statement_timeout`` and ``tcp_user_timeout`` bound every
call (unless the DSN sets them), so a database that is down or stuck raises
``StoreUnavailable`` within seconds; a server frozen while its kernel still acknowledges
(which defeats those three) is cut off by a client-side :class:`~delivery.watchdog.Watchdog`
after ``2 * timeout + 1`` seconds; after a failed connection attempt, calls fail at once
for ``retry`` seconds instead of each waiting again. Messages show the DSN without its
password, and any copy of the password a driver message contains is replaced.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from ajour_build.core.rollout.model import DeviceRecord, Rollout
from ajour_build.core.spec.fields import redact_uri
from ajour_build.core.spec.rollout import RolloutPolicy
from delivery.errors import DeliveryError
from delivery.rollout_store import (
    COLUMNS,
    HISTORY_SQL,
    SAVE_SQL,
    Begun,
    StoreUnavailable,
    next_rollout,
    record_of,
    rollout_of,
    save_args,
    started_rollout,
    write_begun,
)
from delivery.watchdog import Watchdog

if TYPE_CHECKING:
    import psycopg

    Connection = psycopg.Connection[tuple[Any, ...]]

EXTRA = "pip install 'ajour[delivery-postgres]'"

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS rollouts (
    application TEXT NOT NULL, seq INTEGER NOT NULL, from_version TEXT NOT NULL,
    to_version TEXT NOT NULL, policy TEXT NOT NULL, created DOUBLE PRECISION NOT NULL,
    state TEXT NOT NULL, wave INTEGER NOT NULL, wave_started TEXT NOT NULL,
    reason TEXT NOT NULL, criteria_since DOUBLE PRECISION NOT NULL, revision INTEGER NOT NULL,
    PRIMARY KEY (application, seq))""",
    """CREATE TABLE IF NOT EXISTS rollout_outcomes (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, application TEXT NOT NULL,
    seq INTEGER NOT NULL, device TEXT NOT NULL, outcome TEXT NOT NULL, wave INTEGER NOT NULL,
    at DOUBLE PRECISION NOT NULL, before TEXT NOT NULL, swaps INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS rollout_outcomes_by_rollout"
    " ON rollout_outcomes (application, seq, id)",
    "CREATE INDEX IF NOT EXISTS rollout_outcomes_by_device"
    " ON rollout_outcomes (application, seq, device, id)",
)
_OUTCOME_COLUMNS = "outcome, wave, at, before, swaps"
_QUERY_PASSWORD = re.compile(r"(?<![A-Za-z0-9_])password=([^&\s]*)")


def _pg(sql: str) -> str:
    """A statement of ``delivery.rollout_store`` in psycopg's placeholders."""
    return sql.replace("?", "%s")


def _key(*parts: object) -> int:
    """A 64-bit advisory lock key for ``parts`` (collisions only serialize more)."""
    digest = hashlib.sha256("\0".join(["ajour-rollouts", *map(str, parts)]).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def shown(dsn: str) -> str:
    """``dsn`` as it may be logged: no user info, no ``password=`` parameter."""
    return _QUERY_PASSWORD.sub("password=***", redact_uri(dsn))


def _passwords(dsn: str) -> list[str]:
    """Every spelling of the DSN's password (as written and decoded), longest first."""
    written = [m.group(1) for m in _QUERY_PASSWORD.finditer(dsn)]
    found = re.match(r"[A-Za-z][A-Za-z0-9+.-]*://([^/@]*)@", dsn)
    if found and ":" in found.group(1):
        written.append(found.group(1).partition(":")[2])
    forms = {form for w in written for form in (w, unquote(w)) if form}
    return sorted(forms, key=len, reverse=True)


class PostgresRolloutStore:
    def __init__(
        self, dsn: str, timeout: float = 10.0, connect_timeout: int = 5, retry: float = 1.0
    ) -> None:
        self._passwords = _passwords(dsn)
        self.location = shown(self._clean(dsn))  # the DSN as messages show it
        try:
            import psycopg
            from psycopg.conninfo import conninfo_to_dict, make_conninfo
        except ImportError as exc:
            raise DeliveryError(
                f"rollout database {self.location}: PostgreSQL needs psycopg: {EXTRA}"
            ) from exc
        self._connect = psycopg.Connection.connect
        self._errors = psycopg.Error
        try:
            params = conninfo_to_dict(dsn)
        except psycopg.Error as exc:
            raise DeliveryError(
                f"rollout database {self.location}: {self._clean(str(exc))}; write"
                " postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"
            ) from None
        self._passwords = sorted(
            {*self._passwords, str(params.get("password") or "")} - {""}, key=len, reverse=True
        )  # as libpq read it, too (a quoted key=value password)
        self.location = shown(self._clean(dsn))
        params.setdefault("connect_timeout", str(connect_timeout))
        params.setdefault("tcp_user_timeout", str(int(timeout * 1000)))
        params.setdefault("application_name", "ajour-delivery")
        options = str(params.get("options") or "")
        if "statement_timeout" not in options:
            params["options"] = f"{options} -c statement_timeout={int(timeout * 1000)}".strip()
        self._conninfo = make_conninfo("", **params)
        # no server-side prepared statements: they break behind PgBouncer's transaction mode
        self._options: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        self._retry = retry
        self._mutex = threading.Lock()
        self._db: Connection | None = None
        self._closed = False
        self._failed_at, self._failure = -retry, ""
        self._watchdog = Watchdog(2 * timeout + 1, name="rollout-db-watchdog")

    def _clean(self, text: str) -> str:
        """``text`` on one line, without the password."""
        text = " ".join(text.split())
        for password in self._passwords:
            text = text.replace(password, "***")
        return text

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = self._clean(str(exc)) or type(exc).__name__
        return StoreUnavailable(f"rollout database {self.location}: {reason}")

    def _open(self) -> Connection:
        """The connection, made (with the schema) if there is none or it broke."""
        db = self._db
        if db is not None and not db.closed:  # closed: also when it broke
            return db
        self._db = None
        if self._closed:
            raise StoreUnavailable(f"rollout database {self.location}: the store is closed")
        if time.monotonic() - self._failed_at < self._retry:
            raise StoreUnavailable(self._failure)
        db = None
        try:
            db = self._connect(self._conninfo, **self._options)
            with self._watched(db), db.transaction():
                found = db.execute(
                    "SELECT to_regclass('rollouts') IS NOT NULL"
                    " AND to_regclass('rollout_outcomes') IS NOT NULL"
                ).fetchone()
                if not (found and found[0]):
                    db.execute("SELECT pg_advisory_xact_lock(%s)", (_key("schema"),))
                    for statement in _SCHEMA:
                        db.execute(statement)
        except self._errors as exc:
            if db is not None:
                db.close()
            error = self._unavailable(exc)
            self._failed_at, self._failure = time.monotonic(), str(error)
            raise error from None
        self._db = db
        return db

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        """The connection, to one thread at a time; driver errors as StoreUnavailable (a
        connection that broke is replaced by the next call)."""
        with self._mutex:
            db = self._open()
            try:
                with self._watched(db):
                    yield db
            except self._errors as exc:
                raise self._unavailable(exc) from None

    @contextmanager
    def _watched(self, db: Connection) -> Iterator[None]:
        """The calls on ``db``, ended by the watchdog if the server stops answering (the
        driver's error then says so)."""
        call = self._watchdog.arm(db.pgconn.socket)
        try:
            yield
        except self._errors as exc:
            if self._watchdog.disarm(call):
                db.close()
                raise self._errors(
                    f"no answer within {self._watchdog.limit:g}s: the server is stuck; the"
                    " connection was closed and the next call makes a new one"
                ) from exc
            raise
        finally:
            self._watchdog.disarm(call)

    def latest(self, application: str) -> Rollout | None:
        with self._connection() as db:
            row = db.execute(
                f"SELECT {COLUMNS} FROM rollouts WHERE application=%s ORDER BY seq DESC LIMIT 1",
                (application,),
            ).fetchone()
        return rollout_of(row) if row else None

    def history(self, application: str) -> list[Rollout]:
        with self._connection() as db:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM rollouts WHERE application=%s ORDER BY seq",
                (application,),
            ).fetchall()
        return [rollout_of(r) for r in rows]

    def begin(self, application: str, version: str, policy: RolloutPolicy, now: float) -> Rollout:
        """The rollout to ``version`` (``next_rollout``), written in one transaction that
        holds the application's advisory lock and its rows."""
        return self._write(
            application, lambda history: next_rollout(history, application, version, policy, now)
        )

    def start(
        self, application: str, version: str, policy: RolloutPolicy, now: float,
        supersede: bool = False,
    ) -> Rollout:  # fmt: skip
        """A rollout an operator starts (``started_rollout``), under the same lock as
        ``begin``: of two operators starting at once, the second sees the first's rollout."""
        return self._write(
            application,
            lambda history: started_rollout(history, application, version, policy, now, supersede),
        )

    def _write(self, application: str, plan: Callable[[list[Rollout]], Begun]) -> Rollout:
        """What ``plan`` makes of the application's history, written in one transaction."""
        with self._connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_key("begin", application),))
            rows = db.execute(_pg(HISTORY_SQL) + " FOR UPDATE", (application,)).fetchall()
            begun = plan([rollout_of(r) for r in rows])
            write_begun(lambda sql, args: db.execute(_pg(sql), args), application, begun)
        return begun.rollout

    def save(self, rollout: Rollout) -> bool:
        """Write ``rollout`` if the stored one is the revision it came from."""
        with self._connection() as db:
            return db.execute(_pg(SAVE_SQL), save_args(rollout)).rowcount == 1

    def record(self, application: str, seq: int, device: str, record: DeviceRecord) -> None:
        with self._connection() as db, db.transaction():
            db.execute("SELECT pg_advisory_xact_lock(%s)", (_key("record", application, seq),))
            db.execute(
                f"INSERT INTO rollout_outcomes (application, seq, device, {_OUTCOME_COLUMNS})"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (application, seq, device, record.outcome.value, record.wave, record.at,
                 record.before, record.swaps),
            )  # fmt: skip

    def records(
        self, application: str, seq: int, after: int = 0
    ) -> list[tuple[int, str, DeviceRecord]]:
        """Outcome transitions of one rollout after log id ``after``, oldest first."""
        with self._connection() as db:
            rows = db.execute(
                f"SELECT id, device, {_OUTCOME_COLUMNS} FROM rollout_outcomes"
                " WHERE application=%s AND seq=%s AND id>%s ORDER BY id",
                (application, seq, after),
            ).fetchall()
        return [(int(row[0]), str(row[1]), record_of(row[2:])) for row in rows]

    def last(self, application: str, seq: int, device: str) -> DeviceRecord | None:
        """The device's newest outcome in one rollout."""
        with self._connection() as db:
            row = db.execute(
                f"SELECT {_OUTCOME_COLUMNS} FROM rollout_outcomes"
                " WHERE application=%s AND seq=%s AND device=%s ORDER BY id DESC LIMIT 1",
                (application, seq, device),
            ).fetchone()
        return record_of(row) if row is not None else None

    def close(self) -> None:
        with self._mutex:
            self._closed = True
            if self._db is not None:
                self._db.close()
                self._db = None
        self._watchdog.close()
