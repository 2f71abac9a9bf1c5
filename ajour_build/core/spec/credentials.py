"""Device credentials as Drogue Cloud stores them, read and checked (never verified here).

``spec.credentials`` is ``{credentials: [entry, …]}``; each entry has exactly one key, as
in Drogue's registry API (``drogue-client``'s ``registry::v1::Credential``):

- ``pass: <password>``: the password a device presents as ``<device>@<app>``;
- ``user: {username, password: <password>, unique?: bool}``: a username and password;
- ``cert: …`` and ``psk: …``: not passwords; accepted and left alone.

A ``<password>`` (Drogue's ``Password``) is a plain string, or a mapping with exactly one
of ``plain: <text>``, ``bcrypt: <$2a$/$2b$/$2y$ hash>`` or ``sha512: <$6$ sha512-crypt
hash>``. The hashes' formats are checked here, so that a malformed one is an error with
its place when the fleet is loaded; delivery verifies passwords against them. No message
ever contains a password or a hash.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from ajour_build.core.spec.document import PathKey

Scheme = Literal["plain", "bcrypt", "sha512"]
SCHEMES: tuple[Scheme, ...] = ("plain", "bcrypt", "sha512")
ENTRY_KINDS = ("pass", "user", "cert", "psk")

BCRYPT_VARIANTS = ("2a", "2b", "2y")  # what Drogue Cloud's bcrypt crate accepts
BCRYPT_COST_MIN, BCRYPT_COST_MAX = 4, 31
BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
CRYPT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
SHA512_ROUNDS_DEFAULT = 5000
SHA512_ROUNDS_MIN, SHA512_ROUNDS_MAX = 1000, 999_999_999  # Drogue's sha-crypt refuses others
_BCRYPT = re.compile(r"\$(2[a-z])\$([0-9]{1,2})\$(.*)", re.DOTALL)
HASH_HINT = "make one with `ajour-delivery hash-password --scheme bcrypt|sha512`"


@dataclass(frozen=True)
class Password:
    """A stored password: plain text or a hash (``value`` never shows in a repr)."""

    scheme: Scheme
    value: str = field(repr=False)
    path: PathKey = ()  # where it is, inside spec.credentials


@dataclass(frozen=True)
class PasswordEntry:
    """A ``pass`` entry (``username`` None) or a ``user`` entry."""

    password: Password
    username: str | None = None
    unique: bool = False


@dataclass(frozen=True)
class CredentialProblem:
    path: PathKey  # inside spec.credentials
    message: str
    hint: str | None = None


@dataclass(frozen=True)
class Credentials:
    entries: tuple[PasswordEntry, ...] = ()
    problems: tuple[CredentialProblem, ...] = ()

    @property
    def plaintext(self) -> bool:
        """True when a password is stored as plain text."""
        return any(e.password.scheme == "plain" for e in self.entries)


def bcrypt_fields(value: str) -> tuple[str, int, str]:
    """(variant, cost, salt and digest) of a bcrypt hash; ValueError saying what is wrong."""
    match = _BCRYPT.fullmatch(value)
    if match is None:
        raise ValueError("expected $2b$<cost>$<53 characters> (or $2a$, $2y$)")
    variant, cost_text, rest = match.groups()
    if variant not in BCRYPT_VARIANTS:
        raise ValueError(
            f"bcrypt variant ${variant}$ is not accepted by Drogue Cloud; use $2b$ (or $2a$, $2y$)"
        )
    cost = int(cost_text)
    if not BCRYPT_COST_MIN <= cost <= BCRYPT_COST_MAX:
        raise ValueError(f"cost {cost} is outside {BCRYPT_COST_MIN}..{BCRYPT_COST_MAX}")
    if len(rest) != 53 or any(ch not in BCRYPT_ALPHABET for ch in rest):
        raise ValueError(
            "expected 53 characters of bcrypt's base64 (./A-Za-z0-9) after the cost,"
            f" got {len(rest)} characters" + (" (some outside it)" if len(rest) == 53 else "")
        )
    # 22 characters carry the 16-byte salt and 31 the 23-byte digest: their last characters
    # hold only 2 and 4 bits, the others must be zero
    if BCRYPT_ALPHABET.index(rest[21]) % 16 or BCRYPT_ALPHABET.index(rest[52]) % 4:
        raise ValueError("its salt or digest ends in a character that cannot occur in bcrypt")
    return variant, cost, rest


def sha512_crypt_fields(value: str) -> tuple[int, str, str]:
    """(rounds, salt, digest) of ``$6$[rounds=N$]salt$digest``; ValueError saying what is wrong.

    The same rules as Drogue Cloud's ``sha-crypt`` check: rounds 1000..999,999,999 (default
    5000), any salt without ``$`` (only its first 16 characters count), and a digest of 86
    characters of crypt's base64.
    """
    parts = value.split("$")
    if len(parts) not in (4, 5) or parts[0] != "" or parts[1] != "6":
        raise ValueError("expected $6$<salt>$<digest> or $6$rounds=<N>$<salt>$<digest>")
    rounds = SHA512_ROUNDS_DEFAULT
    if len(parts) == 5 or parts[2].startswith("rounds="):
        number = parts[2].removeprefix("rounds=")
        if not parts[2].startswith("rounds=") or not (number.isascii() and number.isdigit()):
            raise ValueError("the field after $6$ must be rounds=<number>")
        if len(parts) != 5:
            raise ValueError("expected $6$rounds=<N>$<salt>$<digest>: the salt is missing")
        rounds = int(number)
        if not SHA512_ROUNDS_MIN <= rounds <= SHA512_ROUNDS_MAX:
            raise ValueError(
                f"rounds={rounds} is outside {SHA512_ROUNDS_MIN}..{SHA512_ROUNDS_MAX},"
                " which Drogue Cloud refuses"
            )
    salt, digest = parts[-2], parts[-1]
    if len(digest) != 86 or any(ch not in CRYPT_ALPHABET for ch in digest):
        raise ValueError(
            "expected a digest of 86 characters of crypt's base64 (./0-9A-Za-z),"
            f" got {len(digest)} characters" + (" (some outside it)" if len(digest) == 86 else "")
        )
    if CRYPT_ALPHABET.index(digest[-1]) > 3:  # the last character holds only 2 bits
        raise ValueError("the digest's last character cannot occur in a sha512-crypt hash")
    return rounds, salt, digest


def _kind(value: Any) -> str:
    """The JSON-ish kind of ``value``: a YAML reader's int subclass is still an int."""
    if value is None:
        return "nothing"
    for base in (bool, int, float, str, list, dict):
        if isinstance(value, base):
            return base.__name__
    return type(value).__name__


