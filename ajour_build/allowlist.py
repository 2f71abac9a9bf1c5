"""The application allowlist: who may start a build (no free compute farm)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ajour_build.core.errors import NotAllowedError

ALLOW_ALL = "*"


@dataclass(frozen=True)
class Allowlist:
    """Applications allowed to build. ``*`` allows every application, explicitly."""

    names: frozenset[str]
    source: str = "ajour.yaml"

    @classmethod
    def of(cls, names: Iterable[str], source: str = "ajour.yaml") -> Allowlist:
        return cls(frozenset(names), source)

    def allows(self, application: str) -> bool:
        return ALLOW_ALL in self.names or application in self.names

    def refusal(self, application: str, what: str = "build") -> str:
        return (
            f"{what} refused: application {application!r} is not on the build allowlist;"
            f" add {application!r} to allowed_applications in {self.source}"
            " (or to AJOUR_ALLOWED_APPLICATIONS) to allow it"
        )

    def check(self, application: str, what: str = "build") -> None:
        """Raise :class:`NotAllowedError` unless ``application`` may build."""
        if not self.allows(application):
            raise NotAllowedError([self.refusal(application, what)])
