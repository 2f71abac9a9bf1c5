"""Staged rollouts as the delivery worker runs them: read for the console, operated through it.

The worker answers ``GET <delivery_url>/v1/rollouts`` (every application's current rollout),
``GET …/v1/rollouts/<app>?history=1`` (all of one application's, newest first), with the
status token; and ``POST …/v1/rollouts/<app>/<action>`` with the operator token, answering
the new rollout or 409 with why the state forbids it (``core.rollout.report``). A worker
without that API (an older one) answers 404: the console then shows only the build side's
plan. Nothing here raises: what went wrong is a sentence for a page or a flash message, and
neither token is ever part of one.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from ajour_build.config import InstallationConfig
from ajour_build.core.rollout.report import (
    OPERATOR_TOKEN_ENV,
    RolloutAction,
    RolloutReport,
    RolloutRequest,
    read_rollouts,
)
from ajour_build.core.spec.fields import redact_uri
from ajour_build.core.wire import STATUS_TOKEN_ENV

TIMEOUT = 2.0  # a read, like GET /v1/status
OPERATE_TIMEOUT = 10.0  # an operation writes the rollout store (locked up to 10 s)
MAX_SAID = 500  # characters of the worker's own error text that a page shows
FAILURES = ("reverted", "failed_download", "timed_out")
HELD = ("reverted", "failed_download")  # the outcomes that hold a device back

# what each state allows (core.rollout.model's operations); the worker still decides
ALLOWED: dict[str, frozenset[RolloutAction]] = {
    "running": frozenset(
        {RolloutAction.PAUSE, RolloutAction.ABORT, RolloutAction.ROLLBACK, RolloutAction.PROMOTE}
    ),
    "paused": frozenset(
        {RolloutAction.RESUME, RolloutAction.ABORT, RolloutAction.ROLLBACK, RolloutAction.PROMOTE}
    ),
    "aborted": frozenset({RolloutAction.ROLLBACK}),
    "completed": frozenset({RolloutAction.ROLLBACK}),
}


def allowed(report: RolloutReport) -> frozenset[RolloutAction]:
    return ALLOWED.get(report.state, frozenset())


def operator_token(config: InstallationConfig) -> str:
    """The worker's operator token: ``delivery.operator_token``, else the one the worker
    itself would read from the environment."""
    token = config.delivery.operator_token.get_secret_value()
    return token or os.environ.get(OPERATOR_TOKEN_ENV, "")


@dataclass(frozen=True)
class Totals:
    """A rollout's waves added up, for a one-line summary."""

    devices: int
    pending: int
    downloading: int
    swapped: int
    confirmed: int
    failed: int
    held: int  # reverted or failed download: not offered to_version until retried

    @classmethod
    def of(cls, report: RolloutReport) -> Totals:
        waves = report.waves
        return cls(
            devices=sum(w.devices for w in waves),
            pending=sum(w.pending for w in waves),
            downloading=sum(w.downloading for w in waves),
            swapped=sum(w.outcomes.get("swapped", 0) for w in waves),
            confirmed=sum(w.outcomes.get("confirmed", 0) for w in waves),
            failed=sum(w.failed for w in waves),
            held=max(
                len(report.held_back),
                sum(w.outcomes.get(k, 0) for w in waves for k in HELD),
            ),
        )


@dataclass(frozen=True)
class Staged:
    """The worker's rollouts (newest first for one application), or why there are none."""

    reports: tuple[RolloutReport, ...] = ()
    error: str = ""
    served: bool = True  # False: the worker has no rollout API (404 on /v1/rollouts)

    @property
    def reachable(self) -> bool:
        return not self.error

    def of(self, application: str) -> RolloutReport | None:
        return next((r for r in self.reports if r.application == application), None)


def _said(response: httpx.Response) -> str:
    """The worker's own explanation: ``{"error": …}`` (or detail, message) or plain text."""
    text = response.text.strip()
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "detail", "message"):
            if isinstance(data.get(key), str):
                text = data[key].strip()
                break
    text = "".join(c if c.isprintable() else " " for c in text)
    return text[:MAX_SAID] + ("…" if len(text) > MAX_SAID else "")


def _refused(shown: str, status: int, token: str, name: str, key: str, env: str) -> str:
    why = f"refused the {name} token" if token else f"asks for its {name} token"
    return (
        f"{shown} {why} (HTTP {status}): set delivery.{key} in ajour.yaml or {env} for the service"
    )


