"""The worker's rollout API (the JSON is ``ajour_build.core.rollout.report``).

* ``GET /v1/rollouts``: the current rollout of each application with ``spec.rollout``;
  ``GET /v1/rollouts/<app>`` one (``?history=1``: every rollout of it, newest first).
  Bearer: the status token.
* ``POST /v1/rollouts/<app>/<action>`` (pause, resume, abort, rollback, promote, retry,
  start), body ``{}``, ``{"reason": …}`` (pause), ``{"device": …}`` (retry) or
  ``{"version": …, "supersede": true|false}`` (start), at most 4 KiB: the new report.
  Bearer: the operator token; the status token is refused (403), and without a
  configured operator token everyone is (401), unless authentication is off.

Answers: 400 for a body that is not the request, 404 for an unknown application, rollout,
action, device or (start) a version that is not published, 409 for an operation the
rollout's state does not allow (the ``RolloutError`` text), 503 when the rollout database or
(start) the firmware repository cannot be used now.
:mod:`delivery.http` routes ``/v1/rollouts`` here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import unquote

from pydantic import ValidationError

from ajour_build.core.rollout.model import RolloutError
from ajour_build.core.rollout.report import (
    OPERATOR_TOKEN_ENV,
    RolloutAction,
    RolloutReport,
    RolloutRequest,
)
from ajour_build.core.wire import STATUS_TOKEN_ENV
from delivery.errors import DeliveryError
from delivery.http_exchange import Accept, Request, Response
from delivery.rollout_reports import NotFound, RolloutReports
from delivery.rollout_store import StoreUnavailable
from delivery.sources.firmware_source import SourceUnavailable
from delivery.store import DeviceStatus
from delivery.targets import NotPublished
from delivery.worker import Worker

ROLLOUTS = "/v1/rollouts"
MAX_REQUEST_BYTES = 4096
JSON = "application/json"
ACTIONS = ", ".join(a.value for a in RolloutAction)
REQUEST_FIELDS = (
    '{"reason": "<why>"} for pause, {"device": "<name>"} for retry, {"version": "<v>"}'
    ' (and "supersede": true) for start, else {}'
)


class Tokens(Protocol):
    """What the API reads of the HTTP settings."""

    authenticate: bool
    status_token: str
    operator_token: str


Bearer = Callable[[Request, str, str, str], "Response | None"]
"""The transport's bearer check: (request, token, what, env) -> a 401, or None."""


def _json(data: Any) -> Response:
    return Response(200, json.dumps(data).encode(), JSON)


def _parts(request: Request) -> list[str]:
    return [unquote(p) for p in request.path.split("/") if p]


def _request(body: bytes) -> RolloutRequest:
    """The body as a RolloutRequest (empty: ``{}``), or ValueError saying what is wrong."""
    try:
        data = json.loads(body) if body.strip() else {}
    except ValueError as exc:
        raise ValueError(f"the body is not JSON ({exc}); send {REQUEST_FIELDS}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the body is a JSON {type(data).__name__}; send {REQUEST_FIELDS}")
    try:
        return RolloutRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"the body is not a rollout request: {problems}; send"
                         f" {REQUEST_FIELDS}") from None  # fmt: skip


def _fits(action: RolloutAction, request: RolloutRequest) -> str:
    """Why the request does not fit the action ("" if it does)."""
    start = action is RolloutAction.START
    if start and request.version is None:
        return 'start needs the version: send {"version": "<a published version>"}'
    if not start and (request.version is not None or request.supersede is not None):
        what = "version" if request.version is not None else "supersede"
        return f'"{what}" is only for start, not for {action.value}'
    if action is RolloutAction.RETRY and request.device is None:
        return 'retry needs the device: send {"device": "<name>"}'
    if action is not RolloutAction.RETRY and request.device is not None:
        return f'"device" is only for retry, not for {action.value}'
    if action is not RolloutAction.PAUSE and request.reason is not None:
        return f'"reason" is only for pause, not for {action.value}'
    reason = request.reason or ""
    bad = next((i for i, c in enumerate(reason) if not c.isprintable()), None)
    if bad is not None:
        return f'"reason" must be one printable line; character {bad + 1} is {reason[bad]!r}'
    return ""


