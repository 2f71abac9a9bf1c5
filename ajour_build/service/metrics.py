"""The build service's metrics: ``GET /metrics`` in Prometheus' text format.

Counts that the records cannot give cheaply (end states since start, durations, webhook
outcomes) are bumped in memory as they happen (:class:`BuildMetrics`); what the records
know (builds queued and running, when a build last started) is read when someone scrapes
(:class:`ServiceCollector`). Each app has its own registry: no global state.

Families (all prefixed ``ajour_build_``):

* ``builds_total{state}``: builds created (``queued``) and builds that reached each state;
* ``builds_active{state}``: builds ``queued`` and ``running`` now (from the records);
* ``queue_depth``: builds waiting for a worker (from the records);
* ``last_build_start_timestamp_seconds``: when the newest build started (0: never);
* ``build_duration_seconds{outcome}``: start to end of finished builds (histogram);
* ``trigger_latency_seconds``: trigger to build start (histogram);
* ``publish_duration_seconds{outcome}``: the publish step of local builds (histogram);
* ``webhooks_total{provider,outcome}``: ``accepted``, ``bad_signature``, ``ignored``,
  ``deduplicated``, ``invalid``, ``busy``, ``error``.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from ajour_build.lifecycle import ACTIVE, BuildState
from ajour_build.service import auth
from ajour_build.service.counters import PREFIX, BuildMetrics
from ajour_build.service.records import Records, RecordsError, builds
from ajour_build.service.state import Service, service_of


class ServiceCollector(Collector):
    """The service's families: the in-memory counts and what the records say now."""

    def __init__(self, metrics: BuildMetrics, records: Records) -> None:
        self.metrics = metrics
        self.records = records

    def collect(
        self,
    ) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        counts = self.records.counts()
        active = GaugeMetricFamily(
            f"{PREFIX}_builds_active", "Builds queued and running now.", labels=["state"]
        )
        for state in ACTIVE:
            active.add_metric([state.value], counts.get(state, 0))
        yield active
        yield GaugeMetricFamily(
            f"{PREFIX}_queue_depth",
            "Builds waiting for a worker.",
            counts.get(BuildState.QUEUED, 0),
        )
        try:
            with self.records.engine.connect() as conn:
                newest = conn.execute(select(func.max(builds.c.started))).scalar()
        except SQLAlchemyError as exc:
            raise RecordsError(f"build records unavailable for the metrics: {exc}") from None
        stamp = 0.0 if newest is None else _epoch(newest)
        yield GaugeMetricFamily(
            f"{PREFIX}_last_build_start_timestamp_seconds",
            "When the newest build started (Unix time; 0: none in the records).",
            stamp,
        )
        yield from self.metrics.families()


def _epoch(value: object) -> float:
    assert isinstance(value, datetime)
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


def registry_for(service: Service) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceCollector(service.metrics, service.records))
    return registry


router = APIRouter(tags=["health"])


def _reader(request: Request) -> Service:
    service = service_of(request)
    auth.check(request, service.tokens, service.open_reads)
    return service


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
)
async def metrics(request: Request, _: Annotated[Service, Depends(_reader)]) -> Response:
    """Prometheus metrics (text format); needs an API token unless reads are public."""
    registry: CollectorRegistry = request.app.state.metrics
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
