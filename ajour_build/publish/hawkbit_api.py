"""One publish's requests to hawkBit's Management API (``/rest/v1``), and checks of the replies.

Only GET and HEAD are retried (on a connection error or HTTP 429/502/503/504, with
exponential backoff); every attempt stays within the publish's deadline. A reply that is not
what the step expected becomes a :class:`PublishError` that says where, what was expected
and what came back (with hawkBit's own explanation), the credentials masked.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import requests

from ajour_build.core.errors import PublishError
from ajour_build.publish.hawkbit_auth import AUTH_HINT, HawkbitAuth

log = logging.getLogger("ajour_build.publish.hawkbit")  # the publisher's: one log for a publish

PERMISSIONS = "READ_REPOSITORY, CREATE_REPOSITORY, UPDATE_TARGET, CREATE_ROLLOUT, HANDLE_ROLLOUT"
RETRY_STATUS = frozenset({429, 502, 503, 504})
API = "/rest/v1"
JSON = dict[str, Any]


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    where: str


def _excerpt(body: bytes) -> str:
    return repr(body[:200].decode("utf-8", "replace"))


def hawkbit_message(body: bytes) -> str | None:
    """hawkBit's own explanation from an ``ExceptionInfo`` body: message (errorCode)."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    message = data.get("message") if isinstance(data, dict) else None
    if not isinstance(message, str):
        return None
    code = data.get("errorCode")
    return message + (f" ({code})" if isinstance(code, str) and code else "")


@dataclass(frozen=True)
class ManagementApi:
    """The Management API over one session, until the publish's deadline (``until``)."""

    session: requests.Session
    base_url: str
    auth: HawkbitAuth
    until: float  # time.monotonic() when the publish's deadline passes
    deadline: float  # the publish's deadline in seconds, for messages
    timeout: float  # per request: read (between bytes)
    connect_timeout: float  # per request: connect
    retries: int
    backoff: float

    def find(self, path: str, module: str, version: str) -> list[JSON]:
        """The entities at ``path`` named ``module`` in ``version`` exactly."""
        params = {"q": f"name=={module};version=={version}", "limit": 50}
        reply = self.call("GET", path, expect=200, params=params)
        return [e for e in self.page(reply) if (e["name"], e.get("version")) == (module, version)]

    def call(self, method: str, path: str, *, expect: int, **kw: Any) -> Reply:
        url = f"{self.base_url}{API}{path}"
        where = f"{method} {url}"
        attempts = 1 + max(self.retries, 0) if method in ("GET", "HEAD") else 1
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                time.sleep(min(self.backoff * 2 ** (attempt - 2), self._left(where)))
            left = self._left(where)
            timeout = (min(self.connect_timeout, left), min(self.timeout, left))
            try:
                with self.session.request(
                    method, url, timeout=timeout, allow_redirects=False, **kw
                ) as r:
                    reply = Reply(r.status_code, r.content, where)
            except requests.RequestException as exc:
                log.debug("hawkBit: %s failed (attempt %d/%d): %s", where, attempt, attempts, exc)
                self._left(where)
                if attempt < attempts:
                    continue
                tried = f"after {attempts} attempts" if attempts > 1 else "not retried"
                tried += "" if method in ("GET", "HEAD") else ": not idempotent"
                raise self.fail(
                    f"{where} failed ({tried}): {type(exc).__name__}: {exc}; check that hawkBit"
                    " is reachable, then publish again (publishing resumes safely)"
                ) from None
            log.debug("hawkBit: %s -> HTTP %d", where, reply.status)
            if reply.status not in RETRY_STATUS:
                break
        if reply.status == 401:
            raise self.fail(f"hawkBit rejected the credentials (HTTP 401) at {where}: {AUTH_HINT}")
        if reply.status == 403:
            raise self.fail(
                f"hawkBit refused {where} (HTTP 403): the account lacks a permission"
                f" ({PERMISSIONS}) or the entity is locked; body: {_excerpt(reply.body)};"
                f" {AUTH_HINT} to an account that has them"
            )
        if reply.status != expect:
            raise self.bad(reply, f"HTTP {expect}")
        return reply

    def _left(self, where: str) -> float:
        """Seconds left of this publish's deadline; PublishError when none are."""
        left = self.until - time.monotonic()
        if left <= 0:
            raise self.fail(
                f"{where}: the publish did not finish within its {self.deadline:g}s deadline;"
                " check that hawkBit answers, then publish again (publishing resumes safely)"
            )
        return left

    def parsed(self, reply: Reply, shape: type[list[Any]] | type[JSON]) -> Any:
        """The reply's JSON body, which must be a ``shape`` (list or dict)."""
        try:
            data = reply.body and json.loads(reply.body)
        except ValueError:
            data = None
        if not isinstance(data, shape):
            raise self.bad(reply, f"a JSON {shape.__name__} (is this URL a hawkBit server?)")
        return data

    def entities(self, reply: Reply, items: list[Any]) -> list[JSON]:
        for e in items:
            if not (isinstance(e, dict) and type(e.get("id")) is int and "name" in e):
                raise self.bad(reply, "entities with an integer 'id' and a 'name'")
        return items

    def page(self, reply: Reply) -> list[JSON]:
        content = self.parsed(reply, dict).get("content")
        if not isinstance(content, list):
            raise self.bad(reply, "a page with a 'content' list")
        return self.entities(reply, content)

    def one(self, reply: Reply) -> int:
        """The id of the one entity a create call answered with."""
        data = self.parsed(reply, list)
        if len(data) != 1:
            raise self.bad(reply, "a list with the one created entity")
        return int(self.entities(reply, data)[0]["id"])

    def bad(self, reply: Reply, expected: str) -> PublishError:
        said = hawkbit_message(reply.body) if reply.status >= 400 else None
        return self.fail(
            f"{reply.where}: expected {expected}; got HTTP {reply.status}, body:"
            f" {_excerpt(reply.body)}" + (f"; hawkBit says: {said}" if said else "")
        )

    def fail(self, message: str) -> PublishError:
        for secret in self.auth.secrets():
            message = message.replace(secret, "***")
        return PublishError(message)
