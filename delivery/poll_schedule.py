"""A schedule of statuses to send later (after a ``Wait``'s or a ``Sync``'s poll), run by one
thread: simulated devices that keep polling cost no thread per poll."""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PollSchedule(Generic[T]):
    """Calls ``send(item)`` for each item when its time has come, from one thread."""

    def __init__(self, send: Callable[[T], None]) -> None:
        self._send = send
        self._due: list[tuple[float, int, T]] = []
        self._count = 0
        self._ready = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="simulate-later", daemon=True)
        self._thread.start()

    def after(self, seconds: float, device: T) -> None:
        with self._ready:
            self._count += 1
            heapq.heappush(self._due, (time.monotonic() + seconds, self._count, device))
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._stopped and (
                    not self._due or self._due[0][0] > time.monotonic()
                ):  # fmt: skip
                    wait = self._due[0][0] - time.monotonic() if self._due else None
                    self._ready.wait(wait)
                if self._stopped:
                    return
                device = heapq.heappop(self._due)[2]
            self._send(device)

    def stop(self) -> None:
        with self._ready:
            self._stopped = True
            self._ready.notify()
        self._thread.join(5)
