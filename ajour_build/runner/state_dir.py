"""Build records and the local state directory, written atomically.

Layout under the state dir (``AJOUR_STATE_DIR``)::

    builds/<id>/record.json, build.log, artifacts/   one finished build (any outcome)
    cache/<key>/record.json, artifacts/              a successful build, by cache key
    staging/                                         work in progress; never read

A build is assembled in ``staging/`` and moved into place with one ``rename``, so a
reader sees a whole build or none; an interrupted run leaves only staging debris, which
the next run removes.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ajour_build.core.files import atomic_write
from ajour_build.runner.artifact import Artifact, verify

State = Literal["succeeded", "failed", "cancelled"]
STALE_STAGING_SECONDS = 24 * 3600


class BuilderRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str
    id: str
    runner: str


class BuildRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    application: str
    consumers: tuple[str, ...]
    state: State
    cached: bool = False
    cache_key: str | None = None
    git_url: str
    revision: str
    commit: str | None = None
    version: str | None = None
    builder: BuilderRef | None = None
    artifact: Artifact | None = None
    started: datetime
    finished: datetime
    failure: str | None = None
    log_tail: tuple[str, ...] = ()

    @property
    def duration(self) -> float:
        return (self.finished - self.started).total_seconds()


def now() -> datetime:
    return datetime.now(UTC)


def _write_json(path: Path, record: BuildRecord) -> None:
    atomic_write(path, record.model_dump_json(indent=2) + "\n")


class StateDir:
    def __init__(self, root: Path) -> None:
        self.root = root
        for sub in ("builds", "cache", "staging"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._sweep()

    def _sweep(self) -> None:
        cutoff = time.time() - STALE_STAGING_SECONDS
        for entry in (self.root / "staging").iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            except OSError:
                continue

    def staging(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=self.root / "staging"))

    def build_dir(self, build_id: str) -> Path:
        return self.root / "builds" / build_id

    def commit_build(self, staging: Path, record: BuildRecord) -> Path:
        """Write the record into ``staging`` and move it to ``builds/<id>`` at once."""
        _write_json(staging / "record.json", record)
        final = self.build_dir(record.id)
        os.rename(staging, final)
        return final

    def records(self) -> list[BuildRecord]:
        out = []
        for path in sorted((self.root / "builds").glob("*/record.json")):
            try:
                out.append(BuildRecord.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValidationError):
                continue  # a foreign or damaged entry is skipped, never fatal
        return out

    # -- cache ---------------------------------------------------------------------------
    def cached(self, key: str) -> tuple[BuildRecord, Path] | None:
        entry = self.root / "cache" / key
        try:
            record = BuildRecord.model_validate_json((entry / "record.json").read_text())
        except (OSError, ValidationError, ValueError):
            return None
        if record.artifact is None or not verify(entry / "artifacts", record.artifact):
            shutil.rmtree(entry, ignore_errors=True)  # damaged: rebuild rather than trust it
            return None
        return record, entry / "artifacts"

    def store_cache(self, key: str, record: BuildRecord, artifacts: Path) -> None:
        staging = self.staging("cache")
        shutil.copytree(artifacts, staging / "artifacts")
        _write_json(staging / "record.json", record)
        final = self.root / "cache" / key
        if final.exists():
            old = self.staging("old")
            os.rename(final, old / "entry")
            shutil.rmtree(old, ignore_errors=True)
        os.rename(staging, final)


def build_id(name: str) -> str:
    stamp = now().strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{name}"


def dump(record: BuildRecord) -> dict[str, object]:
    data: dict[str, object] = json.loads(record.model_dump_json())
    data["duration"] = round(record.duration, 3)
    return data