def _password(raw: Any, path: PathKey) -> Password | CredentialProblem:
    """Drogue's ``Password``: a string, or ``{plain|bcrypt|sha512: <text>}``."""
    if isinstance(raw, str):
        return Password("plain", raw, path)
    # keys are not echoed: `pass: {hunter2}` is YAML for the mapping {"hunter2": null}
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in SCHEMES:
        got = "a mapping with other keys" if isinstance(raw, dict) else _kind(raw)
        return CredentialProblem(
            path,
            f"a password is text or a mapping with one key, plain, bcrypt or sha512; got {got}",
            HASH_HINT,
        )
    scheme: Scheme = next(iter(raw))
    value, where = raw[scheme], (*path, scheme)
    if not isinstance(value, str):
        return CredentialProblem(where, f"a {scheme} password must be text, got {_kind(value)}")
    try:
        if scheme == "bcrypt":
            bcrypt_fields(value)
        elif scheme == "sha512":
            sha512_crypt_fields(value)
    except ValueError as exc:
        kind = "bcrypt" if scheme == "bcrypt" else "sha512-crypt ($6$)"
        return CredentialProblem(where, f"not a {kind} hash: {exc}", HASH_HINT)
    return Password(scheme, value, where)


def _user(raw: Any, path: PathKey) -> PasswordEntry | list[CredentialProblem]:
    if not isinstance(raw, dict):
        return [CredentialProblem(path, f"expected {{username, password}}, got {_kind(raw)}")]
    problems = []
    if set(raw) - {"username", "password", "unique"}:
        problems.append(
            CredentialProblem(path, "a user has fields other than username, password, unique")
        )
    username = raw.get("username")
    if not isinstance(username, str):
        problems.append(
            CredentialProblem((*path, "username"), f"username must be text, got {_kind(username)}")
        )
    unique = raw.get("unique", False)
    if not isinstance(unique, bool):
        problems.append(CredentialProblem((*path, "unique"), "unique must be true or false"))
    password = (
        _password(raw["password"], (*path, "password"))
        if "password" in raw
        else CredentialProblem(path, "a user needs a password")
    )
    if isinstance(password, CredentialProblem):
        problems.append(password)
    if problems or not isinstance(password, Password):
        return problems
    return PasswordEntry(password, username, unique)


def _entry(item: Any, path: PathKey) -> PasswordEntry | list[CredentialProblem] | None:
    """One credential: a password entry, its problems, or None (cert, psk: not passwords)."""
    if not isinstance(item, dict) or len(item) != 1 or next(iter(item)) not in ENTRY_KINDS:
        got = "a mapping with other keys" if isinstance(item, dict) else _kind(item)
        return [
            CredentialProblem(
                path,
                f"a credential is a mapping with one key, pass, user, cert or psk; got {got}",
                "for example {pass: {bcrypt: <hash>}}",
            )
        ]
    kind, value = next(iter(item.items()))
    if kind == "pass":
        password = _password(value, (*path, "pass"))
        return [password] if isinstance(password, CredentialProblem) else PasswordEntry(password)
    if kind == "user":
        return _user(value, (*path, "user"))
    return None


def parse_credentials(raw: Any) -> Credentials:
    """The password entries of a ``spec.credentials`` section, and what is wrong with it."""
    if raw is None:
        return Credentials()
    if not isinstance(raw, dict) or not isinstance(raw.get("credentials", []), list):
        got = _kind(raw.get("credentials")) if isinstance(raw, dict) else _kind(raw)
        message = f"expected {{credentials: [entry, ...]}}, got {got}"
        return Credentials(problems=(CredentialProblem((), message),))
    problems: list[CredentialProblem] = []
    if set(raw) - {"credentials"}:
        problems.append(
            CredentialProblem((), "spec.credentials has fields other than 'credentials'")
        )
    entries: list[PasswordEntry] = []
    for i, item in enumerate(raw.get("credentials", [])):
        found = _entry(item, ("credentials", i))
        if isinstance(found, PasswordEntry):
            entries.append(found)
        elif found is not None:
            problems.extend(found)
    return Credentials(tuple(entries), tuple(problems))
