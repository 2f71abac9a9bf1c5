"""Devices as the console shows them: the fleet's devices joined with delivery's status.

Delivery's worker answers ``GET <delivery_url>/v1/status[/<app>]`` with what it observed.
Its answer is read defensively (it is another process, maybe another version): entries of
the wrong shape are dropped, unknown states read as ``Unknown``. When the worker cannot be
reached, the pages say so and still list the fleet's devices.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from ajour_build.config import InstallationConfig
from ajour_build.core.fleet import Fleet
from ajour_build.core.spec.fields import redact_uri
from ajour_build.core.wire import (
    DELIVERY_STATES,
    STATUS_TOKEN_ENV,
    DeviceReport,
    read_reports,
)

TIMEOUT = 2.0


@dataclass(frozen=True)
class Delivery:
    """Delivery's view of the devices, or why there is none (``error``)."""

    rows: tuple[DeviceReport, ...] = ()
    error: str = ""

    @property
    def reachable(self) -> bool:
        return not self.error

    def counts(self) -> dict[str, int]:
        found = Counter(r.state for r in self.rows)
        return {state: found.get(state, 0) for state in DELIVERY_STATES}


def status_token(config: InstallationConfig) -> str:
    """The worker's status token: the first of ``delivery.status_tokens``, else the one
    the worker itself would read from the environment."""
    tokens = config.delivery.status_tokens
    if tokens:
        return tokens[0].get_secret_value()
    return os.environ.get(STATUS_TOKEN_ENV, "")


def fetch(base_url: str, application: str | None = None, token: str = "") -> Delivery:
    """Delivery's status of every device (or of one application's); never raises.

    ``token`` is the worker's status token (``Authorization: Bearer``), if it asks for one.
    """
    if not base_url:
        return Delivery(error="service.delivery_url is not set")
    url = base_url.rstrip("/") + "/v1/status"
    if application is not None:
        url += "/" + quote(application, safe="")
    shown = redact_uri(base_url)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(url, headers=headers, timeout=TIMEOUT, follow_redirects=False)
    except httpx.HTTPError as exc:
        return Delivery(error=f"cannot reach {shown}: {type(exc).__name__}")
    except (httpx.InvalidURL, ValueError):
        return Delivery(error=f"service.delivery_url {shown!r} is not a usable URL")
    if response.status_code == 404 and application is not None:
        return Delivery()  # delivery knows no device of this application
    if response.status_code in (401, 403):
        why = "refused the status token" if token else "asks for its status token"
        return Delivery(
            error=f"{shown} {why} (HTTP {response.status_code}): set delivery.status_tokens"
            f" in ajour.yaml or {STATUS_TOKEN_ENV} for the service"
        )
    if response.status_code != 200:
        return Delivery(error=f"{shown} answered HTTP {response.status_code}")
    try:
        data = response.json()
    except ValueError:
        return Delivery(error=f"{shown} did not answer JSON")
    if not isinstance(data, list):
        return Delivery(error=f"{shown} answered JSON that is not a list of devices")
    return Delivery(rows=tuple(read_reports(data)))


class StatusCache:
    """Delivery's status, read at most once per ``ttl`` seconds per application.

    Every open console tab polls; without this, each poll of each tab would make the
    delivery worker list its devices. One cache per console (on ``app.state``).
    """

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str | None], tuple[float, Delivery]] = {}

    def get(self, base_url: str, application: str | None = None, token: str = "") -> Delivery:
        key = (base_url, application)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            # under the lock: one fetch, not one per tab
            found = fetch(base_url, application, token)
            self._entries[key] = (time.monotonic(), found)
            if len(self._entries) > 1024:  # many applications: forget the oldest
                oldest = min(self._entries, key=lambda k: self._entries[k][0])
                del self._entries[oldest]
            return found


def merge(fleet: Fleet, delivery: Delivery, application: str | None = None) -> list[DeviceReport]:
    """The fleet's devices with delivery's status, plus devices only delivery knows."""
    seen = {r.key: r for r in delivery.rows}
    why = "no status from delivery yet" if delivery.reachable else "delivery unreachable"
    for (app, name), _device in fleet.devices.items():
        if (application is None or app == application) and (app, name) not in seen:
            spec = fleet.effective_firmware(app, name)
            seen[(app, name)] = DeviceReport(
                application=app, device=name, source=spec.kind if spec else "", detail=why
            )
    return [seen[key] for key in sorted(seen) if application is None or key[0] == application]


def by_application(rows: list[DeviceReport]) -> dict[str, list[DeviceReport]]:
    grouped: dict[str, list[DeviceReport]] = {}
    for row in rows:
        grouped.setdefault(row.application, []).append(row)
    return grouped


@dataclass(frozen=True)
class Rollout:
    """How far one firmware version got through an application's devices."""

    application: str
    version: str
    versions: tuple[str, ...]  # versions to choose from, newest first
    on: tuple[DeviceReport, ...]
    updating: tuple[DeviceReport, ...]
    waiting: tuple[DeviceReport, ...]  # not yet on it, and not updating to it

    @property
    def total(self) -> int:
        return len(self.on) + len(self.updating) + len(self.waiting)


def versions_seen(rows: list[DeviceReport], built: list[str]) -> list[str]:
    """Target versions, newest first: by when delivery last served them, then builds."""
    latest: dict[str, float] = {}
    for row in rows:
        if row.target:
            latest[row.target] = max(latest.get(row.target, 0.0), row.last_seen)
    ordered = sorted(latest, key=lambda v: latest[v], reverse=True)
    for version in built:  # newest build first
        if version and version not in latest:
            ordered.append(version)
            latest[version] = 0.0
    return ordered


def rollout(
    application: str, rows: list[DeviceReport], built: list[str], version: str | None
) -> Rollout:
    """The rollout of ``version`` (default: the newest version seen) to the devices."""
    versions = versions_seen(rows, built)
    chosen = version if version else (versions[0] if versions else "")
    on, updating, waiting = [], [], []
    for row in rows:
        if chosen and row.current == chosen:
            on.append(row)
        elif chosen and row.state == "Updating" and row.target == chosen:
            updating.append(row)
        else:
            waiting.append(row)
    if chosen and chosen not in versions:
        versions.append(chosen)
    return Rollout(application, chosen, tuple(versions), tuple(on), tuple(updating), tuple(waiting))
