"""The contract between the service and a build backend.

The service creates the build record (state ``queued``) and hands the backend that
:class:`~ajour_build.lifecycle.Build` with its planned build. From then on the backend owns
the record's life: it moves it to ``running`` and to exactly one end state through
:meth:`Records.transition`, appends log lines, and sets commit, version, digest and
reference when it knows them.
"""

from __future__ import annotations

from typing import Protocol

from ajour_build.core.errors import AjourError
from ajour_build.lifecycle import Build
from ajour_build.plan import PlannedBuild


class BackendError(AjourError):
    """A backend refused or failed a request; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 503, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class QueueFull(BackendError):
    """No room for more builds now (HTTP 429 with Retry-After)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message, 429, retry_after)


class Backend(Protocol):
    name: str
    # True when builds outlive the service (PipelineRuns go on in the cluster): a restart
    # then adopts submitted builds instead of marking them interrupted
    durable: bool

    def start(self) -> None:
        """Connect and start workers or watches (called once, before any submit)."""

    def health(self) -> str:
        """ "ok", or what is wrong (a dead worker or watch thread)."""

    def free_slots(self) -> int | None:
        """How many more builds fit now; None when there is no local limit."""

    def submit(self, build: Build, planned: PlannedBuild) -> None:
        """Start or queue the build; raise QueueFull or BackendError (record stays queued).

        ``build.publish_to`` is the full target (e.g. ``oci://host/ajour/blinky:latest``);
        ``build.version`` None means the builder's own rule (VERSION file, else the commit).
        """

    def cancel(self, build_id: str) -> bool:
        """Stop a queued or running build; False if the backend does not know it."""

    def stop(self) -> None:
        """Stop workers and watches; running builds end as cancelled or interrupted."""
