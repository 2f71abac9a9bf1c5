"""What delivery observed per device, for ``ajour-delivery status`` and the console.

SQLite by default (one small table, WAL). The worker stays stateless: nothing here is read
to answer a device; every reply is computed from the device's own status.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ajour_build.core.wire import DeliveryState, DeviceReport

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    application TEXT NOT NULL,
    device TEXT NOT NULL,
    current TEXT NOT NULL,
    target TEXT,
    offset INTEGER,
    size INTEGER,
    state TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT '',
    detail TEXT NOT NULL DEFAULT '',
    last_seen REAL NOT NULL,
    PRIMARY KEY (application, device)
)
"""


_Row = tuple[str, str, str, str | None, int | None, int | None, str, str, str, float]
"""A row of the ``devices`` table, in its column order."""


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    application: str
    device: str
    current: str
    target: str | None
    offset: int | None
    size: int | None
    state: DeliveryState
    source: str
    detail: str
    last_seen: float

    def report(self) -> DeviceReport:
        """As the status JSON carries it (``ajour_build.core.wire``)."""
        return DeviceReport.model_construct(
            application=self.application,
            device=self.device,
            current=self.current,
            target=self.target,
            offset=self.offset,
            size=self.size,
            state=DeliveryState(self.state),
            source=self.source,
            detail=self.detail,
            last_seen=self.last_seen,
        )


class StatusStore:
    """Device statuses in SQLite, written off the hot path.

    ``observe`` only records the newest status per device in memory (a dict assignment
    under a lock); a background thread writes what piled up every ``flush_interval``
    seconds in one transaction, so a device that polls ten times between two flushes costs
    one row write. Reads flush first: they always see every status observed before them.
    """

    _UPSERT = (
        "INSERT INTO devices VALUES (?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(application, device) DO UPDATE SET current=excluded.current,"
        " target=excluded.target, offset=excluded.offset, size=excluded.size,"
        " state=excluded.state, source=excluded.source, detail=excluded.detail,"
        " last_seen=excluded.last_seen"
    )

    def __init__(self, path: Path | str = ":memory:", flush_interval: float = 0.25) -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()  # the connection
        self._pending: dict[tuple[str, str], _Row] = {}
        self._pending_lock = threading.Lock()
        self._flush_interval = flush_interval
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._flusher: threading.Thread | None = None
        with self._lock:
            if str(path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)

    def observe(self, status: DeviceStatus) -> None:
        self._put(
            (status.application, status.device, status.current, status.target, status.offset,
             status.size, status.state, status.source, status.detail, status.last_seen)
        )  # fmt: skip

    def record(
        self,
        application: str,
        device: str,
        observed: tuple[str, str | None, int | None, int | None, str],
        source: str,
        detail: str,
    ) -> None:
        """What the worker saw of one exchange (``Reply.observed``), seen now."""
        self._put((application, device, *observed, source, detail, time.time()))

    def _put(self, row: _Row) -> None:
        with self._pending_lock:
            self._pending[(row[0], row[1])] = row
            if self._flusher is None and not self._closed.is_set():
                self._flusher = threading.Thread(
                    target=self._run, name="ajour-status-store", daemon=True
                )
                self._flusher.start()

    def flush(self) -> int:
        """Write the statuses observed since the last flush; how many rows."""
        with self._pending_lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return 0
        rows = list(batch.values())
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(self._UPSERT, rows)
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._db.execute("ROLLBACK")
                raise
        return len(rows)

    def _run(self) -> None:
        while not self._closed.wait(self._flush_interval):
            try:
                self.flush()
            except sqlite3.Error as exc:  # keep observing; the next flush tries again
                log.error("device status store: write failed: %s", exc)

    def counts(self) -> dict[str, int]:
        """Devices seen, per state."""
        self.flush()
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM devices GROUP BY state").fetchall()
        return {str(state): int(n) for state, n in rows}

    def get(self, application: str, device: str) -> DeviceStatus | None:
        rows = self._select("WHERE application=? AND device=?", (application, device))
        return rows[0] if rows else None

    def devices(self, application: str | None = None) -> list[DeviceStatus]:
        if application is None:
            return self._select("", ())
        return self._select("WHERE application=?", (application,))

    def updating(self, application: str, target: str) -> set[str]:
        """Devices of ``application`` whose last status was answered toward ``target``
        with a download or a swap (state Updating)."""
        self.flush()
        with self._lock:
            rows = self._db.execute(
                "SELECT device FROM devices WHERE application=? AND state=? AND target=?",
                (application, DeliveryState.UPDATING.value, target),
            ).fetchall()
        return {str(row[0]) for row in rows}

    def _select(self, where: str, args: tuple[str, ...]) -> list[DeviceStatus]:
        self.flush()
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM devices {where} ORDER BY application, device",
                args,
            ).fetchall()
        return [DeviceStatus(*row) for row in rows]

    def close(self) -> None:
        self._closed.set()
        if self._flusher is not None:
            self._flusher.join(5)
        self.flush()
        with self._lock:
            self._db.close()


def now() -> float:
    return time.time()
