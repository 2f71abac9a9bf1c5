"""Git push webhooks from GitHub, GitLab and Gitea: ``POST /webhooks/{github,gitlab,gitea}``.

Order of checks: size (from Content-Length, then while reading), signature (constant
time, before parsing), JSON, event type, duplicate delivery, then the push itself. A ping
is not a push. A delivery is remembered by its id and by the hash of its body, so neither
a redelivery nor a replayed body with a new id builds twice; the body hash is one key for
every provider, so a body replayed to another provider's endpoint (signed with the same
secret) does not build again either. A delivery that could not be
queued (queue full, backend down) is forgotten again so that a retry gets through. Which
builds a push affects is decided in :mod:`ajour_build.push`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from ajour_build.core.errors import AjourError
from ajour_build.core.spec.fields import redact_uri
from ajour_build.push import Push
from ajour_build.service.audit import Who, webhook_actor
from ajour_build.service.backends.backend import BackendError
from ajour_build.service.scheduler import Outcome
from ajour_build.service.schemas import BuildOut, ErrorOut, WebhookOut
from ajour_build.service.state import Service, service_of

MAX_BODY = 5 * 1024 * 1024


class WebhookError(AjourError):
    """A webhook was refused; ``status`` is the HTTP status to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _hmac_hex(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(provider: str, secret: str, body: bytes, headers: dict[str, str]) -> None:
    """Raise WebhookError(401) unless the request is signed with ``secret``."""
    if not secret:
        raise WebhookError(500, f"no webhook secret is configured for {provider}")
    lowered = {k.lower(): v for k, v in headers.items()}
    if provider == "github":
        given = lowered.get("x-hub-signature-256", "")
        expected = "sha256=" + _hmac_hex(secret, body)
        header = "X-Hub-Signature-256"
    elif provider == "gitea":
        given = lowered.get("x-gitea-signature", "")
        expected = _hmac_hex(secret, body)
        header = "X-Gitea-Signature"
    elif provider == "gitlab":
        given = lowered.get("x-gitlab-token", "")
        expected = secret
        header = "X-Gitlab-Token"
    else:
        raise WebhookError(404, f"unknown webhook provider {provider!r}")
    if not given:
        raise WebhookError(401, f"{header} is missing: the webhook must be signed")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise WebhookError(401, f"{header} does not match: wrong secret or altered body")


def _load(body: bytes) -> dict[str, Any]:
    if len(body) > MAX_BODY:
        raise WebhookError(413, f"webhook body over {MAX_BODY} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise WebhookError(400, f"webhook body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WebhookError(400, "webhook body is not a JSON object")
    return data


def _str(data: dict[str, Any], *path: str) -> str:
    node: Any = data
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, str) else ""


def parse(provider: str, event: str, body: bytes) -> Push | None:
    """The push in a verified webhook; None for a ping (or another event type)."""
    data = _load(body)
    kind = event.lower()
    if provider == "gitlab":
        if kind not in ("push hook", "tag push hook"):
            return None
        urls = (
            _str(data, "project", "git_http_url"),
            _str(data, "project", "git_ssh_url"),
            _str(data, "repository", "git_http_url"),
            _str(data, "repository", "url"),
        )
    else:
        if kind != "push":
            return None  # "ping", and anything else, is not a push
        urls = (
            _str(data, "repository", "clone_url"),
            _str(data, "repository", "ssh_url"),
            _str(data, "repository", "git_url"),
            _str(data, "repository", "html_url"),
        )
    ref, after = _str(data, "ref"), _str(data, "after")
    if not ref or not after:
        raise WebhookError(400, "the push event has no ref or no after commit")
    deleted = data.get("deleted") is True or set(after) == {"0"}
    return Push(provider, tuple(u for u in urls if u), ref, after, deleted)


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
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise WebhookError(413, f"webhook body is over the {limit} byte limit")
            chunks.append(chunk)
    except ClientDisconnect:
        expected = f" of {declared}" if declared.isdigit() else ""
        log.warning(
            "%s %s: the client disconnected after %d%s body bytes; nothing was done",
            request.method,
            request.url.path,
            size,
            expected,
        )
        raise WebhookError(400, "the client disconnected before the body was complete") from None
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
    try:
        answer, outcome = await _handle(provider, request, service)
    except WebhookError as exc:
        service.metrics.webhook(provider, _OUTCOMES.get(exc.status, "error"))
        raise
    except BackendError as exc:
        service.metrics.webhook(provider, "busy" if exc.status == 429 else "error")
        raise
    except AjourError:
        service.metrics.webhook(provider, "error")
        raise
    service.metrics.webhook(provider, outcome)
    return answer


_OUTCOMES = {401: "bad_signature", 400: "invalid", 413: "invalid", 409: "busy"}


async def _handle(provider: str, request: Request, service: Service) -> tuple[JSONResponse, str]:
    """The answer to a webhook and its outcome for the metrics."""
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
        out = WebhookOut(event=event, delivery=delivery, explanation=what)
        return _answer(200, out), "ignored"
    keys = [f"body:{hashlib.sha256(body).hexdigest()}"]  # the same for every provider
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
            who = _who(request, push)
            try:
                outcome = await run_in_threadpool(service.scheduler.push, push)
            except AjourError as exc:
                full = isinstance(exc, BackendError) and exc.status == 429
                result = "refused" if full else "failed"
                await run_in_threadpool(_audit, service, who, None, str(exc), result)
                raise
            await run_in_threadpool(_audit, service, who, outcome)
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
        return _answer(200, out), "deduplicated"
    out = WebhookOut(
        event=event,
        delivery=delivery,
        triggered=[BuildOut.of(b) for b in outcome.queued],
        already_queued=[BuildOut.of(b) for b in outcome.joined],
        refused=list(outcome.refused),
        explanation=outcome.explanation,
    )
    return _answer(202, out), "accepted"


def _who(request: Request, push: Push) -> Who:
    repository = redact_uri(push.urls[0]) if push.urls else "(no repository URL)"
    client = request.client.host if request.client is not None else ""
    return Who(webhook_actor(push.provider, repository), client, "webhook")


def _audit(
    service: Service, who: Who, outcome: Outcome | None, error: str = "", result: str = ""
) -> None:
    """One audit entry per application the push built (or tried to), in the log's words."""
    if outcome is None:
        service.audit.record(who, "trigger", result, detail=error)
        return
    started = (*outcome.queued, *outcome.joined)
    for app in dict.fromkeys(b.application for b in started):
        ids = " ".join(b.id for b in started if b.application == app)
        service.audit.record(who, "trigger", "ok", application=app, target=ids,
                             detail=outcome.explanation)  # fmt: skip
    if not started and outcome.refused:
        detail = "; ".join(outcome.refused)
        service.audit.record(who, "trigger", "refused", detail=detail)


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
