"""A build's life, the one type for it: :class:`Build` and its :class:`BuildState`.

The local runner, the service's records, both backends and the REST API all speak of a
build with this type (the API's ``BuildOut`` is made from it; the runner's own record,
:class:`ajour_build.runner.state_dir.LocalBuild`, adds what only the runner knows)::

    queued ──▶ running ──▶ succeeded | failed | cancelled | interrupted

A build ends exactly once: the first end state recorded wins. What is built comes from
elsewhere: the spec (``core.spec.firmware.Build``), the plan (``plan.PlannedBuild``) and
the builder invocation (``runner.job.BuildJob``).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class BuildState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # the service stopped while it was queued or running

    @property
    def active(self) -> bool:
        return self in ACTIVE


STATES: tuple[BuildState, ...] = tuple(BuildState)
ACTIVE: tuple[BuildState, ...] = (BuildState.QUEUED, BuildState.RUNNING)


def now() -> datetime:
    return datetime.now(UTC)


class Build(BaseModel):
    """One build: what it builds from, where it stands, and what it produced."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str  # the planned build's stable name (application and spec hash)
    application: str
    consumers: tuple[str, ...]  # "app" and "app/device" entries that run this firmware
    state: BuildState
    git_url: str  # credentials redacted
    revision: str
    created: datetime
    spec_hash: str = ""
    backend: str = "local"
    backend_ref: str = ""  # the backend's own name for it (a PipelineRun, a run id)
    reason: str = ""  # why it was started: a push, a trigger, a retry
    image: str = ""  # the firmware image it publishes to
    publish_to: str = ""
    commit: str | None = None
    version: str | None = None  # None until known: given, or the builder's rule
    digest: str | None = None
    reference: str | None = None
    cached: bool = False
    failure: str | None = None
    attempt: int = 1
    retry_of: str | None = None
    started: datetime | None = None
    finished: datetime | None = None

    @classmethod
    def queued(
        cls, *, name: str, application: str, consumers: tuple[str, ...], git_url: str,
        revision: str, **values: object,
    ) -> Build:  # fmt: skip
        """A new build, waiting to run, with a fresh id."""
        created = now()
        bid = f"b-{created.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(4)}"
        return cls.model_validate(
            {
                "id": bid,
                "name": name,
                "application": application,
                "consumers": consumers,
                "git_url": git_url,
                "revision": revision,
                "state": BuildState.QUEUED,
                "created": created,
                **values,
            }
        )

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def duration(self) -> float | None:
        """Seconds from start to end (to now while it runs); None before it started."""
        if self.started is None:
            return None
        end = self.finished or now()
        return round((end - self.started).total_seconds(), 3)
