"""Logging set-up for the command-line tools (the only place that configures logging).

Two formats: ``text`` (one line each) and ``json`` (one JSON object per line, for log
collectors). Identical warnings are rate-limited: a registry that is down, asked by
hundreds of polling devices, gives one line per ``window`` seconds that says how many
identical lines it stood for, not hundreds.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Literal

LogFormat = Literal["text", "json"]
FORMATS: tuple[LogFormat, ...] = ("text", "json")


class RepeatFilter(logging.Filter):
    """Lets the first of identical records (same logger, level and text) through per window."""

    def __init__(self, window: float = 10.0, remember: int = 1024) -> None:
        super().__init__()
        self.window = window
        self.remember = remember
        self._seen: OrderedDict[tuple[str, int, str], tuple[float, int]] = OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = time.monotonic()
        with self._lock:
            first, dropped = self._seen.get(key, (0.0, 0))
            if key in self._seen and now - first < self.window:
                self._seen[key] = (first, dropped + 1)
                return False
            self._seen[key] = (now, 0)
            self._seen.move_to_end(key)
            while len(self._seen) > self.remember:
                self._seen.popitem(last=False)
        if dropped:
            record.msg = f"{record.getMessage()} ({dropped} identical messages suppressed)"
            record.args = None
        return True


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message"}`` (and ``"exception"``) per line."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(debug: bool, fmt: LogFormat = "text", window: float = 10.0) -> None:
    """Warnings and errors to stderr (everything with ``--debug``), in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    if not debug:
        handler.addFilter(RepeatFilter(window))
    # a no-op when the root logger already has handlers (as under pytest)
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
