"""A fleet: the Applications and Devices read from spec files, checked as a whole."""

from __future__ import annotations

import difflib
import gc
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

from pydantic import JsonValue, ValidationError

from ajour_build.core.errors import Problem, SpecError, problem_order
from ajour_build.core.spec.credentials import parse_credentials
from ajour_build.core.spec.document import (
    Document,
    DocumentError,
    PathKey,
    iter_documents,
    iter_spec_files,
)
from ajour_build.core.spec.firmware import Firmware
from ajour_build.core.spec.problems import (
    field_places,
    format_path,
    known_fields,
    problems_from_validation,
)
from ajour_build.core.spec.resource import Resource, quick_resource, unknown_spec_sections
from ajour_build.core.spec.rollout import RolloutPolicy

_VOCABULARY = known_fields(Resource)
_PLACES = field_places(Resource)
log = logging.getLogger("ajour_build.core.fleet")
PLAINTEXT_NAMED = 10  # how many devices the plaintext warning names

# The installation config's file names (see ajour_build.config): never read as fleet specs.
CONFIG_NAMES = frozenset({"ajour.yaml", "ajour.yml"})


@dataclass(frozen=True, slots=True)
class Origin:
    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


def _thaw(stored: str | None) -> JsonValue:
    """Credentials as they were in the spec: a new copy of the JSON value each time."""
    return None if stored is None else cast(JsonValue, json.loads(stored))


@dataclass(frozen=True, slots=True)
class Application:
    """An Application. ``credentials`` are kept as compact JSON text, never in ``repr``."""

    name: str
    firmware: Firmware | None
    stored_credentials: str | None = field(repr=False)
    origin: Origin
    rollout: RolloutPolicy | None = None

    @property
    def credentials(self) -> JsonValue:
        return _thaw(self.stored_credentials)


class Device(NamedTuple):
    """A Device: small and quick to build, as a fleet holds a million of them.

    ``firmware`` is its own spec (None: it inherits the Application's), one object shared
    by every device with an equal spec. ``credentials`` are kept as compact JSON text and
    given out as the JSON value they were (a new copy on each access); they are never part
    of ``repr``. See docs/performance.md, "Fleet scale benchmark".
    """

    application: str
    name: str
    firmware: Firmware | None
    stored_credentials: str | None
    file: str
    line: int | None

    @property
    def credentials(self) -> JsonValue:
        return _thaw(self.stored_credentials)

    @property
    def origin(self) -> Origin:
        return Origin(self.file, self.line)

    def __repr__(self) -> str:
        return (
            f"Device(application={self.application!r}, name={self.name!r},"
            f" firmware={self.firmware!r}, origin={self.origin})"
        )


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


def _freeze(value: Any) -> Any:
    """A hashable key that tells apart every input the firmware models read differently."""
    kind = type(value)
    if kind is str:
        return value
    if kind is dict:
        return (dict, tuple((k, _freeze(v)) for k, v in value.items()))
    if kind is list:
        return (list, tuple(_freeze(v) for v in value))
    return (kind, getattr(value, "raw", None), value)


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    apps: dict[str, Application] = field(default_factory=dict)
    devices: dict[tuple[str, str], Device] = field(default_factory=dict)
    # where devices named an application not (yet) seen: only they can need it
    app_refs: dict[tuple[str, str], Origin] = field(default_factory=dict)
    # equal inputs share one object: firmware specs, credentials, application names
    firmware: dict[Any, Firmware] = field(default_factory=dict)
    shared: dict[str, str] = field(default_factory=dict)
    plaintext: list[str] = field(default_factory=list)  # devices with plain-text passwords
    # applications that are in the fleet but invalid: devices naming them are not orphans
    invalid_apps: set[str] = field(default_factory=set)
    labels: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)

    def firmware_of(self, raw: Any) -> Firmware | None:
        """``raw`` validated, once per distinct spec; raises ValidationError."""
        if raw is None:
            return None
        key = _freeze(raw)
        found = self.firmware.get(key)
        if found is None:
            found = self.firmware[key] = Firmware.model_validate(raw)
        return found

    def share(self, text: str) -> str:
        return self.shared.setdefault(text, text)

    @staticmethod
    def plain_pass(value: Any) -> bool:
        """True for Drogue's usual ``{"credentials": [{"pass": "<text>"}]}``."""
        try:
            (entry,) = value["credentials"]
            password = entry["pass"]
        except (TypeError, KeyError, ValueError, IndexError):
            return False
        return (
            type(value) is dict
            and len(value) == 1
            and type(value["credentials"]) is list
            and type(entry) is dict
            and len(entry) == 1
            and type(password) is str
        )

    def credentials(self, value: Any) -> str:
        """``value`` as compact JSON text, as ``json.dumps`` writes it (equal texts shared)."""
        if self.plain_pass(value):  # without the encoder
            password = value["credentials"][0]["pass"]
            stored = f"{_PLAIN_PASS}{_encode_text(password)}}}]}}"
        else:
            stored = _COMPACT.encode(value)
        return self.share(stored) if len(stored) < 256 else stored


_PLAIN_PASS = '{"credentials":[{"pass":'
_COMPACT = json.JSONEncoder(separators=(",", ":"))
_encode_text: Callable[[str], str] = json.encoder.encode_basestring_ascii


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


