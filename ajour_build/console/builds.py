"""Builds as the console shows them: list filters from a query string, and recent events."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from ajour_build.lifecycle import STATES, Build
from ajour_build.service.records import Query

PAGE = 50
MAX_OFFSET = 1_000_000


class BadFilter(ValueError):
    """A query string the builds list cannot use (the message says how to fix it)."""


@dataclass(frozen=True)
class Filters:
    """``/builds?app=…&device=…&state=…&offset=…``: which builds to list."""

    app: str = ""
    device: str = ""
    state: str = ""
    offset: int = 0

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> Filters:
        app = params.get("app", "").strip()
        device = params.get("device", "").strip()
        state = params.get("state", "").strip()
        raw_offset = params.get("offset", "0").strip() or "0"
        if len(app) > 63:
            raise BadFilter("an application name has at most 63 characters")
        if len(device) > 253:
            raise BadFilter("a device name has at most 253 characters")
        if state and state not in STATES:
            raise BadFilter(f"there is no build state {state!r}; use one of {', '.join(STATES)}")
        if not raw_offset.isdigit() or int(raw_offset) > MAX_OFFSET:
            raise BadFilter(f"offset must be a whole number from 0 to {MAX_OFFSET}")
        return cls(app, device, state, int(raw_offset))

    def query(self, limit: int = PAGE) -> Query:
        return Query(
            application=self.app or None,
            device=self.device or None,
            states=(self.state,) if self.state else (),
            limit=limit,
            offset=self.offset,
        )

    def href(self, **changes: str | int) -> str:
        """``/builds`` with these filters (and ``changes``), empty ones left out."""
        values: dict[str, str | int] = {
            "app": self.app,
            "device": self.device,
            "state": self.state,
            "offset": self.offset,
        }
        values.update(changes)
        kept = {k: v for k, v in values.items() if v not in ("", 0)}
        return "/builds" + ("?" + urlencode(kept) if kept else "")

    @property
    def active(self) -> bool:
        return bool(self.app or self.device or self.state)


@dataclass(frozen=True)
class Event:
    """A build changed state at ``when``."""

    when: datetime
    build: Build
    what: str  # queued, running, or the end state


def events(builds: Iterable[Build], limit: int = 12) -> list[Event]:
    """State changes of ``builds``, newest first."""
    out: list[Event] = []
    for build in builds:
        out.append(Event(build.created, build, "queued"))
        if build.started is not None:
            out.append(Event(build.started, build, "running"))
        if build.finished is not None:
            out.append(Event(build.finished, build, build.state))
    out.sort(key=lambda e: (e.when, _order(e.what)), reverse=True)
    return out[:limit]


def _order(what: str) -> int:
    return {"queued": 0, "running": 1}.get(what, 2)
