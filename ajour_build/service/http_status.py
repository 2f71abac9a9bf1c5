"""How the service's errors are answered over HTTP: one table for the API and the console.

The API answers JSON ``{"error", "status"}``; the console a page with ``title``. Both take
the status and headers from here, so an error means the same on either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ajour_build.core.errors import AjourError, NotAllowedError, SpecError
from ajour_build.service.backends.backend import BackendError
from ajour_build.service.records import RecordsError
from ajour_build.service.scheduler import NotFound
from ajour_build.service.webhooks import WebhookError


@dataclass(frozen=True)
class Answer:
    status: int
    title: str
    headers: dict[str, str] = field(default_factory=dict)


def answer_for(exc: AjourError) -> Answer:
    """The status, a short title and the headers for an error of the service's parts."""
    if isinstance(exc, NotFound):
        return Answer(404, "Not found")
    if isinstance(exc, NotAllowedError):
        return Answer(403, "Refused by the allowlist")
    if isinstance(exc, BackendError):
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else {}
        title = "The build queue is full" if exc.status == 429 else "The build backend failed"
        return Answer(exc.status, title, headers)
    if isinstance(exc, WebhookError):
        return Answer(exc.status, "Webhook refused")
    if isinstance(exc, RecordsError):
        return Answer(503, "Build records unavailable")
    if isinstance(exc, SpecError):
        return Answer(409, "The fleet specs do not validate")  # the request itself was fine
    return Answer(400, "Cannot do that")
