"""The embedded default backend: the local runner behind a bounded queue and worker threads.

A build goes queued → running → succeeded | failed | cancelled. Publishing is part of the
build: a build that compiled but could not be published failed (its log says why). Cancel
takes a queued build off the queue at once and stops a running one within a second
(the engine kills the builder container or process group; a publish is given up, see
:mod:`.watchdog`). Every step has a deadline, and ``health`` reports a worker stuck past it.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from typing import Any

from ajour_build.builders.catalog import Builder
from ajour_build.core.errors import AjourError, BuildCancelled
from ajour_build.core.spec.fields import parse_duration
from ajour_build.lifecycle import Build, BuildState
from ajour_build.plan import PlannedBuild
from ajour_build.publish.destination import release
from ajour_build.publish.publisher import Published
from ajour_build.publish.signing import Signer
from ajour_build.runner.job import Engine, LogLimits, Progress
from ajour_build.runner.local_runner import LocalRunner
from ajour_build.runner.state_dir import LocalBuild, StateDir
from ajour_build.service.backends.backend import QueueFull
from ajour_build.service.backends.watchdog import Watchdog
from ajour_build.service.records import Records

log = logging.getLogger(__name__)
SECONDS_PER_BUILD = 30  # the Retry-After hint per queued build when the queue is full
MAX_LOG_LINES = 50_000  # per build, in the records
STEP_SECONDS = 300  # the deadline of a step without one of its own (start, collect)


class LogSink:
    """Batches log lines into the records: at most every 0.2 s, and at the end.

    At most ``limit`` lines per build go to the records; a builder that prints without end
    cannot fill the database. ``build.log`` in the state dir keeps more (it is bounded in
    bytes, not lines).
    """

    def __init__(self, records: Records, build_id: str, limit: int = MAX_LOG_LINES) -> None:
        self.records = records
        self.build_id = build_id
        self.limit = limit
        self.pending: list[str] = []
        self.stored = 0
        self.dropped = 0
        self.noted = False
        self.lock = threading.Lock()
        self.last = time.monotonic()

    def line(self, text: str) -> None:
        with self.lock:
            if self.stored + len(self.pending) >= self.limit:
                self.dropped += 1
                return
            self.pending.append(text)
            if len(self.pending) < 200 and time.monotonic() - self.last < 0.2:
                return
        self.flush()

    def flush(self) -> None:
        with self.lock:
            lines, self.pending = self.pending, []
            self.stored += len(lines)
            if self.dropped and not self.noted:
                lines.append(
                    f"[ajour] log truncated at {self.limit} lines; the build's build.log in the"
                    " state directory has more"
                )
                self.noted = True
            self.last = time.monotonic()
        try:
            self.records.append_log(self.build_id, lines)
        except AjourError as exc:  # the build goes on; its log has a gap
            log.warning("build %s: %d log lines lost: %s", self.build_id, len(lines), exc)


@dataclass
class LocalBackend:
    records: Records
    state: StateDir
    catalog: list[Builder] = field(default_factory=list)
    queue_size: int = 16
    workers: int = 1
    publish: bool = True
    insecure: bool = False
    notify_url: str = ""
    engine: Engine | None = None
    # or a context manager that yields one for the backend's lifetime (the podman service)
    engine_context: AbstractContextManager[Engine] | None = None
    name: str = "local"
    durable: bool = False
    # bounds (seconds, bytes, lines): see docs/service.md#bounds
    clone_timeout: float = 600.0
    publish_timeout: float = 600.0
    stuck_after: float = 60.0
    log_limits: LogLimits = field(default_factory=LogLimits)
    log_lines: int = MAX_LOG_LINES
    on_publish: Callable[[float, bool], None] | None = None  # seconds, succeeded (metrics)
    # read at start (service/keys.py): every build gets the image key, every publish is signed
    image_key: bytes | None = field(default=None, repr=False)
    signer: Signer | None = None
    watchdog: Watchdog = field(init=False, repr=False)
    _queue: queue.Queue[tuple[Build, PlannedBuild]] = field(
        init=False, default_factory=queue.Queue, repr=False
    )
    _waiting: set[str] = field(init=False, default_factory=set, repr=False)  # queued, live
    _threads: list[threading.Thread] = field(init=False, default_factory=list, repr=False)
    _cancels: dict[str, threading.Event] = field(init=False, default_factory=dict, repr=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock, repr=False)
    _stopping: threading.Event = field(init=False, default_factory=threading.Event, repr=False)
    _stack: ExitStack = field(init=False, default_factory=ExitStack, repr=False)

    def __post_init__(self) -> None:
        self.watchdog = Watchdog(self.stuck_after)

    # -- Backend -------------------------------------------------------------------------
    def start(self) -> None:
        if self.engine is None:
            if self.engine_context is None:
                raise AjourError("the local backend needs an engine or an engine context")
            self.engine = self._stack.enter_context(self.engine_context)
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"ajour-build-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def health(self) -> str:
        dead = [t.name for t in self._threads if not t.is_alive()]
        if dead and not self._stopping.is_set():
            return f"build workers stopped unexpectedly: {', '.join(dead)}"
        stuck = self.watchdog.problems()
        return "; ".join(stuck) if stuck else "ok"

    def free_slots(self) -> int:
        """Room in the queue: builds cancelled while they waited do not count."""
        with self._lock:
            return self.queue_size - len(self._waiting)

    def submit(self, build: Build, planned: PlannedBuild) -> None:
        with self._lock:
            if len(self._waiting) >= self.queue_size:
                raise QueueFull(
                    f"the build queue is full ({self.queue_size} waiting); try again later",
                    retry_after=SECONDS_PER_BUILD * max(1, len(self._waiting) // self.workers),
                )
            self._cancels[build.id] = threading.Event()
            self._waiting.add(build.id)
        self._queue.put((build, planned))

    def cancel(self, build_id: str) -> bool:
        with self._lock:
            event = self._cancels.get(build_id)
            waiting = build_id in self._waiting
            self._waiting.discard(build_id)
        if event is None:
            return False
        event.set()
        # a queued build ends now; a running one ends when its runner has stopped it
        if waiting:
            self.records.transition(
                build_id, BuildState.CANCELLED, failure="cancelled before it started"
            )
        return True

    def stop(self) -> None:
        """Stop the workers; running builds end as interrupted (a restart is not a cancel)."""
        self._stopping.set()
        with self._lock:
            events = list(self._cancels.values())
        for event in events:
            event.set()
        for thread in self._threads:
            thread.join(30)
            if thread.is_alive():
                log.warning("build worker %s did not stop in time", thread.name)
        self._stack.close()

    # -- work ----------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                build, planned = self._queue.get(timeout=0.25)
            except queue.Empty:
                continue
            with self._lock:
                live = build.id in self._waiting
                self._waiting.discard(build.id)
            try:
                if live and not self._stopping.is_set():
                    self._run(build, planned)
            except Exception as exc:  # one build, or one database hiccup, never ends a worker
                log.exception("build %s: unexpected error", build.id)
                self._end(build.id, BuildState.FAILED, f"internal error: {exc}")
            finally:
                self.watchdog.idle()
                with self._lock:
                    self._cancels.pop(build.id, None)

    def _end(
        self, build_id: str, state: BuildState, failure: str | None = None, **values: Any
    ) -> None:
        """Record an end state; if the records are down, log it and go on."""
        try:
            self.records.transition(build_id, state, failure=failure, **values)
        except AjourError as exc:
            log.error(
                "build %s ended %s, but the records are unavailable: %s", build_id, state, exc
            )

    def _cancelled(self) -> tuple[BuildState, str]:
        if self._stopping.is_set():
            return BuildState.INTERRUPTED, "the service stopped while this build was running"
        return BuildState.CANCELLED, "cancelled by request"

    def _run(self, build: Build, planned: PlannedBuild) -> None:
        with self._lock:
            cancel = self._cancels.get(build.id) or threading.Event()
        if cancel.is_set() or self.records.transition(build.id, BuildState.RUNNING) is None:
            return  # cancelled while queued
        self.watchdog.step(build.id, "start", STEP_SECONDS)
        sink = LogSink(self.records, build.id, self.log_lines)
        deadlines = {
            "resolve": self.clone_timeout,
            "clone": self.clone_timeout,
            "build": float(parse_duration(planned.timeout)),
        }

        def on_step(step: str) -> None:
            self.watchdog.step(build.id, step, deadlines.get(step, STEP_SECONDS))
            sink.line(f"[ajour] step: {step}")
            sink.flush()  # the log shows the step while it runs, even one that waits

        progress = Progress(on_step=on_step, on_line=sink.line)
        assert self.engine is not None
        runner = LocalRunner(
            self.state,
            self.engine,
            self.catalog,
            True,
            progress,
            cancel,
            log_limits=self.log_limits,
            clone_timeout=self.clone_timeout,
            signing_key=self.image_key,
        )
        try:
            record = runner.run(planned, build.version)
            if cancel.is_set():  # asked while the runner was between steps, or a cache hit
                raise BuildCancelled("cancelled by request")
        except BuildCancelled:
            sink.flush()
            self._end(build.id, *self._cancelled())
            return
        except AjourError as exc:
            sink.flush()
            self._end(build.id, BuildState.FAILED, _first_line(exc))
            return
        values = {
            "commit": record.commit,
            "version": record.version,
            "cached": record.cached,
            "backend_ref": record.id,
        }
        self.records.update(build.id, **values)
        if not self.publish:
            sink.flush()
            self._end(build.id, BuildState.SUCCEEDED)
            return
        sink.line(f"[ajour] step: publish to {build.publish_to}")
        sink.flush()  # the log shows where the build is while the publish waits
        began = time.monotonic()
        try:
            published = self.watchdog.run(
                build.id,
                "publish",
                self.publish_timeout,
                lambda: self._publish(build, record),
                cancel,
            )
            self._published(began, True)
        except BuildCancelled as exc:
            sink.line(f"[ajour] {exc}")
            sink.flush()
            self._end(build.id, *self._cancelled())
            return
        except AjourError as exc:
            self._published(began, False)
            sink.line(f"[ajour] publish failed: {_first_line(exc)}")
            sink.flush()
            self._end(build.id, BuildState.FAILED, f"publish: {_first_line(exc)}")
            return
        sink.line(f"[ajour] published {published.version} as {published.reference}")
        sink.flush()
        self._end(
            build.id, BuildState.SUCCEEDED, digest=published.digest, reference=published.reference
        )

    def _published(self, began: float, ok: bool) -> None:
        if self.on_publish is not None:
            self.on_publish(time.monotonic() - began, ok)

    def _publish(self, build: Build, record: LocalBuild) -> Published:
        artifact = self.state.firmware_of(record)
        out = release(
            artifact,
            build.publish_to,
            os.environ,
            self.insecure,
            self.notify_url,
            signer=self.signer,
        )
        if out.warning:  # the firmware is out; delivery will find it at its next tag check
            log.warning("build %s: %s", build.id, out.warning)
        return out.published


def _first_line(exc: Exception) -> str:
    return str(exc).split("\n")[0]
