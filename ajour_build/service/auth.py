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
