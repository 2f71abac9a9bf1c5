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
    WritePatch,
    decode_status,
    encode_command,
)
from delivery.replies import Reply, ReplyMemo
from delivery.rollouts import Rollouts
from delivery.sources.firmware_source import FirmwareSource, SourceUnavailable
from delivery.sources.trust import Unverified
from delivery.store import DeviceStatus, StatusStore
from delivery.targets import Targets

NO_FIRMWARE = "no firmware assigned"

log = logging.getLogger("delivery.worker")


@dataclass
class Worker:
    targets: Targets
    store: StatusStore | None = None
    policy: Policy = DEFAULT_POLICY
    policies: dict[str, Policy] = field(default_factory=dict)  # per application
    counters: Counters = field(default_factory=Counters)
    replies: ReplyMemo = field(default_factory=ReplyMemo, repr=False)
    rollouts: Rollouts | None = None  # staged rollouts (delivery/rollouts.py)
    metrics: CollectorRegistry = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.metrics = registry_for(self.counters, self.device_states, self.rollout_states)

    def handle(self, application: str, device: str, payload: bytes) -> bytes | None:
        """The CBOR command for a device's CBOR status, or None (unknown or rejected).

        A status already answered for the same target and policy is answered from the
        reply memo (``delivery/replies.py``): same bytes, no decoding, deciding or encoding.
        """
        started = time.perf_counter()
        route = self.targets.route(application, device)
        if route is None:
            self.counters.add("unknown_device")
            self.counters.observe(time.perf_counter() - started)
            log.info("status from unknown device %s/%s ignored", application, device)
            return None
        target, problem = self._target(route.source, application, device)
        rollouts = self.rollouts if target is not None else None
        latest = target
        if rollouts is not None:  # an application with spec.rollout: the rollout decides
            app = self.targets.fleet.applications.get(application)
            if app is None or app.rollout is None:
                rollouts = None
            else:
                target, problem = self._staged(rollouts, route.source, application, device,
                                               latest, payload)  # fmt: skip
        policy = self.policies.get(application, self.policy)
        memo = "memo_miss"
        reply = self.replies.get(target, policy, payload) if not problem else None
        if reply is not None:
            memo = "memo_hit"
        else:
            try:
                status = decode_status(payload)
            except ProtocolError as exc:
                self.counters.add("rejected")
                self.counters.observe(time.perf_counter() - started)
                log.warning("rejected status from %s/%s: %s", application, device, exc)
                return None
            reply = _reply(status, target, decide(status, target, policy), problem)
            if not problem:  # a source failure is not a property of the status
                self.replies.put(target, policy, payload, reply)
        if (
            rollouts is not None
            and target is not None
            and rollouts.answered(application, device, target, reply)
        ):  # another worker recorded this device's swap: decide again
            target, problem = self._staged(rollouts, route.source, application, device,
                                           latest, payload)  # fmt: skip
            status = decode_status(payload)
            reply = _reply(status, target, decide(status, target, policy), problem)
        if self.store is not None:
            detail = problem or (rollouts.note(application, device) if rollouts else "")
            self.store.record(application, device, reply.observed, route.kind, detail)
        self.counters.answered(reply.kind, reply.served, memo, time.perf_counter() - started)
        return reply.command

    def device_states(self) -> dict[str, int]:
        """Devices per delivery state; fleet devices never seen count as ``Unknown``."""
        found = self.store.counts() if self.store is not None else {}
        seen = sum(found.values())
        found[DeliveryState.UNKNOWN] = found.get(DeliveryState.UNKNOWN, 0) + max(
            0, len(self.targets.fleet.devices) - seen
        )
        return found

    def rollout_states(self) -> dict[str, str]:
        """The state of each staged application's current rollout (for the metrics)."""
        if self.rollouts is None:
            return {}
        out = {}
        for name, app in self.targets.fleet.applications.items():
            current = self.rollouts.current(name) if app.rollout is not None else None
            if current is not None:
                out[name] = current.state.value
        return out

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

    def _target(
        self, source: FirmwareSource | None, application: str, device: str
    ) -> tuple[FirmwareImage | None, str]:
        if source is None:
            return None, NO_FIRMWARE
        try:
            return source.target(), ""
        except (SourceUnavailable, InvalidFirmware, DeliveryError) as exc:
            self._failed(exc)
            log.warning("no target for %s/%s: %s", application, device, exc)
            return None, str(exc)

    def _failed(self, exc: Exception) -> None:
        """Count a source failure, and why the firmware was refused if it was."""
        self.counters.add("source_unavailable")
        if isinstance(exc, Unverified):
            self.counters.add(f"unverified_{exc.reason}")

    def _staged(
        self, rollouts: Rollouts, source: FirmwareSource | None, application: str, device: str,
        latest: FirmwareImage | None, payload: bytes,
    ) -> tuple[FirmwareImage | None, str]:  # fmt: skip
        """The target a rollout gives the device (``latest`` without one)."""
        assert source is not None and latest is not None
        targets = self.targets
        try:
            found = rollouts.target(
                targets.fleet, application, device, latest, payload,
                lambda version: targets.pinned(source, version),
            )  # fmt: skip
            return found, ""
        except (SourceUnavailable, InvalidFirmware, DeliveryError) as exc:
            self._failed(exc)
            log.warning("no rollout target for %s/%s: %s", application, device, exc)
            return None, str(exc)


def _reply(status: Status, target: FirmwareImage | None, command: Command, problem: str) -> Reply:
    """The encoded ``command`` and what the status store records of the exchange (for a
    ``WritePatch``, the offset and size are the patch's)."""
    state: DeliveryState
    offset: int | None = None
    size = len(target.data) if target else None
    served = 0
    if isinstance(command, Sync):
        state = DeliveryState.SYNCED
    elif isinstance(command, Write):
        state, offset, served = DeliveryState.UPDATING, command.offset, len(command.data)
    elif isinstance(command, WritePatch):
        state, offset, served = DeliveryState.UPDATING, command.offset, len(command.data)
        patch = target.patch_from(status.version) if target else None
        size = len(patch.data) if patch else size
    elif isinstance(command, Swap):
        state, offset = DeliveryState.UPDATING, len(target.data) if target else None
    elif isinstance(command, Wait) and problem and problem != NO_FIRMWARE:
        state = DeliveryState.FAILED
    else:
        state = DeliveryState.WAITING
    observed = (
        status.version.decode("utf-8", errors="replace"),
        target.version.decode("utf-8", errors="replace") if target else None,
        offset,
        size,
        state.value,
    )
    return Reply(encode_command(command), type(command).__name__.lower(), served, observed)
