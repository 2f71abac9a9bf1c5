"""Deadlines of the local backend's workers: what each is doing, until when, and what it
gave up on.

A worker announces each step of a build with the step's deadline (:meth:`Watchdog.step`).
A step that may block on a remote without end (the publish) runs in a thread of its own
(:meth:`Watchdog.run`): the worker waits for it in short slices and gives it up when the
build is cancelled or the deadline passes, so a stalled registry cannot hold the worker or
the builds queued behind it. A thread given up on stays in view until it ends.

:meth:`Watchdog.problems` names every worker, and every thread given up on, that is still
busy ``stuck_after`` seconds past its deadline; ``/readyz`` fails while there is one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from ajour_build.core.errors import BuildCancelled, PublishError
from ajour_build.core.spec.fields import format_duration

T = TypeVar("T")
SLICE = 0.1  # seconds between checks of the cancel flag and the deadline


@dataclass(frozen=True)
class Activity:
    """One step of one build, in a worker or in a thread given up on."""

    thread: threading.Thread
    build_id: str
    step: str
    seconds: float  # the step's deadline, from its start
    deadline: float  # time.monotonic() when it is up

    def late(self, now: float) -> float:
        """Seconds past the deadline (negative while there is time left)."""
        return now - self.deadline


@dataclass
class _Outcome(Generic[T]):
    value: T | None = None
    error: BaseException | None = None


@dataclass
class Watchdog:
    stuck_after: float = 60.0
    _busy: dict[str, Activity] = field(init=False, default_factory=dict)  # by worker name
    _abandoned: list[Activity] = field(init=False, default_factory=list)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def step(self, build_id: str, step: str, seconds: float) -> None:
        """The calling worker starts ``step`` of ``build_id``, due in ``seconds``."""
        thread = threading.current_thread()
        activity = Activity(thread, build_id, step, seconds, time.monotonic() + seconds)
        with self._lock:
            self._busy[thread.name] = activity

    def idle(self) -> None:
        """The calling worker has finished its build."""
        with self._lock:
            self._busy.pop(threading.current_thread().name, None)

    def run(
        self,
        build_id: str,
        step: str,
        seconds: float,
        call: Callable[[], T],
        cancel: threading.Event,
    ) -> T:
        """``call()`` in a thread of its own, given up on cancel or after ``seconds``.

        Raises BuildCancelled when ``cancel`` is set first, PublishError when the deadline
        passes first; else returns what ``call`` returned or raises what it raised.
        """
        self.step(build_id, step, seconds)
        outcome: _Outcome[T] = _Outcome()

        def target() -> None:
            try:
                outcome.value = call()
            except BaseException as exc:  # handed to the worker, which raises it
                outcome.error = exc

        thread = threading.Thread(target=target, name=f"ajour-{step}-{build_id}", daemon=True)
        activity = Activity(thread, build_id, step, seconds, time.monotonic() + seconds)
        thread.start()
        while True:
            thread.join(SLICE)
            if not thread.is_alive():
                break
            if cancel.is_set():
                self._abandon(activity)
                raise BuildCancelled(f"cancelled during {step}; the {step} was given up")
            if time.monotonic() >= activity.deadline:
                self._abandon(activity)
                raise PublishError(
                    f"given up after {format_duration(int(seconds))} without an end; check"
                    f" that the target answers, or raise service.{step}_timeout"
                )
        if outcome.error is not None:
            raise outcome.error
        return outcome.value  # type: ignore[return-value]

    def _abandon(self, activity: Activity) -> None:
        with self._lock:
            self._abandoned.append(activity)

    def problems(self) -> list[str]:
        """What is stuck: busy ``stuck_after`` seconds or more past its deadline."""
        now = time.monotonic()
        found: list[str] = []
        with self._lock:
            self._abandoned = [a for a in self._abandoned if a.thread.is_alive()]
            for name, a in sorted(self._busy.items()):
                if a.thread.is_alive() and a.late(now) >= self.stuck_after:
                    found.append(
                        f"worker {name} is stuck in the {a.step} step of build {a.build_id}:"
                        f" {a.late(now):.0f}s past its {format_duration(int(a.seconds))}"
                        " deadline"
                    )
            for a in self._abandoned:
                if a.late(now) >= self.stuck_after:
                    found.append(
                        f"the {a.step} of build {a.build_id} was given up but is still blocked"
                        f" (thread {a.thread.name}): {a.late(now):.0f}s past its"
                        f" {format_duration(int(a.seconds))} deadline"
                    )
        return found
