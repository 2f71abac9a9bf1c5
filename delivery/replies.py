"""Replies already computed: the same status for the same target gets the same bytes back.

``decide()`` is pure: a device's command follows from its status bytes, the target
firmware and the policy alone. A fleet updating to one image sends the same statuses again
and again (every device walks the same offsets at the same mtu; a synced device repeats
its status every poll), so the worker keeps the encoded reply of recent statuses and
answers a repeat with one dict lookup instead of decoding, deciding and encoding again.
The memo is exact: its keys are the status bytes, the very target object and the very
policy object the reply was computed for, and a table holds strong references to both, so
an ``id`` is never reused while its table lives. A new version (a new target object) or a
fleet reload starts a new table.

Bounded by bytes: past ``budget`` (status and reply bytes plus a fixed overhead per entry)
the oldest table goes first, then the oldest entries of the newest. Lookups take no lock
(one dict read); inserts and evictions take one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from delivery.decision import FirmwareImage, Policy

ENTRY_OVERHEAD: Final = 200
"""Bytes counted per entry on top of its status and reply: the dict slot and the objects."""

DEFAULT_BUDGET: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Reply:
    """What one status is answered with, and what the worker records about it.

    ``observed`` is the status store's view of the exchange: the device's current version,
    the target version, the offset and size of the transfer, and the delivery state.
    """

    command: bytes
    kind: str  # "write", "writepatch", "swap", "sync" or "wait"
    served: int  # firmware bytes carried (a Write's data)
    observed: tuple[str, str | None, int | None, int | None, str]


class _Table:
    __slots__ = ("bytes", "policy", "replies", "target")

    def __init__(self, target: FirmwareImage | None, policy: Policy) -> None:
        self.target = target
        self.policy = policy
        self.replies: dict[bytes, Reply] = {}
        self.bytes = 0


class ReplyMemo:
    """Encoded replies by (target, policy, status bytes), at most ``budget`` bytes in all."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self.size = 0
        self._tables: dict[tuple[int, int], _Table] = {}
        self._lock = threading.Lock()

    def get(self, target: FirmwareImage | None, policy: Policy, status: bytes) -> Reply | None:
        table = self._tables.get((id(target), id(policy)))
        if table is None or table.target is not target or table.policy is not policy:
            return None
        return table.replies.get(status)

    def put(
        self, target: FirmwareImage | None, policy: Policy, status: bytes, reply: Reply
    ) -> None:
        cost = len(status) + len(reply.command) + ENTRY_OVERHEAD
        if cost > self.budget:
            return
        key = (id(target), id(policy))
        with self._lock:
            table = self._tables.get(key)
            if table is None or table.target is not target or table.policy is not policy:
                if table is not None:  # an id reused by a new object: the old table is dead
                    self.size -= table.bytes
                table = self._tables[key] = _Table(target, policy)
            if status in table.replies:
                return
            table.replies[status] = reply
            table.bytes += cost
            self.size += cost
            self._evict(key)

    def _evict(self, keep: tuple[int, int]) -> None:
        while self.size > self.budget:
            oldest = next(iter(self._tables))
            if oldest != keep:
                self.size -= self._tables.pop(oldest).bytes
                continue
            table = self._tables[keep]
            first = next(iter(table.replies))
            reply = table.replies.pop(first)
            cost = len(first) + len(reply.command) + ENTRY_OVERHEAD
            table.bytes -= cost
            self.size -= cost

    def clear(self) -> None:
        with self._lock:
            self._tables.clear()
            self.size = 0

    @property
    def entries(self) -> int:
        return sum(len(t.replies) for t in list(self._tables.values()))
