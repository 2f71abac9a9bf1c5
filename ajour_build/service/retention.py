"""Retention of build records: finished builds pruned by age and by count, with their logs.

The policy (``service.retention``): the newest ``keep_per_application`` builds of each
application are always kept, and so is every queued or running build; of the others, a
build goes when it finished more than ``max_age_days`` ago (by its creation time) or when
``max_builds`` newer builds are in the records. A pruned build loses its row, its
consumers, its log lines and its directory in the state dir (``builds/<backendRef>``:
``build.log``, ``record.json``, artifacts). The build cache (``cache/``) is not touched.

The delete re-checks the state in the same transaction, so a build that became active
in between (it cannot, once finished, but a record is a record) is never deleted.
:class:`Pruner` runs it in ``ajour-build serve``; ``ajour-build prune`` runs it once.
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError

from ajour_build.config import RetentionConfig
from ajour_build.core.spec.fields import parse_duration
from ajour_build.lifecycle import ACTIVE, now
from ajour_build.service.records import Records, RecordsError, builds, consumers, log_lines

log = logging.getLogger(__name__)
_SAFE_DIR = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,200}")
BATCH = 500  # builds per delete transaction


@dataclass(frozen=True)
class Pruned:
    """What one pruning removed (or, on a dry run, would remove)."""

    builds: tuple[str, ...]
    log_lines: int
    directories: tuple[str, ...]
    kept: int
    dry_run: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "dryRun": self.dry_run,
            "builds": list(self.builds),
            "logLines": self.log_lines,
            "directories": list(self.directories),
            "kept": self.kept,
        }


def doomed(records: Records, policy: RetentionConfig, at: datetime) -> tuple[list[str], int]:
    """Ids of the builds the policy prunes at time ``at``, and how many it keeps."""
    stmt = select(builds.c.id, builds.c.application, builds.c.state, builds.c.created)
    stmt = stmt.order_by(builds.c.created.desc(), builds.c.id.desc())
    with records.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    cutoff = at - timedelta(days=policy.max_age_days) if policy.max_age_days else None
    per_app: Counter[str] = Counter()
    out: list[str] = []
    for rank, (build_id, application, state, created) in enumerate(rows):
        per_app[application] += 1
        if state in ACTIVE or per_app[application] <= policy.keep_per_application:
            continue
        created = created if created.tzinfo else created.replace(tzinfo=UTC)
        too_old = cutoff is not None and created < cutoff
        too_many = policy.max_builds > 0 and rank >= policy.max_builds
        if too_old or too_many:
            out.append(str(build_id))
    return out, len(rows) - len(out)


def prune(
    records: Records,
    policy: RetentionConfig,
    builds_dir: Path | None,
    dry_run: bool = False,
    at: datetime | None = None,
) -> Pruned:
    """Remove what the policy prunes: rows, log lines, then build directories."""
    try:
        ids, kept = doomed(records, policy, at or now())
        refs, lines = _remove(records, ids, dry_run)
        directories = _directories(records, builds_dir, refs, ids, dry_run)
    except SQLAlchemyError as exc:
        raise RecordsError(f"pruning the build records failed: {exc}") from None
    return Pruned(tuple(ids), lines, tuple(directories), kept, dry_run)


def _remove(records: Records, ids: list[str], dry_run: bool) -> tuple[set[str], int]:
    refs: set[str] = set()
    lines = 0
    for start in range(0, len(ids), BATCH):
        chunk = ids[start : start + BATCH]
        with records.engine.begin() as conn:
            gone = [
                (str(i), str(r))
                for i, r in conn.execute(
                    select(builds.c.id, builds.c.backend_ref).where(
                        builds.c.id.in_(chunk), builds.c.state.not_in(ACTIVE)
                    )
                ).all()
            ]
            names = [i for i, _ in gone]
            refs.update(r for _, r in gone if r)
            counted = conn.execute(
                select(log_lines.c.seq).where(log_lines.c.build_id.in_(names))
            ).all()
            lines += len(counted)
            if dry_run or not names:
                continue
            conn.execute(delete(log_lines).where(log_lines.c.build_id.in_(names)))
            conn.execute(delete(consumers).where(consumers.c.build_id.in_(names)))
            conn.execute(delete(builds).where(builds.c.id.in_(names)))
    return refs, lines


def _directories(
    records: Records, builds_dir: Path | None, refs: set[str], ids: list[str], dry_run: bool
) -> list[str]:
    """The build directories of pruned builds that no remaining record names."""
    if builds_dir is None or not refs:
        return []
    named = select(builds.c.backend_ref).where(builds.c.backend_ref.in_(sorted(refs)))
    with records.engine.connect() as conn:
        still = {str(r) for (r,) in conn.execute(named.where(builds.c.id.not_in(ids))).all()}
    out = []
    for ref in sorted(refs - still):
        path = builds_dir / ref
        if not _SAFE_DIR.fullmatch(ref) or not path.is_dir():
            continue
        if not dry_run:
            shutil.rmtree(path, ignore_errors=True)
        out.append(str(path))
    return out


@dataclass
class Pruner:
    """Prunes every ``policy.interval`` in a thread until stopped."""

    records: Records
    policy: RetentionConfig
    builds_dir: Path | None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def seconds(self) -> int:
        return 0 if self.policy.interval == "0s" else parse_duration(self.policy.interval)

    def start(self) -> None:
        if self.seconds <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="ajour-prune", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)

    def once(self) -> Pruned | None:
        try:
            done = prune(self.records, self.policy, self.builds_dir)
        except RecordsError as exc:
            log.error("pruning build records failed: %s", exc)
            return None
        if done.builds:
            log.info(
                "pruned %d build(s), %d log line(s), %d build directorie(s); %d kept",
                len(done.builds), done.log_lines, len(done.directories), done.kept,
            )  # fmt: skip
        return done

    def _run(self) -> None:
        while not self._stop.is_set():
            self.once()
            self._stop.wait(self.seconds)
