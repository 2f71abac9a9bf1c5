"""The build service: one FastAPI app with webhooks, the REST API and health.

``create_app(service)`` wires routes to a :class:`Service`; ``assemble(...)`` builds a
Service from the installation config (backend, records, fleet). Errors become JSON
``{"error", "status"}`` with the right status code and, for 429, ``Retry-After``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager, nullcontext
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ajour_build import __version__
from ajour_build.builders.catalog import load_catalog
from ajour_build.config import InstallationConfig
from ajour_build.core.errors import AjourError
from ajour_build.core.spec.fields import parse_duration
from ajour_build.runner.engines import engine_for
from ajour_build.runner.host import HostEngine
from ajour_build.runner.job import LogLimits
from ajour_build.runner.state_dir import StateDir
from ajour_build.service import api, audit_api, metrics, webhooks
from ajour_build.service.backends.backend import Backend
from ajour_build.service.backends.local import LocalBackend
from ajour_build.service.http_status import answer_for
from ajour_build.service.keys import ServiceKeys, read_keys
from ajour_build.service.records import Records, RecordsError
from ajour_build.service.scheduler import FleetSource, Scheduler
from ajour_build.service.schemas import Health
from ajour_build.service.state import Service, service_of
from ajour_build.settings import LocalSettings

log = logging.getLogger(__name__)


def _error(exc: AjourError) -> JSONResponse:
    answer = answer_for(exc)
    return JSONResponse(
        {"error": str(exc), "status": answer.status}, answer.status, headers=answer.headers
    )


def create_app(service: Service) -> FastAPI:
    """The service's own app: webhooks, REST API and health (``ajour_build.server`` adds the
    console)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.stop()

    app = FastAPI(
        title="Ajour build service",
        version=__version__,
        description="Push webhooks, builds and their logs, and triggers (allowlist enforced).",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.metrics = metrics.registry_for(service)

    @app.exception_handler(AjourError)
    async def ajour_error(request: Request, exc: AjourError) -> JSONResponse:
        if answer_for(exc).status >= 500:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        return _error(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse(
            {"error": str(exc.detail), "status": exc.status_code},
            exc.status_code,
            headers=dict(exc.headers or {}),
        )

    @app.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        tags=["health"],
        responses={503: {"model": Health, "description": "Not ready; see checks."}},
    )
    def readyz(request: Request) -> JSONResponse:
        """Ready for work: records reachable, backend started, fleet specs valid."""
        svc = service_of(request)
        checks: dict[str, str] = {}
        try:
            svc.records.counts()
            checks["records"] = "ok"
        except RecordsError as exc:
            checks["records"] = str(exc)
        checks["backend"] = f"{svc.backend.name}: {svc.backend.health()}"
        if not svc.started:
            checks["backend"] = "not started"
        svc.scheduler.fleet.current()  # read the specs again if they changed
        checks["fleet"] = svc.scheduler.fleet.error or "ok"
        ok = all(v == "ok" or v.endswith(": ok") for v in checks.values())
        body = Health(status="ok" if ok else "unavailable", checks=checks)
        return JSONResponse(body.model_dump(), 200 if ok else 503)

    app.include_router(webhooks.router)
    app.include_router(api.router)
    app.include_router(api.drogue)
    app.include_router(audit_api.router)
    app.include_router(metrics.router)
    return app


def make_backend(
    config: InstallationConfig,
    records: Records,
    settings: LocalSettings,
    builders_dir: Path,
    keys: ServiceKeys | None = None,
) -> Backend:
    svc = config.service
    if svc.backend == "tekton":
        from ajour_build.service.backends.tekton import TektonBackend

        return TektonBackend(records, config)
    catalog = load_catalog(builders_dir) if builders_dir.is_dir() else []
    context = (
        nullcontext(HostEngine()) if svc.runner == "host" else engine_for("container", settings)
    )
    return LocalBackend(
        records,
        StateDir(settings.state_dir),
        catalog=catalog,
        queue_size=svc.queue_size,
        workers=svc.workers,
        publish=svc.publish,
        insecure=config.registry.insecure,
        notify_url=svc.notify,
        engine_context=context,
        clone_timeout=parse_duration(svc.clone_timeout),
        publish_timeout=parse_duration(svc.publish_timeout),
        stuck_after=parse_duration(svc.stuck_after),
        log_limits=LogLimits(svc.log_line_bytes, svc.log_bytes),
        log_lines=svc.log_lines,
        image_key=keys.image.content if keys and keys.image else None,
        signer=keys.signer if keys else None,
    )


def assemble(
    fleet_paths: list[Path],
    config: InstallationConfig,
    settings: LocalSettings,
    builders_dir: Path | None = None,
    open_access: bool = False,
    env: Mapping[str, str] | None = None,
) -> Service:
    """A Service from the installation config; nothing is started yet. Its keys are read
    now (``env``, default the process's, then the config: service/keys.py)."""
    svc = config.service
    if not open_access and not svc.token_values():
        raise AjourError(
            "the build service needs API tokens: set service.tokens in ajour.yaml (or"
            " AJOUR_SERVICE__TOKENS='[\"…\"]'), or pass --insecure-no-auth on a trusted machine"
        )
    keys = read_keys(config, os.environ if env is None else env)  # a bad key: fail now
    records = (
        Records(svc.database)
        if svc.database
        else Records.sqlite(settings.state_dir / "service" / "builds.db")
    )
    backend = make_backend(config, records, settings, builders_dir or settings.builders_dir, keys)
    scheduler = Scheduler(FleetSource(fleet_paths), config, records, backend)
    service = Service(
        config, records, backend, scheduler, open_access=open_access, state_dir=settings.state_dir
    )
    if isinstance(backend, LocalBackend):
        backend.on_publish = service.metrics.published
    return service
