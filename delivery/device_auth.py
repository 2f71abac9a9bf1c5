"""Device authentication with the credentials of their Drogue-style spec.

``spec.credentials.credentials`` is a list of ``{"pass": "..."}`` and
``{"user": {"username": "...", "password": "..."}}`` entries (Drogue Cloud's format).
Passwords are compared in constant time; they never appear in logs or errors.
"""

from __future__ import annotations

import hmac
from typing import Any


def passwords(credentials: Any, username: str | None = None) -> list[str]:
    """The passwords a device may present (for ``username`` when it gave one)."""
    if not isinstance(credentials, dict):
        return []
    entries = credentials.get("credentials")
    if not isinstance(entries, list):
        return []
    found: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if isinstance(entry.get("pass"), str):
            found.append(entry["pass"])
        user = entry.get("user")
        if isinstance(user, dict) and isinstance(user.get("password"), str):
            if username is None or user.get("username") == username:
                found.append(user["password"])
    return found


def check(credentials: Any, password: str, username: str | None = None) -> bool:
    """True when ``password`` matches one of the device's credentials (constant time)."""
    given = password.encode()
    ok = False
    for candidate in passwords(credentials, username):
        ok |= hmac.compare_digest(candidate.encode(), given)
    return ok