class RolloutApi:
    def __init__(
        self, worker: Worker, tokens: Tokens, bearer: Bearer, matches: Callable[[str, str], bool]
    ) -> None:
        self.worker, self.tokens, self.bearer, self.matches = worker, tokens, bearer, matches
        self.reports = RolloutReports(worker)

    # on the event loop: the head only ---------------------------------------------------------
    def route(self, request: Request) -> Response | Accept:
        parts = _parts(request)
        if len(parts) > 4:
            return Response.text(
                404, f"not found: {request.path}; the routes are GET {ROLLOUTS}[/<app>] and"
                f" POST {ROLLOUTS}/<app>/<action>",
            )  # fmt: skip
        operate = len(parts) == 4
        allowed = "POST" if operate else "GET"
        if request.method != allowed:
            return Response.text(
                405, f"{request.method} is not allowed here; use {allowed}", ("allow", allowed)
            )
        if not operate:
            status = self.tokens.status_token
            return self.bearer(request, status, "status", STATUS_TOKEN_ENV) or Accept(0, self._read)
        return self._operator(request) or Accept(MAX_REQUEST_BYTES, self._operate)

    def _operator(self, request: Request) -> Response | None:
        tokens = self.tokens
        given = request.header("authorization")
        if (
            tokens.authenticate
            and tokens.status_token
            and self.matches(given, tokens.status_token)
            and not self.matches(given, tokens.operator_token)
        ):
            self.worker.counters.add("unauthorized")
            return Response.text(
                403, "forbidden: the status token only reads rollouts; operations need"
                f" 'Authorization: Bearer <the operator token>' (serve --operator-token or"
                f" {OPERATOR_TOKEN_ENV})",
            )  # fmt: skip
        return self.bearer(request, tokens.operator_token, "operator", OPERATOR_TOKEN_ENV)

    # on the thread pool -------------------------------------------------------------------------
    def _read(self, request: Request, _body: bytes) -> Response:
        parts = _parts(request)
        history = request.param("history")
        if history not in ("", "0", "1", "false", "true"):
            return Response.text(400, f"history={history!r}: use history=1 (or leave it out)")
        try:
            if len(parts) == 2:
                return _json([r.as_json() for r in self.reports.all()])
            if history in ("1", "true"):
                return _json([r.as_json() for r in self.reports.history(parts[2])])
            return _json(self.reports.report(parts[2]).as_json())
        except NotFound as exc:
            return Response.text(404, str(exc))
        except StoreUnavailable as exc:
            return Response.text(503, f"{exc}; try again")

    def _operate(self, request: Request, body: bytes) -> Response:
        application, name = _parts(request)[2:]
        try:
            action = RolloutAction(name)
        except ValueError:
            return Response.text(404, f"unknown action {name!r}; the actions are {ACTIONS}")
        try:
            wanted = _request(body)
        except ValueError as exc:
            return Response.text(400, str(exc))
        misfit = _fits(action, wanted)
        if misfit:
            return Response.text(400, misfit)
        try:
            if action is RolloutAction.START:
                return _json(self.start(application, wanted).as_json())
            return _json(self.operate(application, action, wanted).as_json())
        except (NotFound, NotPublished) as exc:
            return Response.text(404, str(exc))
        except RolloutError as exc:
            return Response.text(409, str(exc))
        except (StoreUnavailable, SourceUnavailable) as exc:
            return Response.text(503, f"{exc}; try again")
        except DeliveryError as exc:  # firmware that is not a container
            return Response.text(409, str(exc))

    def start(self, application: str, wanted: RolloutRequest) -> RolloutReport:
        """A new rollout of the application to the published ``wanted.version``; the report.

        404: an unknown application or an unpublished version; 409 (RolloutError): an
        application without ``spec.rollout`` or without a rollout yet, one running or paused
        (without ``supersede``), a version its devices are offered already."""
        reports = self.reports
        app = self.worker.targets.fleet.applications.get(application)
        if app is None:
            raise NotFound(f"application {application!r} is not in the fleet")
        if app.rollout is None:
            raise RolloutError(
                f"application {application!r} has no spec.rollout, so it has no rollouts to"
                " start: its devices get the newest version at once (add spec.rollout to its"
                " Application to roll versions out in waves)"
            )
        assert wanted.version is not None
        self.worker.targets.published(application, wanted.version)  # NotPublished: 404
        reports.rollouts.start(application, wanted.version, app.rollout, bool(wanted.supersede))
        return reports.report(application)

    def operate(
        self, application: str, action: RolloutAction, wanted: RolloutRequest
    ) -> RolloutReport:
        """Run the operation on the application's current rollout; the report after it."""
        reports = self.reports
        reports.current(application)  # NotFound for an unknown app or one without a rollout
        rollouts = reports.rollouts
        if action is RolloutAction.PAUSE:
            rollouts.pause(application, wanted.reason or "paused by an operator")
        elif action is RolloutAction.RESUME:
            rollouts.resume(application)
        elif action is RolloutAction.ABORT:
            rollouts.abort(application)
        elif action is RolloutAction.ROLLBACK:
            rollouts.rollback(application)
        elif action is RolloutAction.PROMOTE:
            rollouts.promote(application)
        else:
            assert wanted.device is not None
            reports.device(application, wanted.device)
            rollouts.retry(application, wanted.device)
        return reports.report(application)

    def annotate(self, rows: list[DeviceStatus]) -> list[DeviceStatus]:
        """``/v1/status`` rows with each rollout device's note (see RolloutReports)."""
        try:
            return self.reports.annotate(rows)
        except StoreUnavailable:
            return rows  # the status still answers; the device rows say what the store said
