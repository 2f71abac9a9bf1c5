"""The REST API (``/api/v1``) and Drogue Ajour's paths (``/api/build/v1alpha1``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from starlette.concurrency import run_in_threadpool

from ajour_build.lifecycle import STATES, Build, BuildState
from ajour_build.service import auth
from ajour_build.service.records import Query as BuildQuery
from ajour_build.service.scheduler import NotFound, Outcome
from ajour_build.service.schemas import (
    BuildList,
    BuildOut,
    DrogueBuildInfo,
    ErrorOut,
    LogPage,
    TriggerOut,
    TriggerRequest,
    outcome_out,
)
from ajour_build.service.state import Service, service_of, who_of

Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(auth.bearer)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "No token, or a wrong one."},
    404: {"model": ErrorOut, "description": "No such build, application or device."},
}
_TRIGGER_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    400: {"model": ErrorOut, "description": "The body is not JSON."},
    403: {"model": ErrorOut, "description": "The application is not on the allowlist."},
    429: {"model": ErrorOut, "description": "Build queue full; see Retry-After."},
    503: {"model": ErrorOut, "description": "The build backend is unavailable."},
}


def reader(request: Request, _: Credentials) -> Service:
    service = service_of(request)
    auth.check(request, service.tokens, service.open_reads)
    return service


def writer(request: Request, _: Credentials) -> Service:
    service = service_of(request)
    auth.check_write(request, service.tokens, service.open_access)
    return service


Reader = Annotated[Service, Depends(reader)]
Writer = Annotated[Service, Depends(writer)]
router = APIRouter(prefix="/api/v1", tags=["builds"])
drogue = APIRouter(prefix="/api/build/v1alpha1", tags=["drogue-ajour"])


def _require(service: Service, build_id: str) -> Build:
    build = service.records.get(build_id)
    if build is None:
        raise NotFound(f"build {build_id!r} does not exist; list builds at /api/v1/builds")
    return build


_ISO_DOC = "RFC 3339 time (2026-11-27T08:00:00Z) or date (2026-11-27, as UTC midnight)."
_TIME = {"format": "date-time"}


def _instant(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    value = text.strip().upper()
    leap = ":60" in value[16:19]  # RFC 3339 allows a leap second; Python does not
    if leap:
        value = value[:17] + "59" + value[19:]
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise HTTPException(422, f"{name}={text!r} is not a time; {_ISO_DOC}") from None
    try:
        parsed = parsed + timedelta(seconds=1) if leap else parsed
        parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        parsed.astimezone(UTC)  # the zone must not push it out of range either
    except OverflowError:  # within a zone's offset of year 1 or 9999: the edge of time
        edge = datetime.min if parsed.year < 5000 else datetime.max
        return edge.replace(tzinfo=UTC)
    return parsed


@router.get("/builds", response_model=BuildList, responses={401: _ERRORS[401]})
def list_builds(
    service: Reader,
    application: Annotated[str | None, Query(max_length=63)] = None,
    device: Annotated[str | None, Query(max_length=253)] = None,
    state: Annotated[list[BuildState] | None, Query()] = None,
    since: Annotated[str | None, Query(description=_ISO_DOC, json_schema_extra=_TIME)] = None,
    until: Annotated[str | None, Query(description=_ISO_DOC, json_schema_extra=_TIME)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> BuildList:
    """Builds, newest first; filter by application, device, state and creation time."""
    start, end = _instant(since, "since"), _instant(until, "until")
    query = BuildQuery(application, device, tuple(state or ()), start, end, limit, offset)
    items = [BuildOut.of(b) for b in service.records.find(query)]
    return BuildList(items=items, count=len(items))


@router.get("/builds/{build_id}", response_model=BuildOut, responses=_ERRORS)
def get_build(build_id: str, service: Reader) -> BuildOut:
    """One build: spec hash, commit, state, timings, digest, version, failure."""
    return BuildOut.of(_require(service, build_id))


@router.get(
    "/builds/{build_id}/logs",
    response_model=None,
    responses={
        **_ERRORS,
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Log."},
    },
)
async def build_logs(
    build_id: str, service: Reader, follow: bool = False
) -> PlainTextResponse | StreamingResponse:
    """The build log as text; ``?follow=true`` streams it until the build ends."""
    await run_in_threadpool(_require, service, build_id)
    if not follow:
        lines = await run_in_threadpool(service.records.logs, build_id, 0, 1_000_000)
        return PlainTextResponse("".join(f"{line}\n" for _, line in lines))
    return StreamingResponse(_follow(service, build_id), media_type="text/plain")


async def _follow(service: Service, build_id: str) -> AsyncIterator[str]:
    after = 0
    while True:
        build = await run_in_threadpool(service.records.get, build_id)
        lines = await run_in_threadpool(service.records.logs, build_id, after)
        for seq, line in lines:
            after = seq
            yield f"{line}\n"
        if build is None or not build.active:
            if not lines:
                return
            continue
        await asyncio.sleep(0.3)


@router.get("/builds/{build_id}/log-lines", response_model=LogPage, responses=_ERRORS)
def build_log_page(
    build_id: str,
    service: Reader,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> LogPage:
    """Log lines after sequence number ``after`` (for polling clients such as the console)."""
    build = _require(service, build_id)
    lines = service.records.logs(build_id, after, limit)
    return LogPage(
        build=build_id,
        state=build.state,
        lines=[line for _, line in lines],
        next=lines[-1][0] if lines else after,
    )


@router.post("/builds/{build_id}/cancel", response_model=BuildOut, responses=_ERRORS)
def cancel_build(build_id: str, service: Writer, request: Request) -> BuildOut:
    """Cancel a queued or running build (a finished build is returned unchanged)."""
    return BuildOut.of(cancel_audited(service, request, "api", build_id))


def cancel_audited(service: Service, request: Request, via: str, build_id: str) -> Build:
    """Cancel a build, in the audit log with the build's application and end state."""
    known = service.records.get(build_id)
    return service.audit.around(
        who_of(request, via),
        "cancel",
        known.application if known is not None else "",
        lambda: service.scheduler.cancel(build_id),
        lambda b: (b.id, f"{b.state}" + ("" if known is None or known.active else " already")),
        target=build_id,
    )


