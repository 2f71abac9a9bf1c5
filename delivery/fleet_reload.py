"""Fleet changes without a restart: the spec files are watched, and SIGHUP reloads at once.

A change (a file added, removed, or with a new size or mtime) reloads the whole fleet. A
fleet that loads is swapped in at once (one attribute assignment: a status being answered
finishes with the old one); added, changed and removed devices take effect from the next
status. A broken edit keeps the last good fleet, and the log says why, once per change.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ajour_build.core.errors import AjourError
from ajour_build.core.fleet import CONFIG_NAMES, Fleet, load_fleet
from ajour_build.core.spec.document import iter_spec_files
from delivery.targets import Targets
from delivery.worker import Worker

log = logging.getLogger(__name__)
Stamp = tuple[tuple[str, int, int], ...]


def stamp(paths: list[Path]) -> Stamp:
    """What identifies the fleet files' current content: names, sizes and mtimes."""
    found = []
    for file in iter_spec_files([p for p in paths if p.exists()], CONFIG_NAMES):
        try:
            info = file.stat()
        except OSError:
            continue  # removed while we looked: the next look sees it gone
        found.append((str(file), info.st_size, info.st_mtime_ns))
    return tuple(found)


class FleetReloader:
    """Keeps ``worker.targets`` in step with the fleet files under ``paths``."""

    def __init__(
        self,
        worker: Worker,
        paths: list[Path],
        make_targets: Callable[[Fleet], Targets],
        interval: float = 2.0,
    ) -> None:
        self.worker = worker
        self.paths = paths
        self.make_targets = make_targets
        self.interval = interval
        self.error = ""  # why the last change was not taken; "" when the fleet is current
        self._stamp = stamp(paths)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def check(self, force: bool = False) -> bool:
        """Reload if the files changed (or ``force``); True when a new fleet was swapped in."""
        with self._lock:
            current = stamp(self.paths)
            if current == self._stamp and not force:
                return False
            self._stamp = current
            try:
                targets = self.make_targets(load_fleet(self.paths))
            except AjourError as exc:
                self.error = str(exc)
                log.error("fleet change not taken, still serving the last good fleet: %s", exc)
                return False
            before = len(self.worker.targets.fleet.devices)
            self.worker.targets = targets
            self.error = ""
            log.warning("fleet reloaded: %d devices (was %d)", len(targets.fleet.devices), before)
            return True

    def reload_now(self) -> None:
        """Ask for a reload at once (what SIGHUP does); safe from a signal handler."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ajour-fleet-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            forced = self._wake.wait(self.interval)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.check(force=forced)
            except Exception:  # a reload bug must not end reloading
                log.exception("fleet reload failed")
