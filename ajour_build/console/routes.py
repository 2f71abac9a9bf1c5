"""The console's routes: pages (GET, open per ``service.open_reads``), actions (POST, token).

Every answer is HTML: errors become pages with links back, never a 500 or a JSON body. The
actions are plain form posts; after a trigger the browser is sent (303) to the new build.
Console routes stay out of the OpenAPI document: they are for people, not clients.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ajour_build.console import access, audit, devices, pages, staged, views
from ajour_build.core.errors import AjourError
from ajour_build.core.rollout.report import VERSION_TAG, RolloutAction
from ajour_build.service import auth
from ajour_build.service.api import cancel_audited, trigger_audited
from ajour_build.service.http_status import answer_for
from ajour_build.service.scheduler import Outcome
from ajour_build.service.state import service_of, who_of

MAX_APP = 63
MAX_DEVICE = 253
router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)


def problem(request: Request, exc: AjourError) -> Response:
    """An error from the service's parts, as a page with the matching status."""
    answer = answer_for(exc)
    links = [("/devices", "Devices")] if answer.status == 404 else []
    return views.message(
        request, answer.status, answer.title, str(exc), links, headers=answer.headers or None
    )


def _page(request: Request, page: Callable[[], Response]) -> Response:
    """``page()`` if the request may read, else the way to the login page."""
    if not access.viewer(request).can_read:
        if request.query_params.get("fragment") is not None:
            return Response("sign in again", 401, media_type="text/plain", headers=views.HEADERS)
        return RedirectResponse(access.login_url(access.here(request)), 303)
    try:
        return page()
    except AjourError as exc:
        return problem(request, exc)


def _signin(request: Request, status: int, note: str, next_path: str) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return views.render(
        request,
        "login.html",
        status=status,
        headers=headers,
        section="login",
        next_path=access.safe_next(next_path),
        note=note,
    )


# -- pages --------------------------------------------------------------------------------
@router.get("/")
def overview(request: Request) -> Response:
    return _page(request, lambda: pages.overview(request))


@router.get("/builds")
def builds(request: Request) -> Response:
    return _page(request, lambda: pages.builds(request))


@router.get("/builds/{build_id}")
def build(request: Request, build_id: str) -> Response:
    return _page(request, lambda: pages.build_detail(request, build_id))


@router.get("/devices")
def device_list(request: Request) -> Response:
    return _page(request, lambda: pages.device_list(request))


@router.get("/devices/{app}")
def app_devices(request: Request, app: str) -> Response:
    return _page(request, lambda: pages.device_list(request, app))


@router.get("/devices/{app}/{device:path}")
def device(request: Request, app: str, device: str) -> Response:
    return _page(request, lambda: pages.device_detail(request, app, device))


@router.get("/rollouts")
def rollouts(request: Request) -> Response:
    return _page(request, lambda: pages.rollouts(request))


@router.get("/rollouts/{app}")
def rollout(request: Request, app: str) -> Response:
    return _page(request, lambda: pages.rollout(request, app))


@router.get("/audit")
def audit_log(request: Request) -> Response:
    """Only with a token (or open access): public reads do not open the audit log."""
    if access.viewer(request).can_read and not access.viewer(request).can_write:
        note = "The audit log names tokens and addresses: sign in with an API token to see it."
        return _signin(request, 401, note, access.here(request))
    return _page(request, lambda: audit.page(request))


# -- actions ------------------------------------------------------------------------------
def _after_trigger(request: Request, outcome: Outcome, what: str) -> Response:
    started = outcome.queued or outcome.joined
    if started:
        return RedirectResponse(f"/builds/{views.segment(started[0].id)}", 303)
    text = outcome.explanation or "nothing to build"
    if outcome.refused:
        text += " (refused: " + "; ".join(outcome.refused) + ")"
    return views.message(request, 200, f"Nothing to build for {what}", text)


@router.post("/actions/trigger")
async def trigger(request: Request) -> Response:
    """Build an application (``application``) or one device (and ``device``)."""
    try:
        fields = await access.form(request)
    except access.FormRefused as exc:
        return views.message(request, exc.status, exc.title, str(exc))
    if not access.viewer(request).can_write:
        note = "Sign in with an API token to trigger builds."
        return _signin(request, 401, note, fields.get("next", "/"))
    app, device = fields.get("application", "").strip(), fields.get("device", "").strip()
    if not app or len(app) > MAX_APP or len(device) > MAX_DEVICE:
        text = "the form needs an application name (and, for a device build, a device name)"
        return views.message(request, 400, "Cannot trigger a build", text)
    svc = service_of(request)
    try:
        outcome = await run_in_threadpool(
            trigger_audited, svc, request, "console", app, device or None, "console"
        )
    except AjourError as exc:
        return problem(request, exc)
    return _after_trigger(request, outcome, f"{app}/{device}" if device else app)


