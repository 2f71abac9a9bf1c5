"""The console's audit page (``/audit``): the audit log, newest first, filtered by action,
application and time. Like ``GET /api/v1/audit`` it needs a signed-in token even where
reads are public: it names tokens (by hash) and client addresses."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import Request, Response

from ajour_build.console import views
from ajour_build.service.audit import ACTIONS
from ajour_build.service.state import service_of

PAGE = 200
SINCE = {"": None, "1h": 1, "24h": 24, "7d": 24 * 7, "30d": 24 * 30}  # hours


def page(request: Request) -> Response:
    params = request.query_params
    action, app, since = params.get("action", ""), params.get("app", ""), params.get("since", "")
    if action and action not in ACTIONS:
        text = f"{action!r} is not an audited action; choose one of {', '.join(ACTIONS)}"
        return views.message(request, 400, "Cannot filter the audit log", text, [("/audit", "All")])
    if since not in SINCE or len(app) > 63:
        text = f"since is one of {', '.join(k for k in SINCE if k)} (or empty); app is a name"
        return views.message(request, 400, "Cannot filter the audit log", text, [("/audit", "All")])
    hours = SINCE[since]
    start = datetime.now(UTC) - timedelta(hours=hours) if hours else None
    entries = service_of(request).audit.find(start, action or None, app or None, PAGE)
    return views.render(
        request,
        "audit.html",
        section="audit",
        entries=entries,
        actions=ACTIONS,
        periods=[k for k in SINCE if k],
        action=action,
        app=app,
        since=since,
        filtered=bool(action or app or since),
        page_size=PAGE,
    )
