"""The device status store: written off the hot path, read consistently, nothing lost."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ajour_build.core.wire import DeliveryState
from delivery.store import DeviceStatus, StatusStore


def status(device: str, offset: int) -> DeviceStatus:
    return DeviceStatus(
        "app", device, "1.0", "1.1", offset, 4096, DeliveryState.UPDATING, "container", "", 1.0
    )


def rows_on_disk(path: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT device, offset FROM devices ORDER BY device").fetchall()


def test_many_statuses_of_one_device_become_one_write_and_reads_see_them(tmp_path: Path) -> None:
    path = tmp_path / "devices.db"
    store = StatusStore(path, flush_interval=3600)  # no background flush during the test
    for offset in range(0, 4096, 512):
        store.observe(status("d1", offset))
    store.observe(status("d2", 0))
    assert rows_on_disk(path) == []  # nothing written on the hot path
    found = store.get("app", "d1")  # a read flushes first
    assert found is not None and found.offset == 3584
    assert rows_on_disk(path) == [("d1", 3584), ("d2", 0)]
    assert store.flush() == 0  # nothing left to write
    assert store.counts() == {"Updating": 2}
    store.close()


def test_close_writes_what_is_pending(tmp_path: Path) -> None:
    path = tmp_path / "devices.db"
    store = StatusStore(path, flush_interval=3600)
    store.observe(status("d9", 1024))
    store.close()
    assert rows_on_disk(path) == [("d9", 1024)]
    assert StatusStore(path).get("app", "d9") == status("d9", 1024)


def test_the_background_thread_writes_without_a_read(tmp_path: Path) -> None:
    path = tmp_path / "devices.db"
    store = StatusStore(path, flush_interval=0.05)
    store.observe(status("d1", 512))
    deadline = time.monotonic() + 5
    while rows_on_disk(path) != [("d1", 512)]:
        assert time.monotonic() < deadline, "the flusher did not write"
        time.sleep(0.02)
    store.close()
