"""Fleet changes take effect without a restart; a broken edit keeps the last good fleet."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from ajour_build.core.fleet import Fleet, load_fleet
from delivery.fleet_reload import FleetReloader
from delivery.protocol import Status, Wait, decode_command, encode_status
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker

APP = """\
kind: Application
metadata: {name: app}
spec: {firmware: {file: {name: fw}}}
"""


def device(name: str) -> str:
    return f"---\nkind: Device\nmetadata: {{name: {name}, application: app}}\n"


def write(path: Path, text: str) -> None:
    path.write_text(text)
    stamp = time.time_ns() + 1_000_000_000  # a new mtime even within one clock tick
    os.utime(path, ns=(stamp, stamp))


def answer(worker: Worker, name: str) -> object:
    reply = worker.handle("app", name, encode_status(Status(b"1.0")))
    return None if reply is None else decode_command(reply)


def test_added_changed_removed_and_broken(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    spec = fleet_dir / "fleet.yaml"
    write(spec, APP + device("d1"))

    def make(fleet: Fleet) -> Targets:
        return Targets(fleet, "127.0.0.1:1/ajour", tmp_path / "files", ttl=1)

    worker = Worker(make(load_fleet([fleet_dir])), StatusStore())
    reloader = FleetReloader(worker, [fleet_dir], make)
    assert isinstance(answer(worker, "d1"), Wait) and answer(worker, "d2") is None
    assert not reloader.check()  # nothing changed

    write(spec, APP + device("d2"))  # d1 removed, d2 added
    assert reloader.check()
    assert answer(worker, "d1") is None and isinstance(answer(worker, "d2"), Wait)

    caplog.set_level(logging.ERROR)
    write(spec, APP + device("d2") + "---\nkind: Device\nmetadata: {name: d3}\n")  # no app
    assert not reloader.check()
    assert "still serving the last good fleet" in caplog.text and reloader.error
    assert isinstance(answer(worker, "d2"), Wait)  # the last good fleet goes on

    assert not reloader.check()  # no new change: nothing to say again
    write(spec, APP + device("d2"))  # fixed
    (fleet_dir / "more.yaml").write_text(device("d4").lstrip("-\n"))
    assert reloader.check() and reloader.error == ""
    assert isinstance(answer(worker, "d4"), Wait)


def test_a_signal_style_request_reloads_in_the_background(tmp_path: Path) -> None:
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir()
    write(fleet_dir / "f.yaml", APP + device("d1"))

    def make(fleet: Fleet) -> Targets:
        return Targets(fleet, "127.0.0.1:1/ajour", tmp_path / "files", ttl=1)

    worker = Worker(make(load_fleet([fleet_dir])), StatusStore())
    reloader = FleetReloader(worker, [fleet_dir], make, interval=60)
    reloader.start()
    try:
        write(fleet_dir / "f.yaml", APP + device("d1") + device("d9"))
        reloader.reload_now()
        deadline = time.monotonic() + 10
        while answer(worker, "d9") is None:
            assert time.monotonic() < deadline, "the reload did not happen"
            time.sleep(0.02)
    finally:
        reloader.stop()
