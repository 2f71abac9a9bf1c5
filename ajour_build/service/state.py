"""The running service: its parts, how they start and stop, and how routes reach them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import Request

from ajour_build.config import InstallationConfig
from ajour_build.lifecycle import Build
from ajour_build.service.audit import AuditLog, Who, who
from ajour_build.service.backends.backend import Backend
from ajour_build.service.counters import BuildMetrics
from ajour_build.service.records import Records
from ajour_build.service.retention import Pruner
from ajour_build.service.scheduler import Scheduler

log = logging.getLogger(__name__)


@dataclass
class Service:
    config: InstallationConfig
    records: Records
    backend: Backend
    scheduler: Scheduler
    open_access: bool = False  # --insecure-no-auth: no tokens needed (loopback demos only)
    interrupted: list[Build] = field(default_factory=list)
    started: bool = False
    state_dir: Path | None = None  # builds/<ref> are the local backend's build directories
    metrics: BuildMetrics = field(default_factory=BuildMetrics)
    audit: AuditLog = field(init=False)
    pruner: Pruner = field(init=False)

    def __post_init__(self) -> None:
        self.audit = AuditLog(self.records.engine)
        builds_dir = self.state_dir / "builds" if self.state_dir is not None else None
        self.pruner = Pruner(self.records, self.config.service.retention, builds_dir)
        if self.metrics.build_changed not in self.records.listeners:
            self.records.listeners.append(self.metrics.build_changed)

    def start(self) -> None:
        self.interrupted = self.scheduler.recover()
        self.backend.start()
        self.started = True
        self.pruner.start()

    def stop(self) -> None:
        self.started = False
        self.pruner.stop()
        self.backend.stop()
        self.records.close()
        log.info("build service stopped: backend %s, records closed", self.backend.name)

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.config.service.token_values()

    @property
    def open_reads(self) -> bool:
        return self.open_access or self.config.service.public_read


def who_of(request: Request, via: str) -> Who:
    """Who sent ``request`` (for the audit log)."""
    return who(request, via, service_of(request).tokens)


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service