def trigger_audited(
    service: Service,
    request: Request,
    via: str,
    app: str,
    device: str | None,
    reason: str,
    version: str | None = None,
) -> Outcome:
    """A trigger, in the audit log with the builds it queued or joined."""
    return service.audit.around(
        who_of(request, via),
        "trigger",
        app,
        lambda: service.scheduler.trigger(app, device, reason, version),
        _described,
        target=f"{app}/{device}" if device else app,
    )


def _described(outcome: Outcome) -> tuple[str, str]:
    ids = " ".join(b.id for b in (*outcome.queued, *outcome.joined))
    return ids, outcome.explanation


def _trigger(
    service: Service, app: str, device: str | None, wanted: TriggerRequest | None, request: Request
) -> JSONResponse:
    version = wanted.version if wanted else None
    outcome = trigger_audited(service, request, "api", app, device, "api", version)
    body = outcome_out(outcome).model_dump(mode="json", by_alias=True)
    return JSONResponse(body, status_code=202 if outcome.queued or outcome.joined else 200)


_Trigger = Annotated[TriggerRequest | None, Body()]


@router.post(
    "/applications/{application}/trigger",
    status_code=202,
    response_model=TriggerOut,
    responses={**_TRIGGER_ERRORS, 200: {"model": TriggerOut, "description": "Nothing to build."}},
)
def trigger_application(
    application: str, service: Writer, request: Request, body: _Trigger = None
) -> JSONResponse:
    """Build every distinct firmware the application and its devices need."""
    return _trigger(service, application, None, body, request)


@router.post(
    "/applications/{application}/devices/{device}/trigger",
    status_code=202,
    response_model=TriggerOut,
    responses={**_TRIGGER_ERRORS, 200: {"model": TriggerOut, "description": "Nothing to build."}},
)
def trigger_device(
    application: str, device: str, service: Writer, request: Request, body: _Trigger = None
) -> JSONResponse:
    """Build the firmware of one device."""
    return _trigger(service, application, device, body, request)


# -- Drogue Ajour's API ------------------------------------------------------------------
_DROGUE_STATUS = {
    "queued": "Pending",
    "running": "Running",
    "succeeded": "Succeeded",
    "failed": "Failed",
    "cancelled": "Cancelled",
    "interrupted": "Interrupted",
}
assert set(_DROGUE_STATUS) == set(STATES)


@drogue.get("", response_model=list[DrogueBuildInfo], responses={401: _ERRORS[401]})
def drogue_builds(service: Reader) -> list[DrogueBuildInfo]:
    """Drogue Ajour's build list: one entry per consumer of each recent build."""
    out: list[DrogueBuildInfo] = []
    for build in service.records.find(BuildQuery(limit=1000)):
        for consumer in build.consumers or (build.application,):
            app, _, device = consumer.partition("/")
            out.append(
                DrogueBuildInfo(
                    app=app,
                    device=device or None,
                    started=build.started.isoformat() if build.started else None,
                    completed=build.finished.isoformat() if build.finished else None,
                    status=_DROGUE_STATUS[build.state],
                )
            )
    return out


@drogue.post("/apps/{application}/trigger", responses=_TRIGGER_ERRORS)
def drogue_trigger_app(application: str, service: Writer, request: Request) -> JSONResponse:
    """Drogue Ajour's trigger: 200 when the builds are queued."""
    outcome = trigger_audited(service, request, "api", application, None, "api (drogue path)")
    return JSONResponse(outcome_out(outcome).model_dump(mode="json", by_alias=True))


@drogue.post("/apps/{application}/devices/{device}/trigger", responses=_TRIGGER_ERRORS)
def drogue_trigger_device(
    application: str, device: str, service: Writer, request: Request
) -> JSONResponse:
    """Drogue Ajour's device trigger: 200 when the build is queued."""
    why = "api (drogue path)"
    outcome = trigger_audited(service, request, "api", application, device, why)
    return JSONResponse(outcome_out(outcome).model_dump(mode="json", by_alias=True))
