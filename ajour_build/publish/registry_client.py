"""oras-py's registry client with bounds: timeouts, a deadline, and retries only where safe.

oras-py sends every request without a timeout (a stalled registry hangs a publish forever)
and retries every failed request, POST and PUT included, five times over 131 s. Here each
request gets a connect and a read timeout, both capped by what is left of the publish's
deadline; only GET and HEAD are retried (twice, after 0.25 s and 0.5 s, when answered HTTP
500/502/503/504); anything else, and a refused or timed-out connection, fails at once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import oras.provider
import requests
import requests.adapters

IDEMPOTENT = frozenset({"GET", "HEAD"})
RETRY_STATUS = frozenset({500, 502, 503, 504})
RETRY_PAUSES = (0.25, 0.5)
_UNBOUNDED_REQUEST = oras.provider.Registry.do_request.__wrapped__  # without oras's retries


@dataclass(frozen=True)
class Bounds:
    """How long a registry may take: per request, and for the whole publish."""

    connect: float  # seconds to open a connection
    read: float  # seconds the registry may stay silent within one request
    deadline: float  # time.monotonic() by which the whole publish must be done

    def remaining(self, host: str) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise DeadlineError(host)
        return left

    def timeouts(self, host: str) -> tuple[float, float]:
        left = self.remaining(host)
        return min(self.connect, left), min(self.read, left)


class DeadlineError(requests.exceptions.Timeout):
    """The publish's deadline passed before a request could start."""

    def __init__(self, host: str) -> None:
        super().__init__(f"the publish's deadline passed before the next request to {host}")


class _Adapter(requests.adapters.HTTPAdapter):
    def __init__(self, bounds: Bounds, host: str) -> None:
        super().__init__(max_retries=0)
        self.bounds, self.host = bounds, host

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: bool | str = True,
        cert: Any = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        bounded = self.bounds.timeouts(self.host)  # whatever the caller asked for
        return super().send(request, stream, bounded, verify, cert, proxies)


class BoundedRegistry(oras.provider.Registry):  # type: ignore[misc]
    """``oras.provider.Registry`` whose requests are bounded by ``bounds``."""

    def __init__(self, hostname: str, insecure: bool, bounds: Bounds) -> None:
        super().__init__(hostname=hostname, insecure=insecure, auth_backend="basic")
        self.bounds = bounds
        adapter = _Adapter(bounds, hostname)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def do_request(
        self,
        url: str,
        method: str = "GET",
        data: dict[str, Any] | bytes | None = None,
        headers: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        stream: bool = False,
    ) -> requests.Response:
        pauses = RETRY_PAUSES if method.upper() in IDEMPOTENT else ()
        for pause in pauses:
            response = self._once(url, method, data, headers, json, stream)
            if response.status_code not in RETRY_STATUS or not self._can_wait(pause):
                return response
            time.sleep(pause)
        return self._once(url, method, data, headers, json, stream)

    def _once(self, *args: Any) -> requests.Response:
        response: requests.Response = _UNBOUNDED_REQUEST(self, *args)
        return response

    def _can_wait(self, pause: float) -> bool:
        return self.bounds.deadline - time.monotonic() > pause
