"""The delivery worker's core: one status in, one command out, computed from that status.

Transport-independent (MQTT and HTTP call :meth:`Worker.handle`). A bad message is counted
and logged, never raised: one device cannot stop the worker serving the others.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from ajour_build.core.wire import DeliveryState
from delivery.decision import DEFAULT_POLICY, FirmwareImage, InvalidFirmware, Policy, decide
from delivery.errors import DeliveryError
from delivery.metrics import Counters, registry_for
from delivery.protocol import (
    Command,
    ProtocolError,
    Status,
    Swap,
    Sync,
    Wait,
    Write,
    decode_status,
    encode_command,
)
from delivery.sources.firmware_source import SourceUnavailable
from delivery.store import DeviceStatus, StatusStore, now
from delivery.targets import Targets

log = logging.getLogger("delivery.worker")


@dataclass
class Worker:
    targets: Targets
    store: StatusStore | None = None
    policy: Policy = DEFAULT_POLICY
    policies: dict[str, Policy] = field(default_factory=dict)  # per application
    counters: Counters = field(default_factory=Counters)
    metrics: CollectorRegistry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.metrics = registry_for(self.counters, self.device_states)

    def handle(self, application: str, device: str, payload: bytes) -> bytes | None:
        """The CBOR command for a device's CBOR status, or None (unknown or rejected)."""
        started = time.perf_counter()
        try:
            return self._handle(application, device, payload)
        finally:
            self.counters.observe(time.perf_counter() - started)

    def _handle(self, application: str, device: str, payload: bytes) -> bytes | None:
        if not self.targets.knows(application, device):
            self.counters.add("unknown_device")
            log.info("status from unknown device %s/%s ignored", application, device)
            return None
        try:
            status = decode_status(payload)
        except ProtocolError as exc:
            self.counters.add("rejected")
            log.warning("rejected status from %s/%s: %s", application, device, exc)
            return None
        target, problem = self._target(application, device)
        command = decide(status, target, self.policies.get(application, self.policy))
        self.counters.add(type(command).__name__.lower())
        if isinstance(command, Write):
            self.counters.add("bytes", len(command.data))
        if self.store is not None:
            self.store.observe(
                self._observed(application, device, status, target, command, problem)
            )
        return encode_command(command)

    def device_states(self) -> dict[str, int]:
        """Devices per delivery state; fleet devices never seen count as ``Unknown``."""
        found = self.store.counts() if self.store is not None else {}
        seen = sum(found.values())
        found[DeliveryState.UNKNOWN] = found.get(DeliveryState.UNKNOWN, 0) + max(
            0, len(self.targets.fleet.devices) - seen
        )
        return found

    def statuses(self, application: str | None = None) -> list[DeviceStatus]:
        """Observed statuses, plus the fleet's devices never seen yet (state ``Unknown``)."""
        seen = {
            (r.application, r.device): r
            for r in (self.store.devices(application) if self.store else [])
        }
        for app, name in self.targets.fleet.devices:
            if (application is None or app == application) and (app, name) not in seen:
                spec = self.targets.firmware_spec(app, name)
                seen[(app, name)] = DeviceStatus(
                    application=app,
                    device=name,
                    current="",
                    target=None,
                    offset=None,
                    size=None,
                    state=DeliveryState.UNKNOWN,
                    source=spec.kind if spec else "",
                    detail="no status received yet",
                    last_seen=0.0,
                )
        return [seen[key] for key in sorted(seen)]

    def _target(self, application: str, device: str) -> tuple[FirmwareImage | None, str]:
        try:
            source = self.targets.source(application, device)
            if source is None:
                return None, "no firmware assigned"
            return source.target(), ""
        except (SourceUnavailable, InvalidFirmware, DeliveryError) as exc:
            self.counters.add("source_unavailable")
            log.warning("no target for %s/%s: %s", application, device, exc)
            return None, str(exc)

    def _observed(
        self,
        application: str,
        device: str,
        status: Status,
        target: FirmwareImage | None,
        command: Command,
        problem: str,
    ) -> DeviceStatus:
        state: DeliveryState
        offset: int | None = None
        if isinstance(command, Sync):
            state = DeliveryState.SYNCED
        elif isinstance(command, Write):
            state, offset = DeliveryState.UPDATING, command.offset
        elif isinstance(command, Swap):
            state, offset = DeliveryState.UPDATING, len(target.data) if target else None
        elif isinstance(command, Wait) and problem and problem != "no firmware assigned":
            state = DeliveryState.FAILED
        else:
            state = DeliveryState.WAITING
        spec = self.targets.firmware_spec(application, device)
        return DeviceStatus(
            application=application,
            device=device,
            current=status.version.decode("utf-8", errors="replace"),
            target=target.version.decode("utf-8", errors="replace") if target else None,
            offset=offset,
            size=len(target.data) if target else None,
            state=state,
            source=spec.kind if spec else "",
            detail=problem,
            last_seen=now(),
        )
