"""``ajour-delivery status``'s human output: one aligned row per device, "—" for what is not
known, and when the worker last heard from the device as a relative time and in UTC."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from ajour_build.core.wire import DeviceReport

EMPTY = "—"
HEADER = ("DEVICE", "STATE", "CURRENT", "TARGET", "PROGRESS", "LAST SEEN")


def ago(seconds: float) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago`` (a clock skew reads ``0 s ago``)."""
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def last_seen(epoch: float, now: float) -> str:
    if epoch <= 0:
        return "never"
    iso = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{ago(now - epoch)} ({iso})"


def row(report: DeviceReport, now: float) -> tuple[str, ...]:
    progress = EMPTY
    if report.offset is not None:
        size = f"{report.size}" if report.size is not None else "?"
        percent = report.percent
        progress = f"{report.offset}/{size}" + (f" {percent}%" if percent is not None else "")
    return (
        f"{report.application}/{report.device}",
        report.state.value,
        report.current or EMPTY,
        report.target or EMPTY,
        progress,
        last_seen(report.last_seen, now),
    )


def render(reports: Sequence[DeviceReport], now: float) -> str:
    """The table as text, columns padded to their widest cell."""
    rows = [HEADER, *(row(r, now) for r in reports)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=True)).rstrip()
        for r in rows
    )
