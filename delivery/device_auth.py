"""Device authentication with the credentials of their Drogue-style spec.

``spec.credentials.credentials`` holds ``{pass: <password>}`` and
``{user: {username, password: <password>}}`` entries, where ``<password>`` is plain text
(``"…"`` or ``{plain: "…"}``) or a hash, ``{bcrypt: "$2b$…"}`` or ``{sha512: "$6$…"}``:
Drogue Cloud's format, read by :mod:`ajour_build.core.spec.credentials`. Verification
follows Drogue Cloud's authentication service: bcrypt as its ``bcrypt`` crate does (the
first 72 bytes count, a NUL byte never matches), sha512 as crypt(3)'s sha512-crypt.

Which entries a login may match: without a username (the device logs in as itself,
``<device>@<app>``), every entry; with a username, the ``user`` entries of that username.

Plain passwords are compared in constant time. A hash check costs what its parameters say
(bcrypt cost 12: 0.36 s here, see docs/delivery.md), so outcomes are kept in a bounded LRU
keyed by an HMAC, under a per-process random key, of the stored hash and the given
password: a device that logs in again with the same password costs a dictionary look-up,
and the cache holds neither passwords nor hashes. Passwords and hashes never appear in
logs or errors.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import threading
from collections import OrderedDict
from typing import Any, Literal

import bcrypt

from ajour_build.core.spec.credentials import (
    BCRYPT_COST_MAX,
    BCRYPT_COST_MIN,
    Password,
    bcrypt_fields,
    parse_credentials,
)
from ajour_build.core.spec.problems import format_path
from delivery import sha512_crypt
from delivery.errors import DeliveryError

log = logging.getLogger("delivery.device_auth")

BCRYPT_MAX_BYTES = 72  # bcrypt reads no further; Drogue Cloud's crate cuts there too
BCRYPT_COST = 12  # the default of Drogue Cloud's bcrypt crate and of PyPI's bcrypt
HashScheme = Literal["bcrypt", "sha512"]


class VerifyCache:
    """A bounded, thread-safe LRU of hash verification outcomes (both matches and misses)."""

    def __init__(self, size: int = 16384) -> None:
        self.size = size
        self.hits = 0
        self.misses = 0
        self._key = secrets.token_bytes(32)
        self._items: OrderedDict[bytes, bool] = OrderedDict()
        self._lock = threading.Lock()

    def key(self, stored: Password, password: str) -> bytes:
        message = "\0".join((stored.scheme, stored.value, password)).encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def get(self, key: bytes) -> bool | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: bytes, ok: bool) -> None:
        with self._lock:
            self._items[key] = ok
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


CACHE = VerifyCache()
_reported: set[str] = set()


def _refuse(stored_path: str, reason: str) -> None:
    """Log, once per place and reason, why a stored credential is ignored."""
    message = f"spec.credentials.{stored_path}: {reason}; it is ignored"
    if message not in _reported and len(_reported) < 1000:
        _reported.add(message)
        log.warning("%s", message)


def _check_bcrypt(hashed: str, password: str) -> bool:
    variant, cost, rest = bcrypt_fields(hashed)
    given = password.encode()
    if b"\0" in given:  # Drogue Cloud's bcrypt refuses such passwords: never a match
        return False
    normal = f"${variant}${cost:02d}${rest}".encode()
    return bcrypt.checkpw(given[:BCRYPT_MAX_BYTES], normal)


def _check_hash(stored: Password, password: str) -> bool:
    try:
        if stored.scheme == "bcrypt":
            return _check_bcrypt(stored.value, password)
        return sha512_crypt.verify(password, stored.value)
    except ValueError as exc:  # a malformed hash (the fleet loader refuses those first)
        _refuse(format_path(stored.path), f"not a usable {stored.scheme} hash: {exc}")
        return False


def verify(stored: Password, password: str) -> bool:
    """True when ``password`` matches one stored password (plain, bcrypt or sha512)."""
    if stored.scheme == "plain":
        return hmac.compare_digest(stored.value.encode(), password.encode())
    key = CACHE.key(stored, password)
    known = CACHE.get(key)
    if known is not None:
        return known
    ok = _check_hash(stored, password)
    CACHE.put(key, ok)
    return ok


def candidates(credentials: Any, username: str | None = None) -> list[Password]:
    """The stored passwords a login may match (for ``username`` when it gave one)."""
    parsed = parse_credentials(credentials)
    for problem in parsed.problems:
        _refuse(format_path(problem.path) or "(section)", problem.message)
    return [
        e.password
        for e in parsed.entries
        if username is None or (e.username is not None and e.username == username)
    ]


def passwords(credentials: Any, username: str | None = None) -> list[str]:
    """The plain-text passwords a login may match; hashed ones cannot be listed."""
    return [p.value for p in candidates(credentials, username) if p.scheme == "plain"]


def check(credentials: Any, password: str, username: str | None = None) -> bool:
    """True when ``password`` matches one of the device's credentials.

    Every candidate is checked (no early exit), plain ones in constant time.
    """
    ok = False
    for stored in candidates(credentials, username):
        ok |= verify(stored, password)
    return ok


def hash_password(
    password: str,
    scheme: HashScheme = "bcrypt",
    cost: int = BCRYPT_COST,
    rounds: int = sha512_crypt.ROUNDS_DEFAULT,
) -> str:
    """A new hash of ``password`` for a fleet spec: bcrypt ``$2b$`` or sha512-crypt ``$6$``."""
    if not password:
        raise DeliveryError("the password is empty; a device needs a password to log in")
    if scheme == "sha512":
        if not sha512_crypt.ROUNDS_MIN <= rounds <= sha512_crypt.ROUNDS_MAX:
            raise DeliveryError(
                f"sha512 rounds must be {sha512_crypt.ROUNDS_MIN}..{sha512_crypt.ROUNDS_MAX},"
                f" got {rounds}"
            )
        return sha512_crypt.hash_password(password, rounds)
    data = password.encode()
    if b"\0" in data:
        raise DeliveryError("the password has a NUL byte, which bcrypt cannot take; use sha512")
    if len(data) > BCRYPT_MAX_BYTES:
        raise DeliveryError(
            f"the password is {len(data)} bytes; bcrypt uses only the first {BCRYPT_MAX_BYTES}"
            " (Drogue Cloud too): use a shorter one or --scheme sha512"
        )
    if not BCRYPT_COST_MIN <= cost <= BCRYPT_COST_MAX:
        raise DeliveryError(f"bcrypt cost must be {BCRYPT_COST_MIN}..{BCRYPT_COST_MAX}, got {cost}")
    return bcrypt.hashpw(data, bcrypt.gensalt(cost)).decode()
