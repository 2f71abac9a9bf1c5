"""The console's pages: what each one reads from the service and delivery, and renders.

Each function answers one GET; :mod:`ajour_build.console.routes` puts it behind the read
gate and turns the service's errors into pages. Live regions are listed as ``fragments``.
"""

from __future__ import annotations

from fastapi import Request, Response

from ajour_build.console import devices, staged, views
from ajour_build.console.builds import PAGE, BadFilter, Filters, events
from ajour_build.core.wire import DeviceReport
from ajour_build.lifecycle import STATES
from ajour_build.service.records import Query
from ajour_build.service.state import Service, service_of

LOG_LINES = 5000


def _svc(request: Request) -> Service:
    return service_of(request)


def _delivery(request: Request, application: str | None = None) -> devices.Delivery:
    cache: devices.StatusCache = request.app.state.delivery_status
    config = _svc(request).config
    return cache.get(config.service.delivery_url, application, devices.status_token(config))


def _staged(request: Request, application: str | None = None) -> staged.Staged:
    """The worker's rollouts: every application's current one, or all of ``application``'s."""
    cache: staged.RolloutCache = request.app.state.delivery_rollouts
    config = _svc(request).config
    token = devices.status_token(config)
    url = config.service.delivery_url
    return cache.get(url, application, token, history=application is not None)


def overview(request: Request) -> Response:
    svc = _svc(request)
    fleet = svc.scheduler.fleet.current()
    delivery = _delivery(request)
    return views.render(
        request,
        "overview.html",
        fragments=("summary", "events"),
        section="overview",
        applications=len(fleet.applications),
        fleet_devices=len(fleet.devices),
        fleet_error=svc.scheduler.fleet.error or "",
        delivery=delivery,
        device_counts=delivery.counts(),
        counts=svc.records.counts(),
        events=events(svc.records.find(Query(limit=20))),
    )


def builds(request: Request) -> Response:
    svc = _svc(request)
    try:
        filters = Filters.parse(request.query_params)
    except BadFilter as exc:
        links = [("/builds", "All builds")]
        return views.message(request, 400, "Cannot filter builds", str(exc), links)
    found = svc.records.find(filters.query(limit=PAGE + 1))
    return views.render(
        request,
        "builds.html",
        fragments=("table",),
        section="builds",
        filters=filters,
        builds=found[:PAGE],
        more=len(found) > PAGE,
        page_size=PAGE,
        applications=sorted(svc.scheduler.fleet.current().applications),
        states=STATES,
    )


def build_detail(request: Request, build_id: str) -> Response:
    svc = _svc(request)
    build = svc.records.get(build_id) if len(build_id) <= 64 else None
    if build is None:
        text = f"There is no build {build_id!r}; it may have been mistyped or never existed."
        return views.message(request, 404, "No such build", text, [("/builds", "All builds")])
    lines: list[tuple[int, str]] = []
    if request.query_params.get("fragment") is None:
        lines = svc.records.logs(build.id, 0, LOG_LINES)
    return views.render(
        request,
        "build.html",
        fragments=("summary",),
        section="builds",
        build=build,
        lines=[line for _, line in lines],
        next_seq=lines[-1][0] if lines else 0,
    )


def _no_device(request: Request, app: str, device: str, known_app: bool) -> Response:
    links = [("/devices", "All devices")]
    if known_app:
        links.insert(0, (f"/devices/{views.segment(app)}", f"Devices of {app}"))
    text = f"There is no device {device!r} in application {app!r}."
    return views.message(request, 404, "No such device", text, links)


def _no_app(request: Request, app: str, where: str) -> Response:
    text = f"There is no application {app!r} in the fleet."
    return views.message(request, 404, "No such application", text, [(where, "Back")])


DEVICE_PAGE = 200  # devices per page of one application
OVERVIEW_ROWS = 50  # devices per application on /devices (the rest: its own pages)
GROUP_ROWS = 50  # devices per group (updating, not yet, on it) on a rollout's page


