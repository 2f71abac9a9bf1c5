"""The worker's counters, and their Prometheus exposition (``GET /metrics``).

The hot path only bumps plain counters under one lock (:class:`Counters`); Prometheus
families are built from a snapshot when someone scrapes, so metrics cost a device nothing
more than the counting it already did. Each worker has its own registry: no global state.

Families (all prefixed ``ajour_delivery_``):

* ``statuses_total{outcome}``: ``answered``, ``rejected`` (garbled CBOR), ``unknown_device``,
  ``unauthorized``;
* ``commands_total{type}``: ``wait``, ``sync``, ``write``, ``swap``, ``writepatch``;
* ``bytes_served_total``: firmware bytes sent in ``Write`` commands, and patch bytes in
  ``WritePatch`` commands;
* ``source_errors_total``: statuses answered ``Wait`` because the firmware source failed;
* ``unverified_total{reason}``: of those, the ones whose firmware the application's trust
  policy refused (``delivery/sources/trust.py``): ``unsigned``, ``bad_signature``,
  ``provenance_mismatch``;
* ``reply_memo_total{result}``: answered statuses whose reply the memo had (``hit``) or
  computed (``miss``), see ``delivery/replies.py``;
* ``events_total``: publish events and registry notifications taken;
* ``handle_seconds``: time to answer one status (histogram);
* ``devices{state}``: devices per delivery state (``Unknown``: in the fleet, never seen);
* ``rollout_state{application,state}``: 1 for the state of each application's current
  staged rollout, 0 for the other states (``running``, ``paused``, ``aborted``, …).
"""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ajour_build.core.artifact.trust import REASONS
from ajour_build.core.rollout.model import State as RolloutState
from ajour_build.core.wire import DELIVERY_STATES

PREFIX = "ajour_delivery"
COMMANDS = ("wait", "sync", "write", "swap", "writepatch")
OUTCOMES = ("rejected", "unknown_device", "unauthorized")
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 2.5)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass
class Counters:
    """Named counts and a latency histogram, safe to bump from any thread."""

    _counts: Counter[str] = field(default_factory=Counter)
    _buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    _seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        with self._lock:
            self._buckets[index] += 1
            self._seconds += seconds

    def answered(self, kind: str, served: int, memo: str, seconds: float) -> None:
        """One answered status, counted under one lock: its command ``kind``, the firmware
        bytes it ``served``, whether the reply memo had it (``memo_hit``/``memo_miss``) and
        how long it took."""
        index = bisect.bisect_left(LATENCY_BUCKETS, seconds)
        counts = self._counts
        with self._lock:
            counts[kind] += 1
            if served:
                counts["bytes"] += served
            counts[memo] += 1
            self._buckets[index] += 1
            self._seconds += seconds

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def latency(self) -> tuple[list[int], float]:
        """Counts per bucket (the last is above every bound) and the sum of seconds."""
        with self._lock:
            return list(self._buckets), self._seconds


class WorkerCollector(Collector):
    """Prometheus families from a worker's counters and its devices' states."""

    def __init__(
        self,
        counters: Counters,
        states: Callable[[], Mapping[str, int]],
        rollouts: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.counters = counters
        self.states = states
        self.rollouts = rollouts

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        counts = self.counters.snapshot()
        statuses = CounterMetricFamily(
            f"{PREFIX}_statuses", "Device statuses by outcome.", labels=["outcome"]
        )
        statuses.add_metric(["answered"], sum(counts.get(c, 0) for c in COMMANDS))
        for outcome in OUTCOMES:
            statuses.add_metric([outcome], counts.get(outcome, 0))
        yield statuses
        commands = CounterMetricFamily(
            f"{PREFIX}_commands", "Commands sent, by type.", labels=["type"]
        )
        for command in COMMANDS:
            commands.add_metric([command], counts.get(command, 0))
        yield commands
        yield CounterMetricFamily(
            f"{PREFIX}_bytes_served",
            "Firmware bytes sent in Write commands.",
            counts.get("bytes", 0),
        )
        yield CounterMetricFamily(
            f"{PREFIX}_source_errors",
            "Statuses answered Wait because the firmware source failed.",
            counts.get("source_unavailable", 0),
        )
        unverified = CounterMetricFamily(
            f"{PREFIX}_unverified",
            "Statuses answered Wait because the trust policy refused the firmware.",
            labels=["reason"],
        )
        for reason in REASONS:
            unverified.add_metric([reason], counts.get(f"unverified_{reason}", 0))
        yield unverified
        memo = CounterMetricFamily(
            f"{PREFIX}_reply_memo",
            "Answered statuses by whether the reply memo already had their reply.",
            labels=["result"],
        )
        memo.add_metric(["hit"], counts.get("memo_hit", 0))
        memo.add_metric(["miss"], counts.get("memo_miss", 0))
        yield memo
        yield CounterMetricFamily(
            f"{PREFIX}_events",
            "Publish events and registry notifications.",
            counts.get("events", 0),
        )
        buckets, total = self.counters.latency()
        cumulative, running = [], 0
        for bound, n in zip((*LATENCY_BUCKETS, float("inf")), buckets, strict=True):
            running += n
            cumulative.append((_bound(bound), running))
        yield HistogramMetricFamily(
            f"{PREFIX}_handle_seconds",
            "Time to answer one device status.",
            buckets=cumulative,
            sum_value=total,
        )
        devices = GaugeMetricFamily(
            f"{PREFIX}_devices", "Devices per delivery state.", labels=["state"]
        )
        found = self.states()
        for state in DELIVERY_STATES:
            devices.add_metric([state.value], found.get(state.value, 0))
        yield devices
        rollout = GaugeMetricFamily(
            f"{PREFIX}_rollout_state",
            "1 for the state of each application's current staged rollout.",
            labels=["application", "state"],
        )
        for application, current in sorted((self.rollouts() if self.rollouts else {}).items()):
            for option in RolloutState:
                rollout.add_metric([application, option.value], int(option.value == current))
        yield rollout


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(value)


def registry_for(
    counters: Counters,
    states: Callable[[], Mapping[str, int]],
    rollouts: Callable[[], Mapping[str, str]] | None = None,
) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(counters, states, rollouts))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in Prometheus' text format (``CONTENT_TYPE``)."""
    return generate_latest(registry)
