"""The settings ``ajour-delivery serve`` makes of its options: HTTP and poll policies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delivery.errors import DeliveryError


def poll_policies(synced: int, wait: int, app_polls: tuple[str, ...]) -> tuple[Any, dict[str, Any]]:
    """The default Policy and per-application ones from ``APP=SYNCED[:WAIT]`` options."""
    from delivery.decision import Policy

    default = Policy(poll_synced=synced, poll_wait=wait)
    per_app: dict[str, Any] = {}
    for item in app_polls:
        app, sep, value = item.partition("=")
        synced_s, _, wait_s = value.partition(":")
        if not sep or not app or not synced_s.isdigit() or (wait_s and not wait_s.isdigit()):
            raise DeliveryError(f"--app-poll expects APP=SYNCED[:WAIT] in seconds, got {item!r}")
        per_app[app] = Policy(poll_synced=int(synced_s), poll_wait=int(wait_s or wait))
    return default, per_app


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:8081
    if not host or not port.isdigit():
        raise DeliveryError(f"--http expects HOST:PORT (or [IPv6]:PORT), got {value!r}")
    return host, int(port)


def http_settings(
    http_addr: str,
    insecure_no_auth: bool,
    status_token: str | None,
    events_token: str | None,
    tls_files: tuple[Path | None, Path | None, Path | None],
    limits: tuple[int, int, float],
) -> Any:
    """HttpSettings from serve's options, or a DeliveryError naming what is missing."""
    from ajour_build.core.hosts import is_loopback
    from delivery.http import (
        EVENTS_TOKEN_ENV,
        STATUS_TOKEN_ENV,
        HttpSettings,
        Limits,
        TlsSettings,
    )

    host, port = _hostport(http_addr)
    if insecure_no_auth and not is_loopback(host):
        raise DeliveryError(
            f"--insecure-no-auth turns authentication off, so it is only allowed on a loopback"
            f" --http address (127.0.0.1, ::1), not on {host!r}"
        )
    if not insecure_no_auth and not (status_token and events_token):
        missing = [
            f"--{what}-token (or {env})"
            for what, env, token in (
                ("status", STATUS_TOKEN_ENV, status_token),
                ("events", EVENTS_TOKEN_ENV, events_token),
            )
            if not token
        ]
        raise DeliveryError(
            f"serve --http needs {' and '.join(missing)}: GET /v1/status and POST /v1/events"
            " take bearer tokens; --insecure-no-auth turns authentication off on loopback"
        )
    cert, key, client_ca = tls_files
    if (cert is None) != (key is None):
        raise DeliveryError("HTTPS needs both --tls-cert and --tls-key (PEM files)")
    if client_ca is not None and cert is None:
        raise DeliveryError("--tls-client-ca needs HTTPS: give --tls-cert and --tls-key too")
    tls = TlsSettings(cert, key, client_ca) if cert is not None and key is not None else None
    connections, threads, drain = limits
    try:
        bounds = Limits(max_connections=connections, threads=threads, drain_timeout=drain)
    except ValueError as exc:
        raise DeliveryError(str(exc)) from None
    return HttpSettings(
        host,
        port,
        not insecure_no_auth,
        events_token=events_token or "",
        status_token=status_token or "",
        tls=tls,
        limits=bounds,
    )
