"""The firmware version grammar: one for the CLI, the API, the clone step and publishers.

A version becomes an OCI tag (the immutable one, next to the moving tag of the spec), the
name of a hawkBit software module version and the bytes devices compare, so it must be a
valid OCI tag: ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``, matched whole (no trailing newline).
"""

from __future__ import annotations

import re

VERSION = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
VERSION_RULE = (
    "a version is an OCI tag: 1 to 128 letters, digits, '_', '.' and '-', not starting"
    " with '.' or '-' (no spaces, no '+' or '~'), for example 1.2.0 or 2.0.0-rc.1"
)


def version_problem(value: str) -> str | None:
    """Why ``value`` is not a version (``None`` if it is one)."""
    if VERSION.fullmatch(value) is not None:
        return None
    bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if not value:
        got = "it is empty"
    elif len(value) > 128:
        got = f"it is {len(value)} characters long"
    elif bad:
        got = "it contains " + ", ".join(repr(c) for c in bad)
    else:
        got = f"it starts with {value[0]!r}"
    return f"version {value!r} is not valid: {got}; {VERSION_RULE}"


def is_version(value: str) -> bool:
    return VERSION.fullmatch(value) is not None


def check_version(value: str) -> str:
    """``value`` if it is a version, else :class:`ValueError` with the reason."""
    problem = version_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value