def device_list(request: Request, app: str | None = None) -> Response:
    svc = _svc(request)
    fleet = svc.scheduler.fleet.current()
    delivery = _delivery(request, app)
    rows = devices.merge(fleet, delivery, app)
    if app is not None and app not in fleet.applications and not rows:
        return _no_app(request, app, "/devices")
    grouped: dict[str, list[DeviceReport]] = {
        name: [] for name in fleet.applications if app in (None, name)
    }
    grouped.update(devices.by_application(rows))
    raw_page = request.query_params.get("page", "1")
    if not raw_page.isdigit() or not 1 <= int(raw_page) <= 100_000:
        text = f"page={raw_page!r} is not a page number; pages start at 1"
        return views.message(request, 400, "Cannot show that page", text, [("/devices", "Devices")])
    page = int(raw_page)
    # one application: pages of DEVICE_PAGE; all of them: the first OVERVIEW_ROWS of each
    size = DEVICE_PAGE if app is not None else OVERVIEW_ROWS
    start = (page - 1) * size if app is not None else 0
    totals = {name: len(found) for name, found in grouped.items()}
    shown = {name: found[start : start + size] for name, found in sorted(grouped.items())}
    return views.render(
        request,
        "devices.html",
        fragments=("devices",),
        section="devices",
        application=app,
        delivery=delivery,
        grouped=shown,
        totals=totals,
        page=page,
        first=start + 1,
    )


def device_detail(request: Request, app: str, device: str) -> Response:
    svc = _svc(request)
    fleet = svc.scheduler.fleet.current()
    delivery = _delivery(request, app)
    rows = [r for r in devices.merge(fleet, delivery, app) if r.device == device]
    spec = fleet.devices.get((app, device))
    if spec is None and not rows:
        return _no_device(request, app, device, app in fleet.applications)
    own = spec is not None and spec.firmware is not None
    found = svc.records.find(Query(application=app, device=device if own else None, limit=10))
    return views.render(
        request,
        "device.html",
        fragments=("status",),
        section="devices",
        application=app,
        device=device,
        in_fleet=spec is not None,
        delivery=delivery,
        row=rows[0] if rows else DeviceReport(application=app, device=device),
        firmware=fleet.effective_firmware(app, device) if spec is not None else None,
        own_firmware=own,
        builds=found,
    )


def _built_versions(svc: Service, app: str) -> list[str]:
    done = svc.records.find(Query(application=app, states=("succeeded",), limit=20))
    return [b.version for b in done if b.version]


def rollouts(request: Request) -> Response:
    svc = _svc(request)
    fleet = svc.scheduler.fleet.current()
    delivery = _delivery(request)
    waves = _staged(request)
    grouped = devices.by_application(devices.merge(fleet, delivery))
    names = sorted(set(fleet.applications) | set(grouped) | {r.application for r in waves.reports})
    plans = [
        devices.rollout(name, grouped.get(name, []), _built_versions(svc, name), None)
        for name in names
    ]
    return views.render(
        request,
        "rollouts.html",
        fragments=("rollouts",),
        section="rollouts",
        delivery=delivery,
        rollouts=plans,
        staged=waves,
        current={r.application: r for r in waves.reports},
        totals={r.application: staged.Totals.of(r) for r in waves.reports},
    )


def rollout(request: Request, app: str) -> Response:
    svc = _svc(request)
    fleet = svc.scheduler.fleet.current()
    version = request.query_params.get("version", "").strip()
    if len(version) > 128:
        text = "a firmware version has at most 128 characters"
        back = f"/rollouts/{views.segment(app)}"
        return views.message(request, 400, "Cannot show that version", text, [(back, "Back")])
    delivery = _delivery(request, app)
    rows = devices.merge(fleet, delivery, app)
    waves = _staged(request, app)
    if app not in fleet.applications and not rows and not waves.reports:
        return _no_app(request, app, "/rollouts")
    current = waves.reports[0] if waves.reports else None
    # with a staged rollout, the version it takes devices to (not whichever version delivery
    # served last: during a rollout that flips between the old and the new every poll)
    default = "" if current is None else current.target_version
    plan = devices.rollout(app, rows, _built_versions(svc, app), version or default or None)
    if current is None and waves.reachable:  # none for this app: has the worker the API?
        waves = staged.Staged(served=_staged(request).served)
    return views.render(
        request,
        "rollout.html",
        fragments=("staged", "rollout"),
        section="rollouts",
        application=app,
        delivery=delivery,
        rollout=plan,
        group_rows=GROUP_ROWS,
        chosen=version,
        default_version=default,
        can_build=app in fleet.applications,
        staged=waves,
        current=current,
        totals=staged.Totals.of(current) if current else None,
        allowed=staged.allowed(current) if current else frozenset(),
        history=waves.reports[1:],
        failures=staged.FAILURES,
    )
