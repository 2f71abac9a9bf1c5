"""Who may see and do what in the console: the same tokens as the REST API.

A browser carries its token in the ``ajour_token`` cookie (HttpOnly, SameSite=Strict, Secure
over https), set by the login form; scripts may send ``Authorization: Bearer``. Reads are
open only when ``service.public_read`` (or ``--insecure-no-auth``) says so; triggers and
cancels always need a valid token unless access is open. SameSite=Strict keeps other sites'
forms from posting with the cookie.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from fastapi import Request, Response

from ajour_build.service import auth
from ajour_build.service.state import Service, service_of

MAX_FORM_BYTES = 16 * 1024


@dataclass(frozen=True)
class Viewer:
    """What the request may do, for pages to show the right buttons."""

    signed_in: bool
    open_access: bool
    open_reads: bool

    @property
    def can_read(self) -> bool:
        return self.open_reads or self.signed_in

    @property
    def can_write(self) -> bool:
        return self.open_access or self.signed_in


def viewer(request: Request) -> Viewer:
    service: Service = service_of(request)
    signed_in = auth.valid(auth.token_of(request), service.tokens)
    return Viewer(signed_in, service.open_access, service.open_reads)


def safe_next(value: str | None) -> str:
    """A local path to go back to after login; anything else (other sites too) is ``/``."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return "/"
    if len(value) > 2048 or any(ord(c) < 0x20 or c in "\\\x7f" for c in value):
        return "/"
    return value


def here(request: Request) -> str:
    """This request's path and query, for a ``next`` parameter."""
    query = request.url.query
    return request.url.path + ("?" + query if query else "")


def login_url(next_path: str) -> str:
    return "/login?" + urlencode({"next": safe_next(next_path)})


def set_token(response: Response, request: Request, token: str) -> None:
    response.set_cookie(
        auth.COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )


def clear_token(response: Response, request: Request) -> None:
    response.delete_cookie(
        auth.COOKIE,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


class FormRefused(ValueError):
    status = 400
    title = "Form refused"


class FormTooLarge(FormRefused):
    status = 413
    title = "Form too large"


class CrossSite(FormRefused):
    status = 403
    title = "Cross-site form refused"


async def form(request: Request) -> dict[str, str]:
    """The urlencoded form of a POST (first value of each field), at most 16 KiB.

    Only from this service's own pages: a form another site makes a browser post is
    refused (CSRF), even where access is open.
    """
    if not auth.same_site(request):
        raise CrossSite("this form was posted from another site; use the console's own pages")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise FormTooLarge(f"a console form is at most {MAX_FORM_BYTES} bytes")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormTooLarge(f"a console form is at most {MAX_FORM_BYTES} bytes")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("", "application/x-www-form-urlencoded"):
        return {}
    fields: dict[str, str] = {}
    for key, value in parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True):
        fields.setdefault(key, value)
    return fields
