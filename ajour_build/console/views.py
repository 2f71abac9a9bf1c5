"""Rendering: the jinja2 environment (autoescaping on, strict undefined), pages, fragments.

A page's live regions are ``{% block %}``s of its template. ``?fragment=<block>`` renders
only that block, with the same context, and the console's script swaps it in: one template
is the source of both the page and its updates.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import escape

from ajour_build import __version__
from ajour_build.console.access import here, login_url, viewer

HERE = Path(__file__).parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
POLL_MS = 2000
FLASH_COOKIE = "ajour_flash"
MAX_FLASH = 1000

# every console page: no inline script or style, nothing from other origins, no framing
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
        " connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def short(value: str | None, length: int = 12) -> str:
    if not value:
        return ""
    if value.startswith("sha256:"):
        value = value[len("sha256:") :]
    return value[:length]


def duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return ""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def moment(value: datetime | float | None) -> datetime | None:
    """A datetime in UTC from a datetime or epoch seconds (0 or None: never)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if not math.isfinite(value) or value <= 0:
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def iso(value: datetime | float | None) -> str:
    found = moment(value)
    return found.isoformat(timespec="seconds") if found else ""


def clock(value: datetime | float | None) -> str:
    found = moment(value)
    return found.strftime("%Y-%m-%d %H:%M:%S UTC") if found else ""


def ago(value: datetime | float | None) -> str:
    found = moment(value)
    if found is None:
        return "never"
    seconds = (datetime.now(UTC) - found).total_seconds()
    if seconds < 5:
        return "just now"
    if seconds < 90:
        return f"{int(seconds)} s ago"
    if seconds < 90 * 60:
        return f"{int(seconds // 60)} min ago"
    if seconds < 36 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} days ago"


def segment(value: str) -> str:
    """A path segment: anything but unreserved characters percent-encoded."""
    return quote(value, safe="")


def environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(("html",), default_for_string=True, default=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        short=short, duration=duration, iso=iso, clock=clock, ago=ago, segment=segment
    )
    env.globals.update(version=__version__, poll_ms=POLL_MS)
    # macros as a global: blocks rendered alone (fragments) see them too
    env.globals["ui"] = env.get_template("_macros.html").module
    return env


ENV = environment()


@dataclass(frozen=True)
class Flash:
    """A one-time message after an action: what it did (``ok``) or why it did not (``bad``)."""

    kind: str
    text: str


def flash(response: Response, request: Request, kind: str, text: str) -> None:
    """Show ``text`` once, on the next full page this browser opens (after the redirect).

    Kept in a short-lived cookie (HttpOnly, SameSite=Strict) rather than the URL, so a link
    cannot make the console show a message it never produced.
    """
    value = json.dumps(["ok" if kind == "ok" else "bad", text[:MAX_FLASH]])
    response.set_cookie(
        FLASH_COOKIE,
        base64.urlsafe_b64encode(value.encode()).decode(),
        max_age=60,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def _flash_of(request: Request) -> Flash | None:
    raw = request.cookies.get(FLASH_COOKIE, "")
    if not raw or len(raw) > 4 * MAX_FLASH:
        return None
    try:
        kind, text = json.loads(base64.urlsafe_b64decode(raw.encode()))
    except (ValueError, TypeError, binascii.Error):
        return None
    if kind not in ("ok", "bad") or not isinstance(text, str):
        return None
    return Flash(kind, text[:MAX_FLASH])


def _context(request: Request, context: dict[str, Any]) -> dict[str, Any]:
    here_path = here(request)
    return {
        "viewer": viewer(request),
        "here": here_path,
        "login_href": login_url(here_path if request.method == "GET" else "/"),
        "section": "",
        "flash": None,
        **context,
    }


def render(
    request: Request,
    name: str,
    status: int = 200,
    fragments: Iterable[str] = (),
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    """The page ``name``, or only its block ``?fragment=<name>`` if it is one of ``fragments``."""
    template = ENV.get_template(name)
    values = _context(request, context)
    fragment = request.query_params.get("fragment")
    if fragment is not None:
        if fragment not in fragments or fragment not in template.blocks:
            text = f"<p>No fragment {escape(repr(fragment))} on this page.</p>"
            return _respond(text, 404, headers)
        block = template.blocks[fragment]
        html = "".join(block(template.new_context(values)))
        return _respond(html, status, headers)
    if FLASH_COOKIE not in request.cookies:
        return _respond(template.render(values), status, headers)
    values["flash"] = _flash_of(request)  # shown once: on this full page, not in fragments
    response = _respond(template.render(values), status, headers)
    response.delete_cookie(
        FLASH_COOKIE, path="/", httponly=True, samesite="strict",
        secure=request.url.scheme == "https",
    )  # fmt: skip
    return response


def message(
    request: Request,
    status: int,
    title: str,
    text: str,
    links: Iterable[tuple[str, str]] = (),
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A page that explains: an error, a refusal, or a trigger that had nothing to do."""
    if request.query_params.get("fragment") is not None:
        return _respond(f"<p>{escape(title)}</p>", status, headers)
    return render(
        request,
        "message.html",
        status=status,
        headers=headers,
        title=title,
        text=text,
        links=[*links, ("/", "Overview")],
    )


def _respond(html: str, status: int, headers: dict[str, str] | None) -> HTMLResponse:
    return HTMLResponse(html, status, headers={**HEADERS, **(headers or {})})
