"""``POST /webhooks/{github,gitlab,gitea}``: push events start the builds they affect.

Order of checks: size (from Content-Length, then while reading), signature (constant
time, before parsing), JSON, event type, duplicate delivery, then the push itself. A
delivery is remembered by its id and by the hash of its body, so neither a redelivery
nor a replayed body with a new id builds twice. A delivery that could not be queued
(queue full, backend down) is forgotten again so that a retry gets through.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from ajour_build.errors import AjourError
from ajour_build.service.schemas import BuildOut, ErrorOut, WebhookOut
from ajour_build.service.state import Service, service_of
from ajour_build.service.webhooks import MAX_BODY, WebhookError, parse, verify

log = logging.getLogger(__name__)
router = APIRouter(tags=["webhooks"])
Provider = Literal["github", "gitlab", "gitea"]
EVENT_HEADER = {"github": "x-github-event", "gitlab": "x-gitlab-event", "gitea": "x-gitea-event"}
DELIVERY_HEADER = {
    "github": "x-github-delivery",
    "gitlab": "x-gitlab-event-uuid",
    "gitea": "x-gitea-delivery",
}


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed ``limit``."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise WebhookError(413, f"webhook body of {declared} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise WebhookError(413, f"webhook body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/webhooks/{provider}",
    status_code=202,
    response_model=WebhookOut,
    responses={
        200: {"model": WebhookOut, "description": "A ping, another event, or a duplicate."},
        400: {"model": ErrorOut, "description": "The body is not a push event in JSON."},
        401: {"model": ErrorOut, "description": "Missing or wrong signature."},
        409: {"model": ErrorOut, "description": "The same delivery is being handled now."},
        413: {"model": ErrorOut, "description": "Body too large."},
        429: {"model": ErrorOut, "description": "Build queue full; see Retry-After."},
        500: {"model": ErrorOut, "description": "No secret configured for this provider."},
    },
    summary="Receive a push webhook",
)
async def webhook(provider: Provider, request: Request) -> JSONResponse:
    service = service_of(request)
    body = await read_body(request)
    headers = dict(request.headers)
    verify(provider, service.config.service.webhooks.secret(provider), body, headers)
    event = headers.get(EVENT_HEADER[provider], "")
    if not event:
        raise WebhookError(400, f"the {EVENT_HEADER[provider]} header is missing")
    push = parse(provider, event, body)
    delivery = headers.get(DELIVERY_HEADER[provider]) or None
    if push is None:
        what = "pong" if event.lower() == "ping" else f"event {event!r} ignored: only pushes build"
        return _answer(200, WebhookOut(event=event, delivery=delivery, explanation=what))
    keys = [f"{provider}:body:{hashlib.sha256(body).hexdigest()}"]
    if delivery:
        keys.append(f"{provider}:id:{delivery[:120]}")
    records = service.records
    remembered: list[str] = []
    seen: set[str] = set()
    try:
        for key in keys:
            state = await run_in_threadpool(records.remember_delivery, key)
            if state == "new":
                remembered.append(key)
            seen.add(state)
        if not seen - {"new"}:
            outcome = await run_in_threadpool(service.scheduler.push, push)
            await _settle(service, keys)
    except BaseException:
        await _forget(service, remembered)  # not handled: let the provider's retry in
        raise
    if "pending" in seen:
        await _forget(service, remembered)
        raise WebhookError(
            409,
            "the same delivery is being handled by another request right now; if that one"
            " fails, redeliver this one (it was not recorded as handled)",
        )
    if "done" in seen:
        await _forget(service, remembered)
        out = WebhookOut(
            event=event,
            delivery=delivery,
            duplicate=True,
            explanation="this delivery (same id or same signed body) was already handled",
        )
        return _answer(200, out)
    out = WebhookOut(
        event=event,
        delivery=delivery,
        triggered=[BuildOut.of(b) for b in outcome.queued],
        already_queued=[BuildOut.of(b) for b in outcome.joined],
        refused=list(outcome.refused),
        explanation=outcome.explanation,
    )
    return _answer(202, out)


async def _settle(service: Service, keys: list[str]) -> None:
    """The builds are queued: say so, even if the records then fail to mark the claims."""
    for key in keys:
        try:
            await run_in_threadpool(service.records.settle_delivery, key)
        except AjourError as exc:  # the claim stays pending until the next start
            log.error("could not settle webhook delivery %s: %s", key, exc)


async def _forget(service: Service, keys: list[str]) -> None:
    for key in keys:
        try:
            await run_in_threadpool(service.records.forget_delivery, key)
        except AjourError as exc:  # the records are down; the delivery stays remembered
            log.error("could not forget webhook delivery %s: %s", key, exc)


def _answer(status: int, out: WebhookOut) -> JSONResponse:
    return JSONResponse(out.model_dump(mode="json", by_alias=True), status_code=status)