@router.post("/builds/{build_id}/cancel")
async def cancel(request: Request, build_id: str) -> Response:
    """Cancel a queued or running build; back to its page either way."""
    try:
        fields = await access.form(request)
    except access.FormRefused as exc:
        return views.message(request, exc.status, exc.title, str(exc))
    back = f"/builds/{views.segment(build_id)}"
    if not access.viewer(request).can_write:
        note = "Sign in with an API token to cancel builds."
        return _signin(request, 401, note, fields.get("next", back))
    try:
        await run_in_threadpool(cancel_audited, service_of(request), request, "console", build_id)
    except AjourError as exc:
        return problem(request, exc)
    return RedirectResponse(back, 303)


LABELS = {
    RolloutAction.PAUSE: "Pause",
    RolloutAction.RESUME: "Resume",
    RolloutAction.ABORT: "Abort",
    RolloutAction.ROLLBACK: "Rollback",
    RolloutAction.PROMOTE: "Promote",
    RolloutAction.RETRY: "Retry",
    RolloutAction.START: "Start",
}
MAX_REASON = 512


@dataclass(frozen=True)
class _Form:
    """An operation's form: the action and what it takes."""

    action: RolloutAction
    device: str = ""
    reason: str = ""
    version: str = ""
    supersede: bool = False


def _operation(fields: dict[str, str], app: str, action: str) -> _Form:
    """What an operation's form asks for, or ValueError saying why it cannot be sent."""
    try:
        chosen = RolloutAction(action)
    except ValueError:
        names = ", ".join(a.value for a in RolloutAction)
        raise ValueError(f"{action!r} is not a rollout operation; use one of {names}") from None
    device, reason = fields.get("device", "").strip(), fields.get("reason", "").strip()
    version = fields.get("version", "").strip()
    if not app or len(app) > MAX_APP:
        raise ValueError(f"an application name has 1 to {MAX_APP} characters")
    if chosen is RolloutAction.RETRY and not 1 <= len(device) <= MAX_DEVICE:
        raise ValueError(f"retry needs the device to retry (1 to {MAX_DEVICE} characters)")
    if len(reason) > MAX_REASON:
        raise ValueError(f"a reason has at most {MAX_REASON} characters, not {len(reason)}")
    if chosen is RolloutAction.START and not VERSION_TAG.fullmatch(version):
        shown = repr(version[:140]) if version else "nothing"
        raise ValueError(
            f"start needs the version to roll out, as it is tagged (e.g. 1.4.2: 1 to 128 ASCII"
            f" letters, digits, '_', '.' or '-', not starting with '.' or '-'); got {shown}"
        )
    supersede = chosen is RolloutAction.START and fields.get("supersede", "") in ("1", "on")
    return _Form(chosen, device, reason, version, supersede)


def _done(app: str, form: _Form, answer: staged.Answer) -> str:
    report, action = answer.report, form.action
    if action is RolloutAction.RETRY:
        version = report.to_version if report is not None else "the new version"
        return f"Retry: {form.device} of {app} is offered {version} again."
    if report is None:
        return f"{LABELS[action]}: done."
    if action is RolloutAction.START:
        return (
            f"Start: rollout {report.seq} of {app}, {report.from_version} → {report.to_version},"
            f" is {report.state} now."
        )
    return f"{LABELS[action]}: rollout {report.seq} of {app} is {report.state} now."


