"""A fleet: the Applications and Devices read from spec files, checked as a whole."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import JsonValue, ValidationError

from ajour_build.core.errors import Problem, SpecError
from ajour_build.core.spec.credentials import parse_credentials
from ajour_build.core.spec.document import (
    Document,
    DocumentError,
    PathKey,
    iter_spec_files,
    read_documents,
)
from ajour_build.core.spec.firmware import Firmware
from ajour_build.core.spec.problems import format_path, known_fields, problems_from_validation
from ajour_build.core.spec.resource import Resource, unknown_spec_sections

_VOCABULARY = known_fields(Resource)
log = logging.getLogger("ajour_build.core.fleet")
PLAINTEXT_NAMED = 10  # how many devices the plaintext warning names

# The installation config's file names (see ajour_build.config): never read as fleet specs.
CONFIG_NAMES = frozenset({"ajour.yaml", "ajour.yml"})


@dataclass(frozen=True)
class Origin:
    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass(frozen=True)
class Application:
    name: str
    firmware: Firmware | None
    credentials: JsonValue
    origin: Origin


@dataclass(frozen=True)
class Device:
    application: str
    name: str
    firmware: Firmware | None
    credentials: JsonValue
    origin: Origin
    application_ref: Origin | None = None


@dataclass(frozen=True)
class Fleet:
    applications: dict[str, Application]
    devices: dict[tuple[str, str], Device]
    warnings: tuple[Problem, ...] = ()
    _by_app: dict[str, tuple[Device, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        grouped: dict[str, list[Device]] = {}
        for key in sorted(self.devices):
            grouped.setdefault(key[0], []).append(self.devices[key])
        object.__setattr__(self, "_by_app", {a: tuple(ds) for a, ds in grouped.items()})

    def effective_firmware(self, application: str, device: str | None = None) -> Firmware | None:
        """A Device's own firmware spec overrides its Application's as a whole."""
        if device is not None:
            dev = self.devices.get((application, device))
            if dev is not None and dev.firmware is not None:
                return dev.firmware
        app = self.applications.get(application)
        return app.firmware if app is not None else None

    def devices_of(self, application: str) -> tuple[Device, ...]:
        """The application's devices, sorted by name (indexed once: O(1) per call)."""
        return self._by_app.get(application, ())


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    apps: dict[str, Application] = field(default_factory=dict)
    devices: dict[tuple[str, str], Device] = field(default_factory=dict)
    plaintext: list[str] = field(default_factory=list)  # devices with plain-text passwords


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


def _origin(doc: Document, path: PathKey) -> Origin:
    mark = doc.locate(path)
    return Origin(doc.file, mark.line if mark else None)


def _add(col: _Collector, doc: Document, path: PathKey, raw: Any) -> None:
    if not isinstance(raw, dict):
        col.problems.append(
            Problem(
                f"expected a resource mapping with metadata and spec, got {type(raw).__name__}",
                file=doc.file,
                line=_origin(doc, path).line,
                path=format_path(path) or "(document)",
            )
        )
        return
    try:
        res = Resource.model_validate(raw)
    except ValidationError as exc:
        col.problems.extend(problems_from_validation(exc, doc, path, _VOCABULARY))
        return
    for key in unknown_spec_sections(raw.get("spec")):
        mark = doc.locate((*path, "spec", key))
        col.warnings.append(
            Problem(
                f"spec section {key!r} is not read by Ajour",
                file=doc.file,
                line=mark.line if mark else None,
                path=format_path((*path, "spec", key)),
                hint="did you mean 'firmware'?",
            )
        )
    origin = _origin(doc, path)
    name = res.metadata.name
    if res.resolved_kind == "Application":
        if name in col.apps:
            col.problems.append(_duplicate(f"application {name!r}", origin, col.apps[name].origin))
            return
        col.apps[name] = Application(name, res.spec.firmware, res.spec.credentials, origin)
        return
    app = res.metadata.application or ""
    if (app, name) in col.devices:
        first = col.devices[(app, name)].origin
        col.problems.append(_duplicate(f"device {name!r} of application {app!r}", origin, first))
        return
    ref = _origin(doc, (*path, "metadata", "application"))
    col.devices[(app, name)] = Device(
        app, name, res.spec.firmware, res.spec.credentials, origin, ref
    )
    _check_credentials(col, doc, path, res.spec.credentials, f"{name}@{app}")


def _check_credentials(
    col: _Collector, doc: Document, path: PathKey, raw: Any, device: str
) -> None:
    """Drogue's credential formats, hashes included; problems never quote a secret."""
    credentials = parse_credentials(raw)
    for problem in credentials.problems:
        where = (*path, "spec", "credentials", *problem.path)
        mark = doc.locate(where)
        col.problems.append(
            Problem(
                problem.message,
                file=doc.file,
                line=mark.line if mark else None,
                path=format_path(where),
                hint=problem.hint,
            )
        )
    if credentials.plaintext:
        col.plaintext.append(device)


def _duplicate(what: str, origin: Origin, first: Origin) -> Problem:
    return Problem(
        f"{what} is defined twice (first at {first})",
        file=origin.file,
        line=origin.line,
        path="metadata.name",
        hint="names must be unique; rename or remove one of them",
    )


def _check_device_apps(col: _Collector) -> None:
    for (app, name), dev in sorted(col.devices.items()):
        if app in col.apps:
            continue
        close = difflib.get_close_matches(app, list(col.apps), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "define an Application with that name"
        where = dev.application_ref or dev.origin
        col.problems.append(
            Problem(
                f"device {name!r} names application {app!r}, which is not in the fleet",
                file=where.file,
                line=where.line,
                path="metadata.application",
                hint=hint,
            )
        )


def load_fleet(paths: list[Path]) -> Fleet:
    """Read every spec file under ``paths``; raise :class:`SpecError` with all problems."""
    col = _Collector()
    files = 0
    for path in paths:
        if not path.exists():
            col.problems.append(Problem("no such file or directory", file=str(path)))
    for file in iter_spec_files([p for p in paths if p.exists()], CONFIG_NAMES):
        files += 1
        try:
            docs = read_documents(file)
        except DocumentError as exc:
            col.problems.append(exc.problem)
            continue
        for doc in docs:
            for where, raw in _resources(doc):
                _add(col, doc, where, raw)
    if files == 0 and not col.problems:
        col.problems.append(
            Problem(
                "no .yaml, .yml or .json spec files found",
                file=", ".join(str(p) for p in paths),
                hint="point at a fleet directory or at spec files",
            )
        )
    _check_device_apps(col)
    if col.problems:
        raise SpecError(col.problems)
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
    return Fleet(col.apps, col.devices, tuple(col.warnings))