def _validated(col: _Collector, doc: Document, path: PathKey, raw: dict[str, Any]) -> Any:
    """``(kind, name, application, firmware, credentials)`` by Resource, None after a problem."""
    try:
        res = Resource.model_validate(raw)
    except ValidationError as exc:
        col.problems.extend(problems_from_validation(exc, doc, path, _VOCABULARY, _PLACES))
        meta = raw.get("metadata")
        if type(meta) is dict and type(meta.get("name")) is str and "application" not in meta:
            col.invalid_apps.add(meta["name"])
        return None
    meta, spec = res.metadata, res.spec
    kind = res.resolved_kind
    return kind, meta.name, meta.application, spec.firmware, spec.credentials, spec.rollout


def _add(col: _Collector, doc: Document, path: PathKey, raw: Any) -> None:
    if not isinstance(raw, dict):
        col.problems.append(
            Problem(
                f"expected a resource mapping with metadata and spec, got {type(raw).__name__}",
                file=doc.file,
                line=doc.line_of(path),
                path=format_path(path) or "(document)",
            )
        )
        return
    found: Any = quick_resource(raw)
    if found is not None:
        try:
            firmware = None if found[3] is None else col.firmware_of(found[3])
            found = (*found[:3], firmware, found[4], None)
        except ValidationError:
            found = None  # Resource names the problem with its full path
    if found is None:
        found = _validated(col, doc, path, raw)
        if found is None:
            return
    kind, name, app, firmware, raw_credentials, rollout = found
    spec = raw.get("spec")
    if type(spec) is dict and not _QUIET_SECTIONS.issuperset(spec):
        _warn_sections(col, doc, path, spec)
    line = doc.line_of(path)
    credentials = None if raw_credentials is None else col.credentials(raw_credentials)
    if kind == "Application":
        origin = Origin(doc.file, line)
        if name in col.apps:
            col.problems.append(_duplicate(f"application {name!r}", origin, col.apps[name].origin))
            return
        col.apps[name] = Application(col.share(name), firmware, credentials, origin, rollout)
        return
    app = col.share(app)
    key = (app, name)
    devices = col.devices
    if key in devices:
        what = f"device {name!r} of application {app!r}"
        col.problems.append(_duplicate(what, Origin(doc.file, line), devices[key].origin))
        return
    if app not in col.apps:
        col.app_refs[key] = Origin(doc.file, doc.line_of((*path, "metadata", "application")))
    devices[key] = Device(app, name, firmware, credentials, doc.file, line)
    _keep_labels(col, key, raw["metadata"])
    if credentials is not None:
        _check_credentials(col, doc, path, raw_credentials, credentials, f"{name}@{app}")


def _keep_labels(col: _Collector, key: tuple[str, str], metadata: dict[str, Any]) -> None:
    """A device's ``metadata.labels`` (validated as text), for rollout selectors."""
    labels = metadata.get("labels")
    if labels:
        col.labels[key] = labels


def _check_credentials(
    col: _Collector, doc: Document, path: PathKey, raw: Any, stored: str, device: str
) -> None:
    """Drogue's credential formats, hashes included; problems never quote a secret."""
    if stored.startswith(_PLAIN_PASS) and col.plain_pass(raw):
        col.plaintext.append(device)  # the usual one plain password: nothing to parse
        return
    parsed = parse_credentials(raw)
    for problem in parsed.problems:
        where = (*path, "spec", "credentials", *problem.path)
        col.problems.append(
            Problem(
                problem.message,
                file=doc.file,
                line=doc.line_of(where),
                path=format_path(where),
                hint=problem.hint,
            )
        )
    if parsed.plaintext:
        col.plaintext.append(device)


_QUIET_SECTIONS = frozenset({"firmware", "credentials"})


def _warn_sections(col: _Collector, doc: Document, path: PathKey, spec: dict[str, Any]) -> None:
    for key in unknown_spec_sections(spec):
        col.warnings.append(
            Problem(
                f"spec section {key!r} is not read by Ajour",
                file=doc.file,
                line=doc.line_of((*path, "spec", key)),
                path=format_path((*path, "spec", key)),
                hint="did you mean 'firmware'?",
            )
        )


def _duplicate(what: str, origin: Origin, first: Origin) -> Problem:
    return Problem(
        f"{what} is defined twice (first at {first})",
        file=origin.file,
        line=origin.line,
        path="metadata.name",
        hint="names must be unique; rename or remove one of them",
    )


def _check_device_apps(col: _Collector) -> None:
    known = col.apps.keys() | col.invalid_apps
    missing = sorted(key for key in col.app_refs if key[0] not in known)
    for app, name in missing:
        close = difflib.get_close_matches(app, list(col.apps), n=1)
        hint = f"did you mean {close[0]!r}?" if close else "define an Application with that name"
        where = col.app_refs[(app, name)]
        col.problems.append(
            Problem(
                f"device {name!r} names application {app!r}, which is not in the fleet",
                file=where.file,
                line=where.line,
                path="metadata.application",
                hint=hint,
            )
        )


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
    col = _Collector()
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
                    _add(col, doc, (), data)  # one resource: most documents
                    continue
                for where, raw in _resources(doc):
                    _add(col, doc, where, raw)
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
    _check_device_apps(col)
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
