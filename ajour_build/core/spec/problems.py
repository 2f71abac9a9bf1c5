"""Turning pydantic validation errors into located, human :class:`Problem` s."""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

from pydantic import BaseModel, ValidationError

from ajour_build.core.errors import Problem
from ajour_build.core.spec.document import Document, PathKey

_PREFIXES = ("Value error, ", "Assertion failed, ")


def format_path(path: PathKey) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


def _data_path(data: Any, loc: tuple[str | int, ...]) -> PathKey:
    """Keep the loc items that index into the input (drops union/validator tags)."""
    path: list[str | int] = []
    node = data
    for item in loc:
        if isinstance(node, dict) and item in node:
            path.append(item)
            node = node[item]
        elif isinstance(node, list | tuple) and isinstance(item, int) and 0 <= item < len(node):
            path.append(item)
            node = node[item]
        elif isinstance(node, dict) and isinstance(item, str) and item == "container":
            # Drogue's older ``oci`` key is read as ``container``
            if "oci" in node:
                path.append("oci")
                node = node["oci"]
    return tuple(path)


def known_fields(*models: type[BaseModel]) -> list[str]:
    names: set[str] = set()
    stack = list(models)
    seen: set[type[BaseModel]] = set()
    while stack:
        model = stack.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            names.add(info.alias or name)
            for arg in _model_args(info.annotation):
                stack.append(arg)
    return sorted(names)


def _model_args(annotation: Any) -> list[type[BaseModel]]:
    found: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        found.append(annotation)
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_model_args(arg))
    return found


def field_places(*models: type[BaseModel]) -> dict[str, tuple[str, ...]]:
    """Where each field name is valid: its parent paths (``spec.firmware``; ``env[]``)."""
    places: dict[str, list[str]] = {}
    stack: list[tuple[type[BaseModel], str, int]] = [(m, "", 0) for m in models]
    while stack:
        model, prefix, depth = stack.pop()
        for name, info in model.model_fields.items():
            key = info.alias or name
            places.setdefault(key, []).append(prefix or "the top level")
            if depth < 12:
                for arg, many in _nested(info.annotation):
                    child = f"{prefix}.{key}" if prefix else key
                    stack.append((arg, child + ("[]" if many else ""), depth + 1))
    return {k: tuple(sorted(set(v))) for k, v in places.items()}


def _nested(annotation: Any, many: bool = False) -> list[tuple[type[BaseModel], bool]]:
    """The models inside ``annotation``, and whether they sit in a list."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [(annotation, many)]
    origin = getattr(annotation, "__origin__", None)
    in_list = many or origin in (list, tuple)
    found: list[tuple[type[BaseModel], bool]] = []
    for arg in getattr(annotation, "__args__", ()) or ():
        found.extend(_nested(arg, in_list))
    return found


class PlacedValueError(ValueError):
    """A validator's error about one field below the model that raises it (``path``)."""

    def __init__(self, path: PathKey, message: str) -> None:
        super().__init__(message)
        self.path = path


def problems_from_validation(
    exc: ValidationError,
    doc: Document,
    base: PathKey,
    vocabulary: list[str],
    places: dict[str, tuple[str, ...]] | None = None,
) -> list[Problem]:
    """Located problems for ``exc``, raised validating ``doc.data`` at ``base``.

    ``places`` (from :func:`field_places`) lets an unknown field that is valid elsewhere
    say where it belongs.
    """
    node: Any = doc.data
    for part in base:
        node = node[part]
    by_path: dict[PathKey, list[tuple[bool, str, str | None]]] = {}
    for err in exc.errors(include_url=False):
        rel = _data_path(node, tuple(err["loc"]))
        msg, hint, ours = _describe(err, vocabulary, places or {})
        if err["type"] == "extra_forbidden":
            rel = (*_data_path(node, tuple(err["loc"])[:-1]), str(err["loc"][-1]))
        placed = (err.get("ctx") or {}).get("error")
        if isinstance(placed, PlacedValueError):
            rel = (*rel, *placed.path)
        by_path.setdefault(rel, []).append((ours, msg, hint))
    problems: list[Problem] = []
    for rel, entries in by_path.items():
        if any(ours for ours, _, _ in entries):
            entries = [e for e in entries if e[0]]
        entries = _merge_types(entries)
        seen: set[str] = set()
        for _, msg, hint in entries:
            if msg in seen:
                continue
            seen.add(msg)
            full = (*base, *rel)
            mark = doc.locate(full)
            problems.append(
                Problem(
                    msg,
                    file=doc.file,
                    line=mark.line if mark else None,
                    column=mark.column if mark else None,
                    path=format_path(full) or "(document)",
                    hint=hint,
                )
            )
    return problems


