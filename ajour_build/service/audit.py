"""The audit log: who did what to builds and rollouts, when, from where, and how it ended.

One row per operation, in the service's database beside the build records: triggers
(API, console, webhooks), cancels, and the rollout operations the console forwards to
the delivery worker. The actor is a token's short hash (``token:`` and the first 12 hex
digits of its SHA-256, so ``printf %s "$TOKEN" | sha256sum`` tells which one), never the
token; a webhook's actor is its provider and repository.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar, get_args

from fastapi import Request
from sqlalchemy import (
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

from ajour_build.core.errors import AjourError
from ajour_build.lifecycle import now
from ajour_build.service import auth
from ajour_build.service.backends.backend import BackendError
from ajour_build.service.records import RecordsError

log = logging.getLogger(__name__)
T = TypeVar("T")

Action = Literal[
    "trigger",
    "cancel",
    "rollout.pause",
    "rollout.resume",
    "rollout.abort",
    "rollout.rollback",
    "rollout.promote",
    "rollout.retry",
    "rollout.start",
]
ACTIONS: tuple[str, ...] = get_args(Action)
MAX_TEXT = 2000
OPEN = "anonymous (open access)"

metadata = MetaData()
entries = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False, index=True),
    Column("action", String(32), nullable=False, index=True),
    Column("actor", String(200), nullable=False),
    Column("client", String(64), nullable=False, default=""),
    Column("via", String(16), nullable=False),  # api, console, webhook
    Column("application", String(63), nullable=False, default="", index=True),
    Column("target", String(300), nullable=False, default=""),  # a build, device, rollout
    Column("outcome", String(16), nullable=False),  # ok, refused, failed
    Column("detail", Text, nullable=False, default=""),
)


@dataclass(frozen=True)
class Entry:
    seq: int
    at: datetime
    action: str
    actor: str
    client: str
    via: str
    application: str
    target: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class Who:
    """The actor of a request and the address it came from."""

    actor: str
    client: str
    via: str


def token_id(token: str) -> str:
    """A token's name in the log: a short hash, never the token."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def who(request: Request, via: str, tokens: tuple[str, ...]) -> Who:
    """The valid token a request carries (by its hash), or anonymous where access is open."""
    given = auth.token_of(request)
    actor = token_id(given) if given and auth.valid(given, tokens) else OPEN
    client = request.client.host if request.client is not None else ""
    return Who(actor, client, via)


def webhook_actor(provider: str, repository: str) -> str:
    return f"webhook {provider} {repository}".strip()[:200]


class AuditLog:
    """The ``audit_log`` table behind the records' engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        try:
            metadata.create_all(engine)
        except SQLAlchemyError as exc:
            raise RecordsError(f"cannot create the audit log: {exc}") from None

    def record(
        self,
        who: Who,
        action: str,
        outcome: str,
        *,
        application: str = "",
        target: str = "",
        detail: str = "",
    ) -> None:
        """Add an entry; if the database refuses it, the log says so (the operation stands)."""
        row = {
            "at": now(),
            "action": action,
            "actor": who.actor[:200],
            "client": who.client[:64],
            "via": who.via,
            "application": application[:63],
            "target": target[:300],
            "outcome": outcome,
            "detail": detail[:MAX_TEXT],
        }
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(entries).values(**row))
        except SQLAlchemyError as exc:
            log.error("audit log: cannot record %s by %s (%s): %s", action, who.actor, outcome, exc)

    def around(
        self,
        who: Who,
        action: str,
        application: str,
        run: Callable[[], T],
        describe: Callable[[T], tuple[str, str]],
        target: str = "",
    ) -> T:
        """``run()``, recorded with its outcome: ``describe(result)`` gives the target and
        detail of a success; an error is recorded as refused (or failed: the backend or the
        records) and raised again."""
        try:
            result = run()
        except AjourError as exc:
            failed = isinstance(exc, RecordsError) or (
                isinstance(exc, BackendError) and exc.status >= 500
            )
            outcome = "failed" if failed else "refused"
            self.record(who, action, outcome, application=application, target=target,
                        detail=str(exc))  # fmt: skip
            raise
        found, detail = describe(result)
        self.record(who, action, "ok", application=application, target=found or target,
                    detail=detail)  # fmt: skip
        return result

    def find(
        self,
        since: datetime | None = None,
        action: str | None = None,
        application: str | None = None,
        limit: int = 100,
    ) -> list[Entry]:
        """Entries, newest first."""
        stmt = select(entries)
        if since is not None:
            stmt = stmt.where(entries.c.at >= since)
        if action:
            stmt = stmt.where(entries.c.action == action)
        if application:
            stmt = stmt.where(entries.c.application == application)
        stmt = stmt.order_by(entries.c.seq.desc()).limit(limit)
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(stmt).mappings().all()
        except SQLAlchemyError as exc:
            raise RecordsError(f"cannot read the audit log: {exc}") from None
        return [_entry(row) for row in rows]


def _entry(row: Any) -> Entry:
    data = dict(row)
    if data["at"].tzinfo is None:
        data["at"] = data["at"].replace(tzinfo=UTC)  # SQLite drops the zone
    return Entry(**data)
