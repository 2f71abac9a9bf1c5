"""The CLIs' logging: identical warnings rate-limited, JSON lines on request."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

from ajour_build.core.logs import JsonFormatter, RepeatFilter


def record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("delivery.worker", level, __file__, 1, msg, args, None)


def test_identical_warnings_pass_once_per_window_and_say_how_many_they_stood_for() -> None:
    limit = RepeatFilter(window=1.0)  # the 300 calls below take ms; a loaded machine, more
    down = "no target for %s/%s: registry unreachable"
    assert limit.filter(record(down, "app", "d1"))
    assert [limit.filter(record(down, "app", "d1")) for _ in range(300)] == [False] * 300
    assert limit.filter(record(down, "app", "d2"))  # another device: another line
    assert limit.filter(record("debug lines always pass", level=logging.DEBUG))
    time.sleep(1.05)
    again = record(down, "app", "d1")
    assert limit.filter(again)
    assert again.getMessage().endswith("(300 identical messages suppressed)")


def test_json_lines() -> None:
    line = JsonFormatter().format(record("source %s failed", "oci"))
    data = json.loads(line)
    assert data["message"] == "source oci failed" and data["level"] == "WARNING"
    assert data["logger"] == "delivery.worker" and data["time"].endswith("+00:00")


def test_configured_json_logging_writes_one_object_per_line() -> None:
    code = (
        "import logging; from ajour_build.core.logs import configure_logging;"
        " configure_logging(False, 'json'); log = logging.getLogger('delivery.x');"
        " [log.warning('registry %s unreachable', 'r1') for _ in range(50)]; log.info('hidden')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines  # 49 identical lines held back, the info line below level
    assert json.loads(lines[0])["message"] == "registry r1 unreachable"


def test_the_delivery_cli_refuses_an_unknown_log_format() -> None:
    bad = subprocess.run(
        [sys.executable, "-m", "delivery.cli", "--log-format", "xml", "targets"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "'xml' is not one of 'text', 'json'" in bad.stderr