# pydantic's type errors, said as what the spec expects
_EXPECTED = {
    "tuple_type": "a list",
    "list_type": "a list",
    "string_type": "text",
    "dict_type": "a mapping (key: value)",
    "model_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
}
_EXPECT_PREFIX = "expected "


def got(value: Any) -> str:
    """``value`` as the reader wrote it: "the text '--board x'", "a mapping", "null"."""
    raw = getattr(value, "raw", None)
    if isinstance(value, bool):
        return f"the boolean {'true' if value else 'false'}"
    if raw is not None or isinstance(value, int | float):
        return f"the number {raw if raw is not None else value}"
    if isinstance(value, str):
        return f"the text {value!r}"
    if value is None:
        return "null"
    return "a mapping" if isinstance(value, dict) else "a list"


def _merge_types(
    entries: list[tuple[bool, str, str | None]],
) -> list[tuple[bool, str, str | None]]:
    """A union's type errors at one place as one: "expected text or a list, got …"."""
    typed = [e for e in entries if e[1].startswith(_EXPECT_PREFIX) and ", got " in e[1]]
    if len(typed) < 2:
        return entries
    wanted = [e[1][len(_EXPECT_PREFIX) :].split(", got ", 1) for e in typed]
    merged = f"{_EXPECT_PREFIX}{' or '.join(w[0] for w in wanted)}, got {wanted[0][1]}"
    hint = next((e[2] for e in typed if e[2]), None)
    return [e for e in entries if e not in typed] + [(typed[0][0], merged, hint)]


def _list_hint(value: Any) -> str:
    words = value.split() if isinstance(value, str) and value.strip() else ["..."]
    return "write a YAML list, for example " + json.dumps(words)


def _unknown(
    field: str, err: Any, vocabulary: list[str], places: dict[str, tuple[str, ...]]
) -> tuple[str, str | None, bool]:
    where = places.get(field)
    if where:
        listed = " or ".join(where[:3]) + (" (and more)" if len(where) > 3 else "")
        return (
            f"unknown field {field!r} at this level",
            f"{field!r} belongs under {listed}; move it there",
            True,
        )
    close = difflib.get_close_matches(field, vocabulary, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "remove it; see docs/fleet-spec.md"
    return f"unknown field {field!r}", hint, True


def _describe(
    err: Any, vocabulary: list[str], places: dict[str, tuple[str, ...]]
) -> tuple[str, str | None, bool]:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        return _unknown(str(err["loc"][-1]), err, vocabulary, places)
    if kind == "missing":
        return f"required field {str(err['loc'][-1])!r} is missing", None, True
    if kind == "literal_error":
        wanted = re.findall(r"'([^']*)'", str((err.get("ctx") or {}).get("expected", "")))
        value = err.get("input")
        close = difflib.get_close_matches(str(value), wanted, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else None
        expected = " or ".join(repr(w) for w in wanted) or msg
        return f"expected {expected}, got {got(value)}", hint, True
    if kind in _EXPECTED:
        value = err.get("input")
        hint = _list_hint(value) if kind in ("tuple_type", "list_type") else None
        return f"{_EXPECT_PREFIX}{_EXPECTED[kind]}, got {got(value)}", hint, True
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :], None, True
    return msg, None, False
