"""What delivery observed per device, for ``ajour-delivery status`` and the console.

SQLite by default (one small table, WAL). The worker stays stateless: nothing here is read
to answer a device; every reply is computed from the device's own status.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ajour_build.core.wire import DeliveryState, DeviceReport

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
    def __init__(self, path: Path | str = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        with self._lock:
            if str(path) != ":memory:":
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)

    def observe(self, status: DeviceStatus) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO devices VALUES (?,?,?,?,?,?,?,?,?,?) "
                "ON CONFLICT(application, device) DO UPDATE SET current=excluded.current,"
                " target=excluded.target, offset=excluded.offset, size=excluded.size,"
                " state=excluded.state, source=excluded.source, detail=excluded.detail,"
                " last_seen=excluded.last_seen",
                (
                    status.application,
                    status.device,
                    status.current,
                    status.target,
                    status.offset,
                    status.size,
                    status.state,
                    status.source,
                    status.detail,
                    status.last_seen,
                ),
            )

    def counts(self) -> dict[str, int]:
        """Devices seen, per state."""
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

    def _select(self, where: str, args: tuple[str, ...]) -> list[DeviceStatus]:
        with self._lock:
            rows = self._db.execute(
                f"SELECT * FROM devices {where} ORDER BY application, device",
                args,
            ).fetchall()
        return [DeviceStatus(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def now() -> float:
    return time.time()
