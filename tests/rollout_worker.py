"""A real delivery worker with staged rollouts, for the tests of what reads and operates it.

``Worker`` with ``Rollouts`` on a SQLite rollout file and a test clock (tests/clock.py), its
firmware in an OCI layout directory (``fw/<app>:latest`` and a tag per version), served by
``HttpTransport`` on loopback with the status and operator tokens. Devices report over that
transport (``POST /v1/dfu``, the embedded-update CBOR status, basic auth as
``<device>@<app>``), or in-process through ``Worker.handle``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from ajour_build.core.fleet import load_fleet
from delivery.device import SimulatedDevice
from delivery.http import HttpSettings, HttpTransport
from delivery.protocol import Command, decode_command, encode_status
from delivery.rollout_store import SqliteRolloutStore
from delivery.rollouts import Rollouts
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.clock import Clock
from tests.http_wire import device_report, settings
from tests.test_sources import publish


@dataclass
class RolloutWorker:
    """The worker, its clock and rollout store, and (while served) its URL."""

    root: Path
    worker: Worker
    clock: Clock
    store: SqliteRolloutStore
    http: HttpSettings
    transport: HttpTransport | None = None

    @property
    def url(self) -> str:
        assert self.transport is not None, "the worker is not served"
        return self.transport.url

    @property
    def rollouts(self) -> Rollouts:
        assert self.worker.rollouts is not None
        return self.worker.rollouts

    @classmethod
    def build(
        cls, root: Path, fleet: str, now: float, http: HttpSettings | None = None
    ) -> RolloutWorker:
        """The worker of the ``fleet`` YAML (written to ``root/fleet``) on a clock at
        ``now``, not served yet; ``http``: tests/http_wire.py's settings by default."""
        (root / "fleet").mkdir(parents=True)
        (root / "fleet" / "fleet.yaml").write_text(fleet)
        clock = Clock(now)
        targets = Targets(load_fleet([root / "fleet"]), f"oci-layout://{root / 'oci'}", ttl=60)
        store = SqliteRolloutStore(root / "rollouts.db")
        worker = Worker(targets, StatusStore(), rollouts=Rollouts(store, clock=clock))
        return cls(root, worker, clock, store, http or settings())

    def publish(self, application: str, version: str, content: bytes = b"") -> None:
        """Publish ``version`` of the application's firmware (its ``latest`` tag moves);
        1500 bytes of its own by default."""
        image = self.root / "oci" / "fw" / application
        data = content or (version.encode() * 1500)[:1500]
        publish(self.root, f"oci-layout://{image}:latest", version, data)
        self.worker.targets.invalidate()

    def handle(self, application: str, name: str, device: SimulatedDevice) -> Command:
        """One status of ``device`` through ``Worker.handle``; the command it applied."""
        reply = self.worker.handle(application, name, encode_status(device.status()))
        assert reply is not None
        command = decode_command(reply)
        device.apply(command)
        return command

    def report(
        self, application: str, name: str, device: SimulatedDevice, password: str
    ) -> Command:
        """One status of ``device`` over HTTP (``POST /v1/dfu``) on a connection of its own
        (a kept one may have idled out since); the command it applied."""
        return device_report(self.url, application, name, device, password)

    def serve(self, **changes: object) -> None:
        """Serve the worker (again, on the same port once it was served), with the settings
        changed by ``changes`` (e.g. a rotated ``operator_token``)."""
        self.stop()
        if changes:
            self.http = replace(self.http, **changes)  # type: ignore[arg-type]
        self.transport = HttpTransport(self.worker, self.http)
        self.transport.start()
        self.http = replace(self.http, port=self.transport.port)

    def stop(self) -> None:
        if self.transport is not None:
            self.transport.stop()
            self.transport = None


@contextmanager
def rollout_worker(
    root: Path, fleet: str, now: float, http: HttpSettings | None = None
) -> Iterator[RolloutWorker]:
    """``RolloutWorker.build``, served (on a free port) while the block runs."""
    made = RolloutWorker.build(root, fleet, now, http)
    try:
        made.serve()
        yield made
    finally:
        made.stop()
        made.store.close()
