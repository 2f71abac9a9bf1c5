"""Build records of the service, in SQL (SQLite by default; any SQLAlchemy URL works).

One row per build and one per log line, plus the webhook deliveries already handled
(for deduplication). Every change is one transaction, so a crash never leaves a half
record. On start, builds that were queued or running when the service died are marked
``interrupted``: they are then retried or only reported (``service.on_interrupted``).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from ajour_build.core.errors import AjourError

State = Literal["queued", "running", "succeeded", "failed", "cancelled", "interrupted"]
STATES: tuple[State, ...] = ("queued", "running", "succeeded", "failed", "cancelled", "interrupted")
ACTIVE: tuple[State, ...] = ("queued", "running")
MAX_LOG_LINE = 4096

metadata = MetaData()
builds = Table(
    "builds",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(80), nullable=False),
    Column("spec_hash", String(64), nullable=False),
    Column("application", String(63), nullable=False, index=True),
    Column("state", String(16), nullable=False, index=True),
    Column("backend", String(16), nullable=False),
    Column("backend_ref", String(253), nullable=False, default=""),
    Column("reason", Text, nullable=False, default=""),
    Column("git_url", Text, nullable=False),
    Column("revision", Text, nullable=False),
    Column("commit", String(64)),
    Column("version", Text),
    Column("image", Text, nullable=False, default=""),
    Column("publish_to", Text, nullable=False, default=""),
    Column("digest", String(80)),
    Column("reference", Text),
    Column("cached", Boolean, nullable=False, default=False),
    Column("failure", Text),
    Column("attempt", Integer, nullable=False, default=1),
    Column("retry_of", String(64)),
    Column("created", DateTime(timezone=True), nullable=False, index=True),
    Column("started", DateTime(timezone=True)),
    Column("finished", DateTime(timezone=True)),
)
consumers = Table(
    "build_consumers",
    metadata,
    Column("build_id", String(64), ForeignKey("builds.id"), primary_key=True),
    Column("application", String(63), primary_key=True),
    Column("device", String(253), primary_key=True),  # "" for the application itself
)
Index("ix_consumer", consumers.c.application, consumers.c.device)
log_lines = Table(
    "build_log_lines",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("build_id", String(64), ForeignKey("builds.id"), nullable=False, index=True),
    Column("line", Text, nullable=False),
)
deliveries = Table(
    "webhook_deliveries",
    metadata,
    Column("key", String(160), primary_key=True),
    Column("received", DateTime(timezone=True), nullable=False),
    # "pending" while its push is being handled, "done" once its builds are queued
    Column("state", String(8), nullable=False, default="done"),
)


class RecordsError(AjourError):
    """The build records cannot be read or written (database down or damaged)."""


@dataclass(frozen=True)
class Build:
    """One build as the API and the console show it."""

    id: str
    name: str
    spec_hash: str
    application: str
    consumers: tuple[str, ...]
    state: State
    backend: str
    backend_ref: str
    reason: str
    git_url: str
    revision: str
    commit: str | None
    version: str | None
    image: str
    publish_to: str
    digest: str | None
    reference: str | None
    cached: bool
    failure: str | None
    attempt: int
    retry_of: str | None
    created: datetime
    started: datetime | None
    finished: datetime | None

    @property
    def duration(self) -> float | None:
        if self.started is None:
            return None
        end = self.finished or now()
        return round((end - self.started).total_seconds(), 3)

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


@dataclass(frozen=True)
class NewBuild:
    name: str
    spec_hash: str
    application: str
    consumers: tuple[str, ...]
    backend: str
    reason: str
    git_url: str
    revision: str
    image: str
    publish_to: str
    version: str | None = None
    retry_of: str | None = None
    attempt: int = 1


@dataclass(frozen=True)
class Query:
    application: str | None = None
    device: str | None = None
    states: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 100
    offset: int = 0


@dataclass
class Records:
    """The build records behind one SQLAlchemy engine."""

    url: str
    engine: Engine = field(init=False, repr=False)

    def __post_init__(self) -> None:
        try:
            self.engine = create_engine(self.url, pool_pre_ping=True)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise RecordsError(
                f"cannot open the build records at {_safe(self.url)}: {exc}"
            ) from None
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            metadata.create_all(self.engine)
        except SQLAlchemyError as exc:
            raise RecordsError(
                f"cannot open the build records at {_safe(self.url)}: {exc}"
            ) from None

    @classmethod
    def sqlite(cls, path: Path) -> Records:
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{path}")

    def close(self) -> None:
        self.engine.dispose()

    # -- writes --------------------------------------------------------------------------
    def create(self, new: NewBuild) -> Build:
        bid = f"b-{now().strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"
        row = {
            "id": bid,
            "name": new.name,
            "spec_hash": new.spec_hash,
            "application": new.application,
            "state": "queued",
            "backend": new.backend,
            "backend_ref": "",
            "reason": new.reason,
            "git_url": new.git_url,
            "revision": new.revision,
            "version": new.version,
            "image": new.image,
            "publish_to": new.publish_to,
            "cached": False,
            "attempt": new.attempt,
            "retry_of": new.retry_of,
            "created": now(),
        }
        rows = [
            {"build_id": bid, "application": app, "device": dev}
            for app, _, dev in (c.partition("/") for c in new.consumers)
        ]
        with self._tx() as conn:
            conn.execute(insert(builds).values(**row))
            if rows:
                conn.execute(insert(consumers), rows)
        return self.require(bid)

    def update(self, build_id: str, **values: Any) -> Build:
        unknown = set(values) - set(builds.c.keys())
        if unknown:
            raise RecordsError(f"unknown build record fields {sorted(unknown)}")
        with self._tx() as conn:
            conn.execute(update(builds).where(builds.c.id == build_id).values(**values))
        return self.require(build_id)

    def transition(self, build_id: str, state: State, **values: Any) -> Build | None:
        """Move an active build to ``state``; None if it already ended (first end wins)."""
        stamp: dict[str, Any] = {}
        if state == "running":
            stamp["started"] = now()
        elif state not in ACTIVE:
            stamp["finished"] = now()
        with self._tx() as conn:
            done = conn.execute(
                update(builds)
                .where(builds.c.id == build_id, builds.c.state.in_(ACTIVE))
                .values(state=state, **stamp, **values)
            )
        if done.rowcount == 0:
            return None
        return self.require(build_id)

    def append_log(self, build_id: str, lines: Sequence[str]) -> None:
        if not lines:
            return
        rows = [{"build_id": build_id, "line": line[:MAX_LOG_LINE]} for line in lines]
        with self._tx() as conn:
            conn.execute(insert(log_lines), rows)

    def interrupt_active(self, keep_submitted: bool = False) -> list[Build]:
        """Mark builds left queued or running by a previous process as interrupted.

        ``keep_submitted`` leaves alone builds a durable backend already took over (they
        have a ``backend_ref``, e.g. a PipelineRun that goes on without the service).
        """
        active = select(builds.c.id).where(builds.c.state.in_(ACTIVE))
        if keep_submitted:
            active = active.where(builds.c.backend_ref == "")
        with self._tx() as conn:
            ids = [r[0] for r in conn.execute(active)]
            if ids:
                conn.execute(
                    update(builds)
                    .where(builds.c.id.in_(ids))
                    .values(
                        state="interrupted",
                        finished=now(),
                        failure="the service stopped while this build was queued or running",
                    )
                )
        return [self.require(i) for i in ids]

    def remember_delivery(self, key: str) -> str:
        """Claim a webhook delivery as ``pending``; answer "new", "pending" or "done".

        "pending" means another request is handling the same delivery right now: it may
        still fail, so this one must not be told the delivery was handled.
        """
        try:
            with self._tx() as conn:
                conn.execute(
                    insert(deliveries).values(key=key[:160], received=now(), state="pending")
                )
        except IntegrityError:
            with self._read() as conn:
                found = conn.execute(
                    select(deliveries.c.state).where(deliveries.c.key == key[:160])
                ).scalar()
            return "pending" if found == "pending" else "done"
        return "new"

    def settle_delivery(self, key: str) -> None:
        """The delivery's builds are queued: later copies of it are duplicates."""
        with self._tx() as conn:
            conn.execute(
                update(deliveries).where(deliveries.c.key == key[:160]).values(state="done")
            )

    def drop_pending_deliveries(self) -> int:
        """On start: nothing is being handled any more, so pending claims are void."""
        with self._tx() as conn:
            done = conn.execute(deliveries.delete().where(deliveries.c.state == "pending"))
        return int(done.rowcount or 0)

    def forget_delivery(self, key: str) -> None:
        """Undo :meth:`remember_delivery` (the delivery was not handled; let a retry in)."""
        with self._tx() as conn:
            conn.execute(deliveries.delete().where(deliveries.c.key == key[:160]))

    # -- reads ---------------------------------------------------------------------------
    def get(self, build_id: str) -> Build | None:
        with self._read() as conn:
            row = conn.execute(select(builds).where(builds.c.id == build_id)).mappings().first()
            if row is None:
                return None
            return self._build(conn, row)

    def require(self, build_id: str) -> Build:
        found = self.get(build_id)
        if found is None:
            raise RecordsError(f"build {build_id!r} vanished from the records")
        return found

    def find(self, query: Query = Query()) -> list[Build]:
        stmt = select(builds)
        if query.application is not None or query.device is not None:
            sub = select(consumers.c.build_id)
            if query.application is not None:
                sub = sub.where(consumers.c.application == query.application)
            if query.device is not None:
                sub = sub.where(consumers.c.device == query.device)
            stmt = stmt.where(builds.c.id.in_(sub))
        if query.states:
            stmt = stmt.where(builds.c.state.in_(query.states))
        if query.since is not None:
            stmt = stmt.where(builds.c.created >= query.since)
        if query.until is not None:
            stmt = stmt.where(builds.c.created < query.until)
        stmt = stmt.order_by(builds.c.created.desc(), builds.c.id.desc())
        stmt = stmt.limit(query.limit).offset(query.offset)
        with self._read() as conn:
            return [self._build(conn, row) for row in conn.execute(stmt).mappings().all()]

    def queued_by_spec(self) -> dict[str, str]:
        """Spec hash → id of the newest queued build of that spec (all of them, one query)."""
        stmt = (
            select(builds.c.spec_hash, builds.c.id)
            .where(builds.c.state == "queued")
            .order_by(builds.c.created)
        )
        with self._read() as conn:
            return {str(h): str(i) for h, i in conn.execute(stmt).all()}

    def counts(self) -> dict[str, int]:
        stmt = select(builds.c.state, func.count()).group_by(builds.c.state)
        with self._read() as conn:
            found = {str(s): int(n) for s, n in conn.execute(stmt).all()}
        return {state: found.get(state, 0) for state in STATES}

    def logs(self, build_id: str, after: int = 0, limit: int = 10_000) -> list[tuple[int, str]]:
        stmt = (
            select(log_lines.c.seq, log_lines.c.line)
            .where(log_lines.c.build_id == build_id, log_lines.c.seq > after)
            .order_by(log_lines.c.seq)
            .limit(limit)
        )
        with self._read() as conn:
            return [(int(s), str(line)) for s, line in conn.execute(stmt).all()]

    # -- plumbing ------------------------------------------------------------------------
    def _build(self, conn: Connection, row: Any) -> Build:
        names = conn.execute(
            select(consumers.c.application, consumers.c.device)
            .where(consumers.c.build_id == row["id"])
            .order_by(consumers.c.application, consumers.c.device)
        ).all()
        data = dict(row)
        for key in ("created", "started", "finished"):
            if data[key] is not None and data[key].tzinfo is None:
                data[key] = data[key].replace(tzinfo=UTC)  # SQLite drops the zone
        data["consumers"] = tuple(f"{a}/{d}" if d else a for a, d in names)
        return Build(**data)

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._guard(), self.engine.begin() as conn:
            yield conn

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._guard(), self.engine.connect() as conn:
            yield conn

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Database errors read clearly; IntegrityError passes (callers handle it)."""
        try:
            yield
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise RecordsError(f"build records unavailable ({_safe(self.url)}): {exc}") from None


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


def _safe(url: str) -> str:
    """The URL without its password (credentials never reach logs or messages)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparsable database URL>"


def now() -> datetime:
    return datetime.now(UTC)
