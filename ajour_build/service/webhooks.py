"""Git push webhooks from GitHub, GitLab and Gitea: signatures and payloads.

Signatures are checked before the body is parsed, in constant time. A ping is not a push.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from ajour_build.errors import AjourError

MAX_BODY = 5 * 1024 * 1024


class WebhookError(AjourError):
    """A webhook was refused; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Push:
    provider: str
    urls: tuple[str, ...]  # every clone URL the provider names for the repository
    ref: str  # refs/heads/<branch> or refs/tags/<tag>
    after: str  # the pushed commit
    deleted: bool = False

    @property
    def name(self) -> str:
        """The branch or tag pushed."""
        for prefix in ("refs/heads/", "refs/tags/"):
            if self.ref.startswith(prefix):
                return self.ref[len(prefix) :]
        return self.ref


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(provider: str, secret: str, body: bytes, headers: dict[str, str]) -> None:
    """Raise WebhookError(401) unless the request is signed with ``secret``."""
    if not secret:
        raise WebhookError(500, f"no webhook secret is configured for {provider}")
    lowered = {k.lower(): v for k, v in headers.items()}
    if provider == "github":
        given = lowered.get("x-hub-signature-256", "")
        expected = "sha256=" + _hmac_hex(secret, body)
        header = "X-Hub-Signature-256"
    elif provider == "gitea":
        given = lowered.get("x-gitea-signature", "")
        expected = _hmac_hex(secret, body)
        header = "X-Gitea-Signature"
    elif provider == "gitlab":
        given = lowered.get("x-gitlab-token", "")
        expected = secret
        header = "X-Gitlab-Token"
    else:
        raise WebhookError(404, f"unknown webhook provider {provider!r}")
    if not given:
        raise WebhookError(401, f"{header} is missing: the webhook must be signed")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookError(401, f"{header} does not match: wrong secret or altered body")


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise WebhookError(413, f"webhook body over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise WebhookError(400, f"webhook body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WebhookError(400, "webhook body is not a JSON object")
    return data


def _str(data: dict[str, Any], *path: str) -> str:
    node: Any = data
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, str) else ""


def parse(provider: str, event: str, body: bytes) -> Push | None:
    """The push in a verified webhook; None for a ping (or another event type)."""
    data = _load(body)
    kind = event.lower()
    if provider == "gitlab":
        if kind not in ("push hook", "tag push hook"):
            return None
        urls = (
            _str(data, "project", "git_http_url"),
            _str(data, "project", "git_ssh_url"),
            _str(data, "repository", "git_http_url"),
            _str(data, "repository", "url"),
        )
    else:
        if kind != "push":
            return None  # "ping", and anything else, is not a push
        urls = (
            _str(data, "repository", "clone_url"),
            _str(data, "repository", "ssh_url"),
            _str(data, "repository", "git_url"),
            _str(data, "repository", "html_url"),
        )
    ref, after = _str(data, "ref"), _str(data, "after")
    if not ref or not after:
        raise WebhookError(400, "the push event has no ref or no after commit")
    deleted = data.get("deleted") is True or set(after) == {"0"}
    return Push(provider, tuple(u for u in urls if u), ref, after, deleted)
