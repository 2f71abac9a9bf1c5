"""The collector: a fleet's resources read one at a time into Applications and Devices.

Each resource is validated as it comes (equal firmware specs once, credentials in Drogue's
formats, unknown spec sections warned about, names unique); the problems and warnings are
kept for :func:`ajour_build.core.fleet.load_fleet` to report together.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ajour_build.core.errors import Problem
from ajour_build.core.fleet_members import Application, Device, Origin
from ajour_build.core.spec.credentials import parse_credentials
from ajour_build.core.spec.document import Document, PathKey
from ajour_build.core.spec.firmware import Firmware
from ajour_build.core.spec.problems import (
    field_places,
    format_path,
    known_fields,
    problems_from_validation,
)
from ajour_build.core.spec.resource import Resource, quick_resource, unknown_spec_sections

_VOCABULARY = known_fields(Resource)
_PLACES = field_places(Resource)


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
class Collector:
    """What loading has read so far: members, problems, warnings and shared objects."""

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


def _validated(col: Collector, doc: Document, path: PathKey, raw: dict[str, Any]) -> Any:
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


def add_resource(col: Collector, doc: Document, path: PathKey, raw: Any) -> None:
    """One resource of ``doc`` (at ``path``) as an Application or Device, or a problem."""
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


def _keep_labels(col: Collector, key: tuple[str, str], metadata: dict[str, Any]) -> None:
    """A device's ``metadata.labels`` (validated as text), for rollout selectors."""
    labels = metadata.get("labels")
    if labels:
        col.labels[key] = labels


def _check_credentials(
    col: Collector, doc: Document, path: PathKey, raw: Any, stored: str, device: str
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


def _warn_sections(col: Collector, doc: Document, path: PathKey, spec: dict[str, Any]) -> None:
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


def check_device_apps(col: Collector) -> None:
    """A problem for each device whose application is not in the fleet."""
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
