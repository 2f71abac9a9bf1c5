"""Credentials for hawkBit's Management API: from the environment, never from a URL.

Basic auth (``AJOUR_HAWKBIT_USERNAME`` + ``AJOUR_HAWKBIT_PASSWORD``) or a gateway/bearer
token (``AJOUR_HAWKBIT_TOKEN``), never both. The secrets are kept out of ``repr`` and are
masked in every message (see :meth:`HawkbitAuth.secrets`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import requests
from requests.auth import HTTPBasicAuth

from ajour_build.core.errors import PublishError

ENV_USERNAME = "AJOUR_HAWKBIT_USERNAME"
ENV_PASSWORD = "AJOUR_HAWKBIT_PASSWORD"
ENV_TOKEN = "AJOUR_HAWKBIT_TOKEN"
AUTH_HINT = f"set {ENV_USERNAME} and {ENV_PASSWORD}, or {ENV_TOKEN}"


@dataclass(frozen=True)
class HawkbitAuth:
    """Basic (username + password) or bearer-token credentials, never both."""

    username: str = ""
    password: str = field(default="", repr=False)
    token: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        basic = bool(self.username or self.password)
        if basic and self.token:
            raise PublishError(
                "hawkBit credentials: got both a username/password and a token; use one:"
                f" unset {ENV_TOKEN} or unset {ENV_USERNAME} and {ENV_PASSWORD}"
            )
        if basic and not (self.username and self.password):
            raise PublishError(f"hawkBit basic auth needs both {ENV_USERNAME} and {ENV_PASSWORD}")
        if not basic and not self.token:
            raise PublishError(f"no hawkBit credentials: {AUTH_HINT}")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> HawkbitAuth:
        return cls(env.get(ENV_USERNAME, ""), env.get(ENV_PASSWORD, ""), env.get(ENV_TOKEN, ""))

    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.password, self.token) if s)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        """Act as requests' auth hook (so ``~/.netrc`` can never override it)."""
        if self.token:
            request.headers["Authorization"] = f"Bearer {self.token}"
            return request
        basic: requests.PreparedRequest = HTTPBasicAuth(self.username, self.password)(request)
        return basic
