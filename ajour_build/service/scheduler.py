"""Turns triggers (a push, an API call, a retry) into build records and backend submissions.

Every build start goes through :func:`ajour_build.plan.plan_builds`, so the allowlist
applies to webhooks, the API, the console and retries alike. Identical build specs
collapse: into one build per trigger, and onto a build of the same spec that is still
queued (it will check out the newest commit anyway).

The fleet is read again when a spec file changes. A change that does not validate keeps
the last good fleet, and the error is reported by ``/readyz`` and in trigger answers.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ajour_build.config import InstallationConfig
from ajour_build.core.errors import AjourError, NotAllowedError, SpecError
from ajour_build.core.fleet import Fleet, load_fleet
from ajour_build.core.spec.document import iter_spec_files
from ajour_build.core.spec.fields import redact_uri
from ajour_build.lifecycle import Build, BuildState
from ajour_build.plan import Plan, PlannedBuild, plan_builds
from ajour_build.push import Push, match
from ajour_build.service.backends.backend import Backend, BackendError, QueueFull
from ajour_build.service.records import Records

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 3  # a build that keeps dying with the service is not retried forever


class NotFound(AjourError):
    """An application, device or build that does not exist."""


@dataclass(frozen=True)
class Outcome:
    """What a trigger did: builds queued (or joined), and refusals with their reasons."""

    queued: tuple[Build, ...] = ()
    joined: tuple[Build, ...] = ()  # identical builds already waiting in the queue
    refused: tuple[str, ...] = ()
    explanation: str = ""


@dataclass
class FleetSource:
    """The fleet from spec files, read again when a file changes."""

    paths: list[Path]
    rescan_seconds: float = 1.0  # how stale a spec change may be before it is seen
    fleet: Fleet = field(init=False)
    error: str | None = field(init=False, default=None)
    _scanned: float = field(init=False, default=0.0)
    _signature: tuple[tuple[str, int, int], ...] = field(init=False, default=())
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._signature = self._scan()
        self._scanned = time.monotonic()
        self.fleet = load_fleet(self.paths)  # the first read must succeed

    def _scan(self) -> tuple[tuple[str, int, int], ...]:
        out = []
        for path in iter_spec_files([p for p in self.paths if p.exists()], frozenset()):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((str(path), st.st_mtime_ns, st.st_size))
        return tuple(sorted(out))

    def current(self) -> Fleet:
        with self._lock:
            if time.monotonic() - self._scanned < self.rescan_seconds:
                return self.fleet
            self._scanned = time.monotonic()
            signature = self._scan()
            if signature != self._signature:
                self._signature = signature
                try:
                    self.fleet = load_fleet(self.paths)
                    self.error = None
                    log.info("fleet specs changed: read again")
                except SpecError as exc:
                    self.error = str(exc)
                    log.error(
                        "fleet specs changed but do not validate; keeping the last good fleet: %s",
                        exc,
                    )
            return self.fleet


@dataclass
class Scheduler:
    fleet: FleetSource
    config: InstallationConfig
    records: Records
    backend: Backend
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)
    _plan: tuple[Fleet, Plan] | None = field(init=False, default=None)

    def plan(self, fleet: Fleet) -> Plan:
        """The whole fleet's plan, computed once per fleet (fleets and config are immutable)."""
        cached = self._plan
        if cached is not None and cached[0] is fleet:
            return cached[1]
        plan = plan_builds(fleet, self.config)
        self._plan = (fleet, plan)
        return plan

    # -- triggers ------------------------------------------------------------------------
    def trigger(
        self,
        application: str,
        device: str | None = None,
        reason: str = "api",
        version: str | None = None,
    ) -> Outcome:
        """Build an application (every distinct build it and its devices need) or a device."""
        fleet = self.fleet.current()
        if application not in fleet.applications:
            raise NotFound(f"application {application!r} is not in the fleet")
        if device is not None and (application, device) not in fleet.devices:
            raise NotFound(f"device {device!r} of application {application!r} is not in the fleet")
        if not self.config.allowlist.allows(application):
            raise NotAllowedError([self.config.allowlist.refusal(application)])
        plan = plan_builds(fleet, self.config, application, device)
        if not plan.builds and plan.refused:  # every build crosses the app's tenancy
            raise NotAllowedError(list(plan.refused))
        if not plan.builds:
            what = f"device {device!r}" if device else f"application {application!r}"
            return Outcome(
                explanation=f"{what} has no firmware.container.build section: nothing to build"
            )
        return self._enqueue(plan.builds, reason, version, plan.refused)

    def push(self, push: Push) -> Outcome:
        fleet = self.fleet.current()
        found = match(fleet, self.config, push, self.plan(fleet))
        if not found.builds:
            urls = ", ".join(redact_uri(u) for u in push.urls) or "no clone URL"
            why = (
                f"no application or device builds {urls} at {push.name!r} (commit"
                f" {push.after[:12]}); fleet sources are matched by repository (scheme, user,"
                " .git and host case ignored) and by source.git.rev (branch, tag or sha)"
            )
            if push.deleted:
                why = f"{push.ref} was deleted: nothing to build"
            elif found.refused:
                why = "every matching build is refused (allowlist or tenancy); see refused"
            return Outcome(refused=found.refused, explanation=why)
        reason = f"push {push.provider} {push.ref} {push.after[:12]}"
        return self._enqueue(found.builds, reason, None, found.refused)

    def retry(self, build: Build, reason: str) -> Outcome:
        """A build again (after an interruption): same application and consumers."""
        fleet = self.fleet.current()
        plan = self.plan(fleet)
        again = [p for p in plan.builds if p.key == build.spec_hash]
        if not again:
            return Outcome(explanation=f"{build.name}: its spec is no longer in the fleet")
        return self._enqueue(again, reason, build.version, plan.refused, retry_of=build)

    def _enqueue(
        self,
        planned: tuple[PlannedBuild, ...] | list[PlannedBuild],
        reason: str,
        version: str | None,
        refused: tuple[str, ...],
        retry_of: Build | None = None,
    ) -> Outcome:
        with self._lock:
            waiting = self.records.queued_by_spec()
            fresh = [p for p in planned if p.key not in waiting or version]
            joined = tuple(
                self.records.require(waiting[p.key])
                for p in planned
                if p.key in waiting and not version
            )
            slots = self.backend.free_slots()
            if slots is not None and len(fresh) > slots:
                raise QueueFull(
                    f"the build queue has room for {slots} build(s), this trigger needs"
                    f" {len(fresh)}; nothing was queued, try again later",
                    retry_after=30,
                )
            # records first, under the lock: a concurrent identical trigger joins them
            created = [(p, self._record(p, reason, version, retry_of)) for p in fresh]
        # the backend outside the lock: a Tekton submit is a network call with retries
        submitted: list[Build] = []
        try:
            for p, build in created:
                self.backend.submit(build, p)
                log.info("build %s queued (%s): %s", build.id, reason, p.name)
                submitted.append(build)
        except BackendError as exc:
            self._roll_back([b for _, b in created], submitted, exc)
            raise
        queued = [self.records.require(b.id) for b in submitted]
        return Outcome(tuple(queued), joined, refused, _explain(queued, joined))

    def _roll_back(self, created: list[Build], submitted: list[Build], exc: BackendError) -> None:
        """All or nothing: a trigger whose build k could not start leaves no build behind."""
        done = {b.id for b in submitted}
        for build in created:
            if build.id in done:
                try:
                    self.backend.cancel(build.id)
                except BackendError as err:
                    log.error("build %s: rolling back failed: %s", build.id, err)
                why = f"rolled back: another build of the same trigger could not start ({exc})"
                self.records.transition(build.id, BuildState.CANCELLED, failure=why)
            else:
                self.records.transition(build.id, BuildState.FAILED, failure=f"not started: {exc}")

    def _record(
        self, planned: PlannedBuild, reason: str, version: str | None, retry_of: Build | None
    ) -> Build:
        return self.records.create(
            Build.queued(
                name=planned.name,
                spec_hash=planned.key,
                application=planned.application,
                consumers=tuple(str(c) for c in planned.consumers),
                backend=self.backend.name,
                reason=reason,
                git_url=redact_uri(planned.build.source.git.uri),
                revision=planned.build.source.git.rev,
                image=planned.image,
                publish_to=self.publish_target(planned),
                version=version,
                retry_of=retry_of.id if retry_of else None,
                attempt=retry_of.attempt + 1 if retry_of else 1,
            )
        )

    def publish_target(self, planned: PlannedBuild) -> str:
        override = self.config.service.publish_to.rstrip("/")
        if not override:
            return planned.publish_to
        image = planned.image.removeprefix(self.config.registry.prefix + "/")
        return f"{override}/{image}"

    # -- other requests ------------------------------------------------------------------
    def cancel(self, build_id: str) -> Build:
        build = self.records.get(build_id)
        if build is None:
            raise NotFound(f"build {build_id!r} does not exist")
        if not build.active:
            return build
        if not self.backend.cancel(build_id):
            self.records.transition(build_id, BuildState.CANCELLED, failure="cancelled by request")
        return self.records.require(build_id)

    def recover(self) -> list[Build]:
        """Mark what a previous process left running as interrupted; retry if configured."""
        self.records.drop_pending_deliveries()
        interrupted = self.records.interrupt_active(keep_submitted=self.backend.durable)
        for build in interrupted:
            log.warning("build %s was interrupted by a restart", build.id)
            if build.attempt >= MAX_ATTEMPTS:
                log.error("build %s: not retried, it was attempt %d", build.id, build.attempt)
                continue
            if self.config.service.on_interrupted == "retry":
                try:
                    self.retry(build, f"retry of {build.id} (interrupted by a restart)")
                except AjourError as exc:
                    log.error("retrying build %s failed: %s", build.id, exc)
        return interrupted


def _explain(queued: list[Build], joined: tuple[Build, ...]) -> str:
    parts = []
    if queued:
        parts.append(f"{len(queued)} build(s) queued")
    if joined:
        parts.append(f"{len(joined)} identical build(s) already queued (joined)")
    return "; ".join(parts) or "nothing to build"
