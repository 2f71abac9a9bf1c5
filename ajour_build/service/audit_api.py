"""``GET /api/v1/audit``: the audit log, newest first (always with a token: it names
tokens and client addresses, so ``service.public_read`` does not open it)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from ajour_build.service import auth
from ajour_build.service.api import _ERRORS, _ISO_DOC, _TIME, Credentials, _instant
from ajour_build.service.audit import ACTIONS, Action, Entry
from ajour_build.service.state import Service, service_of


class AuditEntryOut(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seq: int
    at: datetime
    action: str = Field(description=f"One of {', '.join(ACTIONS)}.")
    actor: str = Field(description="token:<12 hex of its SHA-256>, or webhook <provider> <repo>.")
    client: str = Field(description="The client's address as the service saw it.")
    via: str = Field(description="api, console or webhook.")
    application: str
    target: str = Field(description="Builds queued or cancelled, or the rollout's device.")
    outcome: str = Field(description="ok, refused or failed.")
    detail: str

    @classmethod
    def of(cls, entry: Entry) -> AuditEntryOut:
        return cls(**vars(entry))


class AuditList(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    items: list[AuditEntryOut]
    count: int


def auditor(request: Request, _: Credentials) -> Service:
    service = service_of(request)
    auth.check(request, service.tokens, service.open_access)
    return service


router = APIRouter(prefix="/api/v1", tags=["audit"])


@router.get("/audit", response_model=AuditList, responses={401: _ERRORS[401]})
async def audit_log(
    service: Annotated[Service, Depends(auditor)],
    since: Annotated[str | None, Query(description=_ISO_DOC, json_schema_extra=_TIME)] = None,
    action: Annotated[Action | None, Query()] = None,
    application: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditList:
    """Who triggered, cancelled and operated rollouts, when, from where, with what outcome."""
    start = _instant(since, "since")
    found = await run_in_threadpool(service.audit.find, start, action, application, limit)
    items = [AuditEntryOut.of(e) for e in found]
    return AuditList(items=items, count=len(items))
