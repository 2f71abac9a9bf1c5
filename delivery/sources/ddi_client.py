"""HTTP to hawkBit's Direct Device Integration API for one controller, as a gateway.

The client of :class:`delivery.sources.hawkbit.HawkbitSource`: it sends the tenant's
gateway security token (``Authorization: GatewayToken <token>``) to the configured hawkBit
origin (scheme, host and port) only. API answers are never followed on a redirect; a
download follows at most five, never with the token (not even back to hawkBit), never from
https to http except to loopback (``core.artifact.redirects``). Plain http to hawkBit is
refused unless the host is loopback or ``insecure=True``; TLS is always verified. The token
never appears in logs, errors or ``repr``, and URLs in messages lose their query. Every
failure is a :class:`HawkbitError`. Standard library only: the delivery side stays lean.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Final, NoReturn
from urllib.parse import quote, urlsplit

from ajour_build.core.artifact.redirects import Fetched, FetchError, Origin, fetch, safe_url
from ajour_build.core.hosts import is_loopback
from delivery.errors import DeliveryError
from delivery.sources.firmware_source import SourceUnavailable

log = logging.getLogger("delivery.sources.hawkbit")  # the source's logger: one for hawkBit

MAX_JSON: Final = 1024 * 1024
EXCERPT: Final = 200
JSON_ACCEPT: Final = "application/hal+json, application/json"


class HawkbitError(SourceUnavailable):
    """hawkBit cannot give a target now: unreachable, refused, or answered something unusable."""


class DdiClient:
    """Requests to one controller's DDI resources (``controller_url``) with the gateway token."""

    def __init__(
        self,
        base_url: str,
        tenant: str,
        controller_id: str,
        gateway_token: str,
        timeout: float,
        insecure: bool,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username:
            raise DeliveryError(
                "hawkBit DDI base URL: expected http(s)://host[:port][/prefix] without"
                f" credentials; got scheme {parts.scheme!r}, host {parts.hostname or ''!r}"
            )
        if parts.query or parts.fragment:
            raise DeliveryError("hawkBit DDI base URL: expected no query or fragment")
        if not tenant or not controller_id:
            raise DeliveryError("hawkBit DDI: tenant and controller id must not be empty")
        if not gateway_token or any(c in gateway_token for c in "\r\n\0"):
            raise DeliveryError("hawkBit DDI: the gateway token is empty or has control chars")
        if timeout <= 0:
            raise DeliveryError(f"hawkBit DDI: timeout must be positive, got {timeout}")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.tenant, self.controller_id = tenant, controller_id
        self.timeout, self.insecure = timeout, insecure
        self._token = gateway_token
        problem = self._url_problem(self.base_url)
        if problem is not None:
            raise DeliveryError(f"hawkBit DDI base URL: {problem}")
        self.controller_url = (
            f"{self.base_url}/{quote(tenant, safe='')}/controller/v1/"
            f"{quote(controller_id, safe='')}"
        )
        self.origin = Origin.of(self.base_url)

    def __repr__(self) -> str:
        return (
            f"DdiClient({self.base_url!r}, tenant={self.tenant!r},"
            f" controller={self.controller_id!r})"
        )

    def _url_problem(self, url: str) -> str | None:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.scheme not in ("http", "https") or not host:
            return f"refusing to fetch {url[:200]!r}: only http(s) URLs with a host"
        if parts.scheme == "http" and not (self.insecure or is_loopback(host)):
            return (
                f"refusing plain http to {host!r}: the gateway token and firmware would travel"
                " unencrypted; use https, or opt in with insecure=True"
            )
        return None

    def get_json(self, url: str, what: str) -> dict[str, Any]:
        """GET the JSON object ``what`` at ``url``, which must be on the hawkBit origin."""
        if Origin.of(url) != self.origin:
            self.fail(
                f"hawkBit linked {what} at {safe_url(url)}, which is not on the configured"
                f" hawkBit origin {self.origin}: the gateway token is only sent there, so the"
                " link is not followed; if that is hawkBit's public URL, configure it as"
                " --hawkbit-url, else fix hawkBit's forwarded-host settings"
            )
        status, payload = self.call("GET", url, None, JSON_ACCEPT)
        if status != 200:
            self.unexpected("GET", url, status, payload, f"HTTP 200 with {what}")
        try:
            data = json.loads(payload)
        except ValueError:
            data = None
        if not isinstance(data, dict):
            self.unexpected("GET", url, status, payload, f"{what} as a JSON object")
        return data

    def call(
        self,
        method: str,
        url: str,
        body: bytes | None,
        accept: str,
        limit: int = MAX_JSON,
        download: bool = False,
    ) -> tuple[int, bytes]:
        """One request; the token only on the hawkBit origin. A download follows redirects
        (without the token); an API call does not follow them at all."""
        headers = {
            "Authorization": f"GatewayToken {self._token}",
            "Accept": accept,
            "User-Agent": "ajour-delivery",
        }
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            got = fetch(
                method,
                url,
                headers,
                trusted=self.origin,
                timeout=self.timeout,
                limit=limit,
                insecure=self.insecure,
                data=body,
                follow=download,
                credentials_on_redirect=False,
            )
        except FetchError as exc:
            hops = (
                f" (after {exc.redirects} redirect(s) from {safe_url(url)})"
                if exc.redirects
                else ""
            )
            self.fail(f"{exc}{hops}")
        status, payload = got.status, got.body
        log.debug("hawkBit: %s %s -> HTTP %d%s", method, safe_url(url), status, got.location)
        if len(payload) > limit:
            self.fail(f"{method} {safe_url(url)}: the answer is over the {limit} byte limit")
        if status in (401, 403):
            self._refused(method, url, got)
        if 300 <= status < 400:
            self.fail(
                f"{method} {safe_url(url)} answered HTTP {status}: redirects are not followed"
            )
        return status, payload

    def _refused(self, method: str, url: str, got: Fetched) -> NoReturn:
        if got.trusted:
            self.fail(
                f"hawkBit rejected the gateway token (HTTP {got.status}) at {method}"
                f" {safe_url(url)}: check that gateway token authentication is enabled for"
                f" tenant {self.tenant!r} and that the token is that tenant's gateway security"
                " token"
            )
        self.fail(
            f"{method} {safe_url(url)} answered HTTP {got.status}{got.location}; it is not on"
            f" the configured hawkBit origin {self.origin} (or was reached by a redirect), so"
            " the gateway token was not sent; if this is hawkBit itself, configure its origin"
            " as --hawkbit-url"
        )

    def unexpected(
        self, method: str, url: str, status: int, payload: bytes, expected: str
    ) -> NoReturn:
        """A HawkbitError: ``expected`` was not what ``method url`` answered."""
        excerpt = payload[:EXCERPT].decode("utf-8", "replace")
        self.fail(
            f"{method} {safe_url(url)}: expected {expected}; got HTTP {status}, body: {excerpt!r}"
        )

    def fail(self, message: str) -> NoReturn:
        """A HawkbitError saying ``message``, with the token (if in it) masked."""
        raise HawkbitError(message.replace(self._token, "***"))


def link_href(links: object, rel: str) -> str | None:
    """The ``href`` of HAL link ``rel`` in ``links``, or None."""
    link = links.get(rel) if isinstance(links, dict) else None
    found = link.get("href") if isinstance(link, dict) else None
    return found if isinstance(found, str) and found else None
