"""Turning pydantic validation errors into located, human :class:`Problem` s."""

from __future__ import annotations

import difflib
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


def problems_from_validation(
    exc: ValidationError, doc: Document, base: PathKey, vocabulary: list[str]
) -> list[Problem]:
    """Located problems for ``exc``, raised validating ``doc.data`` at ``base``."""
    node: Any = doc.data
    for part in base:
        node = node[part]
    by_path: dict[PathKey, list[tuple[bool, str, str | None]]] = {}
    for err in exc.errors(include_url=False):
        rel = _data_path(node, tuple(err["loc"]))
        msg, hint, ours = _describe(err, vocabulary)
        if err["type"] == "extra_forbidden":
            rel = (*_data_path(node, tuple(err["loc"])[:-1]), str(err["loc"][-1]))
        by_path.setdefault(rel, []).append((ours, msg, hint))
    problems: list[Problem] = []
    for rel, entries in by_path.items():
        if any(ours for ours, _, _ in entries):
            entries = [e for e in entries if e[0]]
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


def _describe(err: Any, vocabulary: list[str]) -> tuple[str, str | None, bool]:
    kind = err["type"]
    msg = str(err["msg"])
    if kind == "extra_forbidden":
        field = str(err["loc"][-1])
        close = difflib.get_close_matches(field, vocabulary, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}?" if close else "remove it; see docs/fleet-spec.md"
        return f"unknown field {field!r}", hint, True
    if kind == "missing":
        return f"required field {str(err['loc'][-1])!r} is missing", None, True
    if kind == "literal_error":
        return f"{msg} (got {err.get('input')!r})", None, True
    for prefix in _PREFIXES:
        if msg.startswith(prefix):
            return msg[len(prefix) :], None, True
    return msg, None, False
