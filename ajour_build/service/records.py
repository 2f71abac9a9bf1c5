"""Build records of the service, in SQL (SQLite by default; any SQLAlchemy URL works).

One row per build and one per log line, plus the webhook deliveries already handled
(for deduplication). Every change is one transaction, so a crash never leaves a half
record. On start, builds that were queued or running when the service died are marked
``interrupted``: they are then retried or only reported (``service.on_interrupted``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
from ajour_build.lifecycle import ACTIVE, STATES, Build, BuildState, now

MAX_LOG_LINE = 4096  # characters of a log line in the records (build.log keeps more)
_CUT = " [ajour: line cut; build.log has more]"

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
    # called with each new build and each build that changed state (metrics)
    listeners: list[Callable[[Build], None]] = field(default_factory=list, repr=False)

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
    def create(self, build: Build) -> Build:
        """Insert a new build (``Build.queued(...)``) with its consumers."""
        row = build.model_dump(exclude={"consumers"})
        rows = [
            {"build_id": build.id, "application": app, "device": dev}
            for app, _, dev in (c.partition("/") for c in build.consumers)
        ]
        with self._tx() as conn:
            conn.execute(insert(builds).values(**row))
            if rows:
                conn.execute(insert(consumers), rows)
        return self._told(self.require(build.id))

    def update(self, build_id: str, **values: Any) -> Build:
        unknown = set(values) - set(builds.c.keys())
        if unknown:
            raise RecordsError(f"unknown build record fields {sorted(unknown)}")
        with self._tx() as conn:
            conn.execute(update(builds).where(builds.c.id == build_id).values(**values))
        return self.require(build_id)

    def transition(self, build_id: str, state: BuildState, **values: Any) -> Build | None:
        """Move an active build to ``state``; None if it already ended (first end wins)."""
        stamp: dict[str, Any] = {}
        if state == BuildState.RUNNING:
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
        return self._told(self.require(build_id))

    def append_log(self, build_id: str, lines: Sequence[str]) -> None:
        if not lines:
            return
        rows = [{"build_id": build_id, "line": _cut(line)} for line in lines]
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
                        state=BuildState.INTERRUPTED,
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
            .where(builds.c.state == BuildState.QUEUED)
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
    def _told(self, build: Build) -> Build:
        for listener in self.listeners:
            listener(build)
        return build

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


def _cut(line: str) -> str:
    """A log line that fits the records, marked when it was cut."""
    if len(line) <= MAX_LOG_LINE:
        return line
    return line[: MAX_LOG_LINE - len(_CUT)] + _CUT
