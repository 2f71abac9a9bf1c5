"""SHA-crypt with SHA-512 (``$6$``, crypt(3)), the scheme of Drogue Cloud's ``sha512`` passwords.

Ulrich Drepper's specification ("Unix crypt using SHA-256 and SHA-512", 2007), with the
standard library only: Python 3.13 has no ``crypt`` module. A hash is
``$6$[rounds=N$]<salt>$<86 characters>``: the salt is cut to 16 characters, rounds default
to 5000 and must be 1000..999,999,999 (Drogue Cloud's ``sha-crypt`` refuses others, where
glibc would clamp them). Checked against glibc's ``crypt`` and ``openssl passwd -6``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from ajour_build.core.spec import credentials
from ajour_build.core.spec.credentials import sha512_crypt_fields

ALPHABET = credentials.CRYPT_ALPHABET
ROUNDS_DEFAULT = credentials.SHA512_ROUNDS_DEFAULT
ROUNDS_MIN, ROUNDS_MAX = credentials.SHA512_ROUNDS_MIN, credentials.SHA512_ROUNDS_MAX
PREFIX = "$6$"
SALT_MAX = 16

# the order in which the 64 digest bytes are written, three at a time (the spec's step 22)
_ORDER = [(i % 3 * 21 + i // 3 * 22) % 63 for i in range(63)]


def _repeat(digest: bytes, length: int) -> bytes:
    return (digest * (length // len(digest) + 1))[:length]


def _encode(digest: bytes) -> str:
    out = []
    for i in range(0, 63, 3):
        a, b, c = (digest[_ORDER[i + k]] for k in range(3))
        word = a << 16 | b << 8 | c
        out += [ALPHABET[(word >> 6 * k) & 63] for k in range(4)]
    word = digest[63]
    out += [ALPHABET[word & 63], ALPHABET[word >> 6]]
    return "".join(out)


def digest(password: bytes, salt: bytes, rounds: int = ROUNDS_DEFAULT) -> str:
    """The 86-character encoded digest of ``password`` with ``salt`` (cut to 16 bytes)."""
    if not ROUNDS_MIN <= rounds <= ROUNDS_MAX:
        raise ValueError(f"rounds must be {ROUNDS_MIN}..{ROUNDS_MAX}, got {rounds}")
    salt = salt[:SALT_MAX]
    n = len(password)
    b = hashlib.sha512(password + salt + password).digest()
    a = hashlib.sha512(password + salt)
    a.update(_repeat(b, n))
    bits = n
    while bits:
        a.update(b if bits & 1 else password)
        bits >>= 1
    c = a.digest()
    p = _repeat(hashlib.sha512(password * n).digest(), n)
    s = _repeat(hashlib.sha512(salt * (16 + c[0])).digest(), len(salt))
    # each round hashes (P or C) [+ S if i % 3] [+ P if i % 7] + (C or P): precompute the
    # middle parts so that a round is one hashlib call
    middles = {(m3, m7): (s if m3 else b"") + (p if m7 else b"") for m3 in (0, 1) for m7 in (0, 1)}
    sha512 = hashlib.sha512
    for i in range(rounds):
        middle = middles[(i % 3 != 0, i % 7 != 0)]
        c = sha512(p + middle + c).digest() if i & 1 else sha512(c + middle + p).digest()
    return _encode(c)


def verify(password: str, hashed: str) -> bool:
    """True when ``password`` matches the ``$6$`` hash (constant-time comparison)."""
    rounds, salt, encoded = sha512_crypt_fields(hashed)
    computed = digest(password.encode(), salt.encode(), rounds)
    return hmac.compare_digest(computed.encode(), encoded.encode())


def hash_password(password: str, rounds: int = ROUNDS_DEFAULT) -> str:
    """A new ``$6$`` hash with a random 16-character salt (``rounds=`` only if not 5000)."""
    salt = "".join(secrets.choice(ALPHABET) for _ in range(SALT_MAX))
    head = PREFIX + (f"rounds={rounds}$" if rounds != ROUNDS_DEFAULT else "")
    return f"{head}{salt}${digest(password.encode(), salt.encode(), rounds)}"
