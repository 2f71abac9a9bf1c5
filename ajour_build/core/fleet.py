"""A fleet: the Applications and Devices read from spec files, checked as a whole."""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ajour_build.core.errors import Problem, SpecError, problem_order
from ajour_build.core.fleet_collector import Collector, add_resource, check_device_apps
from ajour_build.core.fleet_members import Application, Device
from ajour_build.core.spec.document import (
    Document,
    DocumentError,
    PathKey,
    iter_documents,
    iter_spec_files,
)
from ajour_build.core.spec.firmware import Firmware

log = logging.getLogger("ajour_build.core.fleet")
PLAINTEXT_NAMED = 10  # how many devices the plaintext warning names

# The installation config's file names (see ajour_build.config): never read as fleet specs.
CONFIG_NAMES = frozenset({"ajour.yaml", "ajour.yml"})


def _by_application(devices: dict[tuple[str, str], Device]) -> dict[str, tuple[Device, ...]]:
    grouped: dict[str, list[Device]] = {}
    for key in sorted(devices):
        grouped.setdefault(key[0], []).append(devices[key])
    return {a: tuple(ds) for a, ds in grouped.items()}


@dataclass(frozen=True)
class Fleet:
    applications: dict[str, Application]
    devices: dict[tuple[str, str], Device]
    warnings: tuple[Problem, ...] = ()
    plaintext_devices: int = 0  # devices with plain-text passwords (logged as a warning)
    labels: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)  # if any
    _by_app: dict[str, tuple[Device, ...]] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def effective_firmware(self, application: str, device: str | None = None) -> Firmware | None:
        """A Device's own firmware spec overrides its Application's as a whole."""
        if device is not None:
            dev = self.devices.get((application, device))
            if dev is not None and dev.firmware is not None:
                return dev.firmware
        app = self.applications.get(application)
        return app.firmware if app is not None else None

    def devices_of(self, application: str) -> tuple[Device, ...]:
        """The application's devices, sorted by name (indexed on first use: O(1) per call)."""
        by_app = self._by_app
        if by_app is None:  # the delivery worker never asks: a million devices stay unsorted
            by_app = _by_application(self.devices)
            object.__setattr__(self, "_by_app", by_app)
        return by_app.get(application, ())


def _resources(doc: Document) -> Iterator[tuple[PathKey, Any]]:
    """A document is one resource, a list of them, or a ``{"items": [...]}`` list."""
    data = doc.data
    if isinstance(data, dict) and "items" in data and "metadata" not in data:
        items = data["items"]
        if isinstance(items, list):
            for i, item in enumerate(items):
                yield ("items", i), item
            return
    if isinstance(data, list):
        for i, item in enumerate(data):
            yield (i,), item
        return
    yield (), data


def _empty_file(file: Path) -> Problem:
    return Problem(
        "the file holds no resources (it is empty or only comments)",
        file=str(file),
        hint="add Applications or Devices, or remove the file",
    )


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Pause the cyclic garbage collector, which would walk the growing fleet again and
    again: loading builds no reference cycles, so reference counting frees it all."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def load_fleet(paths: list[Path]) -> Fleet:
    """Read every spec file under ``paths``; raise :class:`SpecError` with all problems."""
    with _no_cycle_collection():
        return _load(paths)


def _load(paths: list[Path]) -> Fleet:
    col = Collector()
    files = 0
    resources = 0
    for path in paths:
        if not path.exists():
            col.problems.append(Problem("no such file or directory", file=str(path)))
    for file in iter_spec_files([p for p in paths if p.exists()], CONFIG_NAMES):
        files += 1
        before = len(col.problems)
        documents = 0
        try:  # one document at a time: a large file is never in memory as a whole
            for doc in iter_documents(file):
                documents += 1
                data = doc.data
                if type(data) is dict and ("metadata" in data or "items" not in data):
                    add_resource(col, doc, (), data)  # one resource: most documents
                    continue
                for where, raw in _resources(doc):
                    add_resource(col, doc, where, raw)
        except DocumentError as exc:  # the file's resources before the error are kept
            col.problems.append(exc.problem)
        resources += documents
        if documents == 0 and len(col.problems) == before:
            col.warnings.append(_empty_file(file))
    if (files == 0 or resources == 0) and not col.problems:
        col.problems.append(
            Problem(
                "no .yaml, .yml or .json spec files found"
                if files == 0
                else "the spec files hold no Applications or Devices",
                file=", ".join(str(p) for p in paths),
                hint="point at a fleet directory or at spec files",
            )
        )
    check_device_apps(col)
    if col.problems:
        raise SpecError(sorted(col.problems, key=problem_order))
    if col.plaintext:
        named = ", ".join(col.plaintext[:PLAINTEXT_NAMED])
        more = len(col.plaintext) - PLAINTEXT_NAMED
        log.warning(
            "%d device(s) keep plain-text passwords in spec.credentials: %s%s; store hashes"
            " instead ({bcrypt: …} or {sha512: …}, made by `ajour-delivery hash-password`)",
            len(col.plaintext),
            named,
            f" and {more} more" if more > 0 else "",
        )
    return Fleet(col.apps, col.devices, tuple(col.warnings), len(col.plaintext), col.labels)
