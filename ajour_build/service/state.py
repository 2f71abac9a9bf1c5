"""The running service: its parts, how they start and stop, and how routes reach them."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from fastapi import Request

from ajour_build.config import InstallationConfig
from ajour_build.lifecycle import Build
from ajour_build.service.backends.backend import Backend
from ajour_build.service.records import Records
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

    def start(self) -> None:
        self.interrupted = self.scheduler.recover()
        self.backend.start()
        self.started = True

    def stop(self) -> None:
        self.started = False
        self.backend.stop()
        self.records.close()
        log.info("build service stopped: backend %s, records closed", self.backend.name)

    @property
    def tokens(self) -> tuple[str, ...]:
        return self.config.service.token_values()

    @property
    def open_reads(self) -> bool:
        return self.open_access or self.config.service.public_read


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service
