"""The build service's counts since it started, bumped as things happen (``metrics.py``
exposes them): builds per state, durations, trigger latency, publishes, webhook outcomes."""

from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from ajour_build.lifecycle import ACTIVE, STATES, Build, BuildState

PREFIX = "ajour_build"
BUILD_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0)
LATENCY_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0)
PUBLISH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
WEBHOOK_OUTCOMES = (
    "accepted",
    "bad_signature",
    "ignored",
    "deduplicated",
    "invalid",
    "busy",
    "error",
)
PROVIDERS = ("github", "gitlab", "gitea")
ENDED = tuple(s for s in STATES if s not in ACTIVE)


@dataclass
class Histogram:
    """Counts per bucket (the last is above every bound) and their sum, per label."""

    bounds: tuple[float, ...]
    counts: dict[str, list[int]] = field(default_factory=dict)
    sums: dict[str, float] = field(default_factory=dict)

    def observe(self, label: str, value: float) -> None:
        row = self.counts.setdefault(label, [0] * (len(self.bounds) + 1))
        row[bisect.bisect_left(self.bounds, value)] += 1
        self.sums[label] = self.sums.get(label, 0.0) + value

    def family(self, name: str, doc: str, label: str | None) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=[label] if label else None)
        for key, row in sorted(self.counts.items()):
            cumulative, running = [], 0
            for bound, n in zip((*self.bounds, float("inf")), row, strict=True):
                running += n
                cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
            family.add_metric([key] if label else [], cumulative, self.sums[key])
        return family


@dataclass
class BuildMetrics:
    """What happened since the service started, safe to bump from any thread."""

    states: Counter[str] = field(default_factory=Counter)
    webhooks: Counter[tuple[str, str]] = field(default_factory=Counter)
    durations: Histogram = field(default_factory=lambda: Histogram(BUILD_BUCKETS))
    latency: Histogram = field(default_factory=lambda: Histogram(LATENCY_BUCKETS))
    publishes: Histogram = field(default_factory=lambda: Histogram(PUBLISH_BUCKETS))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def build_changed(self, build: Build) -> None:
        """A :class:`Records` listener: a build was created or changed state."""
        with self._lock:
            self.states[build.state] += 1
            if build.state == BuildState.RUNNING and build.started is not None:
                wait = (build.started - build.created).total_seconds()
                self.latency.observe("", max(0.0, wait))
            elif build.state in ENDED and build.started and build.finished:
                took = (build.finished - build.started).total_seconds()
                self.durations.observe(build.state, max(0.0, took))

    def published(self, seconds: float, ok: bool) -> None:
        with self._lock:
            self.publishes.observe("succeeded" if ok else "failed", seconds)

    def webhook(self, provider: str, outcome: str) -> None:
        with self._lock:
            self.webhooks[(provider, outcome)] += 1

    def families(self) -> list[CounterMetricFamily | HistogramMetricFamily]:
        with self._lock:
            total = CounterMetricFamily(
                f"{PREFIX}_builds", "Builds created and builds that reached each state.",
                labels=["state"],
            )  # fmt: skip
            for state in STATES:
                total.add_metric([state.value], self.states.get(state, 0))
            hooks = CounterMetricFamily(
                f"{PREFIX}_webhooks", "Push webhooks by provider and outcome.",
                labels=["provider", "outcome"],
            )  # fmt: skip
            for provider in PROVIDERS:
                for outcome in WEBHOOK_OUTCOMES:
                    hooks.add_metric([provider, outcome], self.webhooks.get((provider, outcome), 0))
            return [
                total,
                hooks,
                self.durations.family(
                    f"{PREFIX}_build_duration_seconds",
                    "Start to end of finished builds, by outcome.",
                    "outcome",
                ),
                self.latency.family(
                    f"{PREFIX}_trigger_latency_seconds", "Trigger to build start.", None
                ),
                self.publishes.family(
                    f"{PREFIX}_publish_duration_seconds",
                    "The publish step of local builds, by outcome.",
                    "outcome",
                ),
            ]
