"""Serving only signed firmware: a per-application trust policy, checked once per digest.

A source with a :class:`Verifier` checks a manifest digest before it makes its target
(``core.artifact.trust``): the signature (``sha256-<hex>.sig``) and, if the policy names a
builder or a source, the provenance (``sha256-<hex>.att``). A digest that passes is
remembered for the worker's life (its bytes cannot change); a refusal is remembered, per
repository, for ``retry`` seconds (then the signature tags are read again: it may have been
signed since) or until a publish event or a registry notification names that repository
(``forget_refusals``: a ``.sig`` pushed late is seen at the next status). So a status never
costs a verification: the sources call ``check`` only when their tag points at a digest
they have not served.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ajour_build.core.artifact.signature import PublicKey
from ajour_build.core.artifact.trust import Fetch, Lookup, Reason, TrustError, TrustPolicy, check
from ajour_build.core.errors import ArtifactError
from delivery.decision import FirmwareImage
from delivery.errors import DeliveryError
from delivery.sources.firmware_source import SourceUnavailable

RETRY_S = 30.0


class Unverified(SourceUnavailable):
    """The firmware is not signed as the application's trust policy requires."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_policy(
    application: str, keys: tuple[str, ...], builder: str = "", source: str = ""
) -> TrustPolicy:
    """The policy of ``application`` from PEM public key files (at least one)."""
    if not keys:
        raise DeliveryError(
            f"delivery.trust.{application}: keys is empty; list the PEM public keys whose"
            " signatures make firmware servable"
        )
    try:
        loaded = tuple(PublicKey.from_file(Path(path)) for path in keys)
    except ArtifactError as exc:
        raise DeliveryError(f"delivery.trust.{application}: {exc}") from None
    return TrustPolicy(loaded, builder, source)


@dataclass
class Verifier:
    """One application's policy and what it decided, per digest."""

    policy: TrustPolicy
    retry: float = RETRY_S
    clock: Callable[[], float] = time.monotonic
    _trusted: set[str] = field(default_factory=set, repr=False)
    # per (repository, digest): when it was refused, the store's state then (``key``), and why
    _refused: dict[tuple[str, str], tuple[float, object, Unverified]] = field(
        default_factory=dict, repr=False
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def check(
        self, digest: str, lookup: Lookup, fetch: Fetch, key: object = None, scope: str = ""
    ) -> None:
        """Return if ``digest`` may be served; raise ``Unverified`` (why not) or
        ``SourceUnavailable`` (the store cannot be read now: not remembered). A refusal is
        remembered for ``scope`` (the repository ``lookup`` reads the signatures of) and
        reused while ``key`` (the store's state, e.g. a layout's index stamp) is the same,
        for at most ``retry`` seconds or until ``forget_refusals(scope)``."""
        if digest in self._trusted:
            return
        with self._lock:
            refused = self._refused.get((scope, digest))
        if (
            refused is not None
            and refused[1] == key
            and 0 <= self.clock() - refused[0] < self.retry
        ):
            raise refused[2]
        try:
            check(self.policy, digest, lookup, fetch)
        except TrustError as exc:
            error = Unverified(exc.reason, f"refusing to serve it: {exc}")
            with self._lock:
                self._refused[(scope, digest)] = (self.clock(), key, error)
            raise error from None
        except ArtifactError as exc:
            raise SourceUnavailable(f"cannot check the signature of {digest}: {exc}") from None
        with self._lock:
            self._trusted.add(digest)
            self._refused.pop((scope, digest), None)

    def forget_refusals(self, scope: str) -> None:
        """Drop the refusals remembered for the repository ``scope``: something was pushed
        to it (perhaps the signature); those of other repositories stay."""
        with self._lock:
            for found in [k for k in self._refused if k[0] == scope]:
                del self._refused[found]


@dataclass
class Refusing:
    """The source of firmware a trust policy cannot check (a file directory, hawkBit):
    never a target."""

    application: str
    kind: str

    def target(self) -> FirmwareImage:
        raise Unverified(
            "unsigned",
            f"application {self.application!r} has a trust policy (delivery.trust), and"
            f" {self.kind} firmware carries no signatures: only container firmware (a registry"
            " or an OCI layout) can be checked and served",
        )

    def invalidate(self) -> None:
        return None
