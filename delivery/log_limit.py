"""A log line that may repeat (a flood of bad input, a peer that stays down), at most once
per interval."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable


class RateLimitedLog:
    """At most one log line per ``interval`` seconds, with a count of the lines held back."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger, self.interval, self.clock = logger, interval, clock
        self._last: float | None = None
        self._held = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> None:
        with self._lock:
            now = self.clock()
            if self._last is not None and now - self._last < self.interval:
                self._held += 1
                return
            held, self._held, self._last = self._held, 0, now
        if held:
            message += " (and %d more like it since the last such line, not logged)"
            args = (*args, held)
        self.logger.warning(message, *args)