def fetch(
    base_url: str, application: str | None = None, token: str = "", history: bool = False
) -> Staged:
    """The worker's current rollouts (or one application's, all of them with ``history``)."""
    if not base_url:
        return Staged(error="service.delivery_url is not set")
    url = base_url.rstrip("/") + "/v1/rollouts"
    if application is not None:
        url += "/" + quote(application, safe="")
    shown = redact_uri(base_url)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        params = {"history": "1"} if history and application is not None else None
        response = httpx.get(
            url, headers=headers, params=params, timeout=TIMEOUT, follow_redirects=False
        )
    except httpx.HTTPError as exc:
        return Staged(error=f"cannot reach {shown}: {type(exc).__name__}")
    except (httpx.InvalidURL, ValueError):
        return Staged(error=f"service.delivery_url {shown!r} is not a usable URL")
    if response.status_code == 404:
        # no rollout API (an older worker), or no rollout of this application
        return Staged(served=application is not None)
    if response.status_code in (401, 403):
        status = response.status_code
        return Staged(
            error=_refused(shown, status, token, "status", "status_tokens", STATUS_TOKEN_ENV)
        )
    if response.status_code != 200:
        return Staged(error=f"{shown} answered HTTP {response.status_code} for its rollouts")
    try:
        data = response.json()
    except ValueError:
        return Staged(error=f"{shown} did not answer JSON for its rollouts")
    try:
        found = read_rollouts(data if isinstance(data, list) else [data])
    except ValueError:
        return Staged(error=f"{shown} answered rollouts that are not a list")
    if application is not None:
        found = [r for r in found if r.application == application]
    return Staged(reports=tuple(found))


@dataclass(frozen=True)
class Answer:
    """What an operation did: the worker's new rollout, or why it did nothing (``error``)."""

    error: str = ""
    report: RolloutReport | None = None

    @property
    def done(self) -> bool:
        return not self.error


def operate(
    base_url: str,
    application: str,
    action: RolloutAction,
    token: str,
    device: str | None = None,
    reason: str | None = None,
    version: str | None = None,
    supersede: bool | None = None,
) -> Answer:
    """Ask the worker to run ``action`` on the application's rollout (``start``: a new one
    to ``version``). Sent once: an operation is not idempotent (a second promote opens
    another wave), so it is never retried."""
    if not base_url:
        return Answer(error="service.delivery_url is not set")
    body = RolloutRequest(
        device=device, reason=reason, version=version, supersede=supersede
    ).model_dump(exclude_none=True)
    url = f"{base_url.rstrip('/')}/v1/rollouts/{quote(application, safe='')}/{action.value}"
    shown = redact_uri(base_url)
    try:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.post(
            url, json=body, headers=headers, timeout=OPERATE_TIMEOUT, follow_redirects=False
        )
    except httpx.TimeoutException as exc:
        return Answer(
            error=f"{shown} did not answer in {OPERATE_TIMEOUT:g} s ({type(exc).__name__});"
            " the operation may or may not have happened: reload to see"
        )
    except httpx.HTTPError as exc:
        return Answer(error=f"cannot reach {shown}: {type(exc).__name__}")
    except (httpx.InvalidURL, ValueError):
        return Answer(error=f"service.delivery_url {shown!r} is not a usable URL")
    status = response.status_code
    if status in (401, 403):
        key = "operator_token"
        return Answer(error=_refused(shown, status, token, "operator", key, OPERATOR_TOKEN_ENV))
    if status == 404:
        said = _said(response)
        return Answer(error=said or f"{shown} has no rollout API (HTTP 404)")
    if status == 409:
        return Answer(error=_said(response) or "the rollout's state does not allow it")
    if not 200 <= status < 300:
        said = _said(response)
        return Answer(error=f"{shown} answered HTTP {status}" + (f": {said}" if said else ""))
    try:
        found = read_rollouts([response.json()])
    except ValueError:
        found = []
    return Answer(report=found[0] if found else None)


class RolloutCache:
    """The worker's rollouts, read at most once per ``ttl`` seconds per (application,
    history), like :class:`ajour_build.console.devices.StatusCache`; an operation forgets
    its application's entries so the page after it shows the new state."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str | None, bool], tuple[float, Staged]] = {}

    def get(
        self, base_url: str, application: str | None = None, token: str = "", history: bool = False
    ) -> Staged:
        key = (base_url, application, history)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl:
                return hit[1]
            found = fetch(base_url, application, token, history)
            self._entries[key] = (time.monotonic(), found)
            if len(self._entries) > 1024:
                oldest = min(self._entries, key=lambda k: self._entries[k][0])
                del self._entries[oldest]
            return found

    def forget(self, base_url: str, application: str) -> None:
        with self._lock:
            stale = [k for k in self._entries if k[0] == base_url and k[1] in (None, application)]
            for key in stale:
                del self._entries[key]
