"""HTTP requests that follow redirects themselves, so credentials stay on their own origin.

urllib's redirect handler copies every header given to ``Request(headers=…)`` to wherever a
``Location`` points: another host, a CDN, plain http. A registry that redirects a blob GET
to its storage would get the registry credentials sent there, and a presigned S3 or GCS URL
refuses a request that carries both its signature and an ``Authorization`` header. So
``fetch`` never lets urllib follow a redirect, and follows GET and HEAD redirects itself:

* credential headers (``Authorization``, ``Proxy-Authorization``, ``Cookie``) are sent only
  to the trusted origin (scheme, host and port); once a hop leaves it they are dropped for
  the rest of the chain, even if it comes back;
* https is never downgraded to http, except to a loopback host; plain http to a host off
  loopback needs ``insecure`` (and is then allowed only where the chain is already http);
* at most ``max_redirects`` hops; a redirect without ``Location``, or to another scheme,
  is an error;
* URLs in errors lose their user info and query (a presigned URL's query is a credential).

Standard library only: delivery uses it too.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any, Final
from urllib.parse import urljoin, urlsplit

from ajour_build.core.errors import ArtifactError
from ajour_build.core.hosts import is_loopback

CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization", "cookie"})
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS: Final = 5
ERROR_LIMIT: Final = 64 * 1024
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port: what credentials are scoped to."""

    scheme: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Origin:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        try:
            port = parts.port
        except ValueError:
            raise ArtifactError(f"URL {safe_url(url)!r} has an invalid port") from None
        return cls(scheme, (parts.hostname or "").lower(), port or _DEFAULT_PORTS.get(scheme, 0))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def safe_url(url: str) -> str:
    """``url`` without user info, query and fragment: fit for messages and logs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    query = "?…" if parts.query else ""
    return f"{parts.scheme}://{host}{port}{parts.path}{query}"


@dataclass(frozen=True)
class Fetched:
    """An answer, and where it came from."""

    status: int
    headers: dict[str, str]
    body: bytes
    url: str  # the URL that answered (after any redirects)
    redirects: int
    trusted: bool  # it answered on the trusted origin, and credentials went all the way

    @property
    def location(self) -> str:
        """For messages: where the answer came from, if a redirect took it elsewhere."""
        if self.trusted or not self.redirects:
            return ""
        return f" (at {safe_url(self.url)}, after {self.redirects} redirect(s))"


class FetchError(ArtifactError):
    """A request that failed before any answer, or a redirect that is refused."""

    def __init__(
        self, message: str, url: str, redirects: int, unreachable: bool, reason: str = ""
    ) -> None:
        super().__init__(message)
        self.url, self.redirects, self.unreachable = url, redirects, unreachable
        self.reason = reason or message  # for unreachable: the connection's own reason


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Hand every 3xx back as it is: ``fetch`` decides whether and how to follow it."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER: Final = urllib.request.build_opener(_NoRedirect)


def plain_http_problem(url: str, insecure: bool, previous: str = "") -> str | None:
    """Why ``url`` may not be fetched (after ``previous``), or None if it may."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname or ""
    if scheme not in _DEFAULT_PORTS or not host:
        return f"{safe_url(url)!r} is not an http(s) URL with a host"
    if scheme == "https" or is_loopback(host):
        return None
    if urlsplit(previous).scheme.lower() == "https":
        return (
            f"refusing a redirect from https to plain http ({safe_url(url)}): it would"
            " downgrade the connection; only loopback hosts may be reached that way"
        )
    if not insecure:
        return (
            f"refusing plain http to {host!r} ({safe_url(url)}): the data would travel"
            " unencrypted; use https, or opt in with insecure"
        )
    return None


def fetch(
    method: str,
    url: str,
    headers: Mapping[str, str],
    *,
    trusted: Origin,
    timeout: float,
    limit: int,
    insecure: bool = False,
    data: bytes | None = None,
    follow: bool = True,
    max_redirects: int = MAX_REDIRECTS,
    credentials_on_redirect: bool = True,
) -> Fetched:
    """``method url``; credential headers only go to ``trusted``. See the module docstring.

    ``follow=False`` returns a 3xx as it is; only GET and HEAD follow redirects.
    ``credentials_on_redirect=False`` drops credentials at the first redirect, even one that
    stays on the trusted origin. Bodies are read up to ``limit + 1`` bytes (errors up to
    64 KiB), so the caller can tell an answer that is over its limit.
    """
    follow = follow and method in ("GET", "HEAD")
    current, previous, hops = url, "", 0
    with_credentials = True
    while True:
        problem = plain_http_problem(current, insecure, previous)
        if problem is not None:
            raise FetchError(problem, current, hops, unreachable=False)
        on_origin = Origin.of(current) == trusted
        with_credentials = with_credentials and on_origin
        sent = {
            k: v
            for k, v in headers.items()
            if with_credentials or k.lower() not in CREDENTIAL_HEADERS
        }
        request = urllib.request.Request(current, data, sent, method=method)
        try:
            with _OPENER.open(request, timeout=timeout) as response:
                return Fetched(
                    int(response.status),
                    dict(response.headers.items()),
                    response.read(limit + 1),
                    current,
                    hops,
                    with_credentials,
                )
        except urllib.error.HTTPError as exc:
            try:
                status, answer_headers = exc.code, dict(exc.headers.items())
                body = exc.read(ERROR_LIMIT) if status not in REDIRECTS or not follow else b""
            finally:
                exc.close()
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise FetchError(
                f"{method} {safe_url(current)} failed: {type(exc).__name__}: {reason}",
                current,
                hops,
                unreachable=True,
                reason=str(reason),
            ) from None
        if status not in REDIRECTS or not follow:
            return Fetched(status, answer_headers, body, current, hops, with_credentials)
        location = {k.lower(): v for k, v in answer_headers.items()}.get("location", "")
        if not location:
            raise FetchError(
                f"{method} {safe_url(current)} answered HTTP {status} without a Location",
                current,
                hops,
                unreachable=False,
            )
        if hops >= max_redirects:
            raise FetchError(
                f"{method} {safe_url(url)}: more than {max_redirects} redirects (the last to"
                f" {safe_url(urljoin(current, location))}); refusing to follow further",
                current,
                hops,
                unreachable=False,
            )
        previous, current, hops = current, urljoin(current, location), hops + 1
        with_credentials = with_credentials and credentials_on_redirect