@router.post("/rollouts/{app}/{action}")
async def operate(request: Request, app: str, action: str) -> Response:
    """Pause, resume, abort, roll back, promote or start a rollout, or retry a device,
    through the worker with the operator token; back to the rollout's page with what
    happened."""
    try:
        fields = await access.form(request)
    except access.FormRefused as exc:
        return views.message(request, exc.status, exc.title, str(exc))
    back = f"/rollouts/{views.segment(app)}"
    if not access.viewer(request).can_write:
        return _signin(request, 401, "Sign in with an API token to operate rollouts.", back)
    try:
        form = _operation(fields, app, action)
    except ValueError as exc:
        return views.message(request, 400, "Cannot run that operation", str(exc), [(back, "Back")])
    config = service_of(request).config
    base = config.service.delivery_url
    cache: staged.RolloutCache = request.app.state.delivery_rollouts
    response = RedirectResponse(back, 303)
    chosen = form.action
    seen = fields.get("seq", "")
    if seen.isascii() and seen.isdigit() and len(seen) <= 12 and chosen is not RolloutAction.RETRY:
        # the page showed rollout `seen`; a newer one may have started since
        now = await run_in_threadpool(staged.fetch, base, app, devices.status_token(config))
        newest = now.reports[0].seq if now.reports else None
        if newest is not None and newest != int(seen):
            text = (
                f"{LABELS[chosen]} not sent: the page showed rollout {seen} of {app}, and"
                f" rollout {newest} has started since. Look at it first."
            )
            views.flash(response, request, "bad", text)
            cache.forget(base, app)
            await run_in_threadpool(
                _audit_operation, request, app, chosen, form.device or "", "refused", text
            )
            return response
    answer = await run_in_threadpool(
        staged.operate,
        base,
        app,
        chosen,
        staged.operator_token(config),
        (form.device or None) if chosen is RolloutAction.RETRY else None,
        (form.reason or None) if chosen is RolloutAction.PAUSE else None,
        form.version if chosen is RolloutAction.START else None,
        True if form.supersede else None,
    )
    cache.forget(base, app)
    if answer.done:
        text, kind = _done(app, form, answer), "ok"
    else:
        text, kind = f"{LABELS[chosen]} refused: {answer.error}", "bad"
    log.info("console: rollout operation %s on %r: %s", chosen.value, app, text)
    await run_in_threadpool(
        _audit_operation,
        request,
        app,
        chosen,
        form.device or "",
        "ok" if answer.done else "refused",
        text,
    )
    views.flash(response, request, kind, text)
    return response


def _audit_operation(
    request: Request, app: str, action: RolloutAction, device: str, outcome: str, text: str
) -> None:
    """A rollout operation in the audit log (``promote`` is how a manual wave is approved).
    Its target: the device of a retry; a start names its version in ``text``."""
    target = device if action is RolloutAction.RETRY else ""
    service_of(request).audit.record(
        who_of(request, "console"), f"rollout.{action.value}", outcome,
        application=app, target=target, detail=text,
    )  # fmt: skip


@router.get("/login")
def login_form(request: Request) -> Response:
    note = "You are signed in." if access.viewer(request).signed_in else ""
    return _signin(request, 200, note, request.query_params.get("next", "/"))


@router.post("/login")
async def login(request: Request) -> Response:
    try:
        fields = await access.form(request)
    except access.FormRefused as exc:
        return views.message(request, exc.status, exc.title, str(exc))
    token, next_path = fields.get("token", "").strip(), fields.get("next", "/")
    if not auth.valid(token, service_of(request).tokens):
        return _signin(request, 401, "That token is not valid.", next_path)
    response = RedirectResponse(access.safe_next(next_path), 303)
    access.set_token(response, request, token)
    return response


@router.post("/logout")
def logout(request: Request) -> Response:
    response = RedirectResponse("/" if service_of(request).open_reads else "/login", 303)
    access.clear_token(response, request)
    return response


# -- wiring -------------------------------------------------------------------------------
def _wants_html(request: Request) -> bool:
    path = request.url.path
    if request.method != "GET" or path.startswith(("/api/", "/webhooks/", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")


Handler = Callable[[Request, Exception], Awaitable[Response]]
AnyHandler = Callable[[Request, Any], Response | Awaitable[Response]]


def _not_found(previous: AnyHandler) -> Handler:
    """Unknown paths: a page for browsers; everyone else gets the app's own JSON errors."""

    async def handle(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404 and _wants_html(request):
            text = f"Nothing lives at {request.url.path!r}."
            links = [("/builds", "Builds"), ("/devices", "Devices")]
            return views.message(request, 404, "Page not found", text, links)
        answer = previous(request, exc)
        return await answer if inspect.isawaitable(answer) else answer

    return handle


def mount(app: FastAPI) -> None:
    """Serve the console: pages at ``/``, its CSS and script under ``/static/``."""
    app.mount("/static", StaticFiles(directory=views.STATIC), name="console-static")
    app.include_router(router)
    app.state.delivery_status = devices.StatusCache()
    app.state.delivery_rollouts = staged.RolloutCache()
    previous = app.exception_handlers.get(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(StarletteHTTPException, _not_found(previous))
