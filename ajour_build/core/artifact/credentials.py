"""Registry credentials: ``AJOUR_REGISTRY_USERNAME``/``_PASSWORD``, else docker ``config.json``.

Credentials are returned, never logged; error messages name where they came from only.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    source: str  # for messages: "AJOUR_REGISTRY_USERNAME" or a config.json path

    def __repr__(self) -> str:  # never print the password
        return f"Credentials(username={self.username!r}, source={self.source!r})"

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def _config_path(env: Mapping[str, str]) -> Path:
    if env.get("DOCKER_CONFIG"):
        return Path(env["DOCKER_CONFIG"]) / "config.json"
    return Path(env.get("HOME", str(Path.home()))) / ".docker" / "config.json"


def lookup(host: str, env: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for registry ``host`` (``host[:port]``), or None for anonymous access."""
    environ = os.environ if env is None else env
    user, password = environ.get("AJOUR_REGISTRY_USERNAME"), environ.get("AJOUR_REGISTRY_PASSWORD")
    if user and password:
        return Credentials(user, password, "AJOUR_REGISTRY_USERNAME")
    path = _config_path(environ)
    try:
        auths = json.loads(path.read_text(encoding="utf-8")).get("auths", {})
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(auths, dict):
        return None
    for key in (host, f"https://{host}", f"http://{host}", f"https://{host}/v2/", f"{host}/v2/"):
        entry = auths.get(key)
        if isinstance(entry, dict):
            return _entry(entry, str(path))
    return None


def _entry(entry: dict[str, object], source: str) -> Credentials | None:
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            user, _, password = base64.b64decode(auth).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return Credentials(user, password, source) if user else None
    name, secret = entry.get("username"), entry.get("password")
    if isinstance(name, str) and isinstance(secret, str) and name:
        return Credentials(name, secret, source)
    return None
