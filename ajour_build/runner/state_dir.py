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
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from ajour_build.core.errors import BuildError
from ajour_build.core.files import atomic_write
from ajour_build.lifecycle import Build, now
from ajour_build.publish.publisher import BuilderInfo, FirmwareArtifact, SourceInfo
from ajour_build.runner.artifact import Artifact, verify

STALE_STAGING_SECONDS = 24 * 3600


class BuilderRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str
    id: str
    runner: str


class LocalBuild(Build):
    """A build the local runner ran (any outcome), as ``record.json`` keeps it: the build's
    lifecycle fields plus what only the runner knows (cache key, builder, artifacts)."""

    cache_key: str | None = None
    builder: BuilderRef | None = None
    artifact: Artifact | None = None
    log_tail: tuple[str, ...] = ()


def _write_json(path: Path, record: LocalBuild) -> None:
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

    def commit_build(self, staging: Path, record: LocalBuild) -> Path:
        """Write the record into ``staging`` and move it to ``builds/<id>`` at once."""
        _write_json(staging / "record.json", record)
        final = self.build_dir(record.id)
        os.rename(staging, final)
        return final

    def firmware_of(self, record: LocalBuild) -> FirmwareArtifact:
        """The firmware a succeeded build left, as a publisher takes it."""
        if record.artifact is None or record.version is None:
            raise BuildError(f"build {record.id} has no artifact to publish ({record.state})")
        artifacts = self.build_dir(record.id) / "artifacts"
        elf = next((e.name for e in record.artifact.extras if e.name.endswith(".elf")), None)
        return FirmwareArtifact(
            artifacts / record.artifact.name,
            record.version,
            SourceInfo(record.git_url, record.commit or ""),
            BuilderInfo(record.builder.image if record.builder else ""),
            elf=artifacts / elf if elf is not None else None,
        )

    def records(self) -> list[LocalBuild]:
        out = []
        for path in sorted((self.root / "builds").glob("*/record.json")):
            try:
                out.append(LocalBuild.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValidationError):
                continue  # a foreign or damaged entry is skipped, never fatal
        return out

    # -- cache ---------------------------------------------------------------------------
    def cached(self, key: str) -> tuple[LocalBuild, Path] | None:
        entry = self.root / "cache" / key
        try:
            record = LocalBuild.model_validate_json((entry / "record.json").read_text())
        except (OSError, ValidationError, ValueError):
            return None
        if record.artifact is None or not verify(entry / "artifacts", record.artifact):
            shutil.rmtree(entry, ignore_errors=True)  # damaged: rebuild rather than trust it
            return None
        return record, entry / "artifacts"

    def store_cache(self, key: str, record: LocalBuild, artifacts: Path) -> None:
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


def dump(record: LocalBuild) -> dict[str, object]:
    data: dict[str, object] = json.loads(record.model_dump_json())
    data["duration"] = record.duration
    return data
