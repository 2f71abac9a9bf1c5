"""Bearer tokens for the API and the console (a cookie carries the token in a browser).

Every configured token is compared, in constant time, whatever the first result: how
long a check takes says nothing about which token, or how much of it, matched.
"""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer

COOKIE = "ajour_token"
bearer = HTTPBearer(auto_error=False, description="A token from service.tokens in ajour.yaml.")


def token_of(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.cookies.get(COOKIE, "")


def valid(given: str, tokens: tuple[str, ...]) -> bool:
    ok = False
    for token in tokens:
        ok |= hmac.compare_digest(given.encode(), token.encode())
    return ok and bool(given)


def check(request: Request, tokens: tuple[str, ...], open_access: bool) -> None:
    """Raise 401 unless the request carries a valid token (or access is open)."""
    if open_access:
        return
    given = token_of(request)
    if not given:
        raise HTTPException(
            401,
            "this endpoint needs a bearer token: send 'Authorization: Bearer <token>' with a"
            " token from service.tokens",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not valid(given, tokens):
        raise HTTPException(
            401, "the bearer token is not valid", headers={"WWW-Authenticate": "Bearer"}
        )


def same_site(request: Request) -> bool:
    """False for a request a browser sent on behalf of another site (CSRF).

    Browsers say where a request comes from (``Sec-Fetch-Site``, ``Origin``); scripts and
    curl send neither, and are judged by their token alone.
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin == f"{request.url.scheme}://{request.headers.get('host', '')}"


def check_write(request: Request, tokens: tuple[str, ...], open_access: bool) -> None:
    """A write (trigger, cancel): same-site if from a browser, and with a valid token."""
    if not same_site(request):
        raise HTTPException(
            403,
            "cross-site request refused: triggers and cancels must come from this service's"
            " own pages or from a client with a token",
        )
    check(request, tokens, open_access)
