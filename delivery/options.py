"""Click options and option parsers that several ``ajour-delivery`` commands share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from delivery.errors import DeliveryError

FLEET = click.option(
    "--fleet",
    "fleet_paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Fleet spec file or directory (repeatable).",
)


def mqtt_tls_options(command: Any) -> Any:
    """``--mqtt-ca``, ``--mqtt-cert``, ``--mqtt-key``: TLS to an ``mqtts://`` broker."""
    pem = click.Path(path_type=Path, dir_okay=False)
    for name, what in reversed(
        [
            ("--mqtt-ca", "CA file (PEM) for the mqtts:// broker's certificate [system CAs]."),
            ("--mqtt-cert", "Client certificate (PEM) for the mqtts:// broker."),
            ("--mqtt-key", "Key (PEM) of --mqtt-cert, if it is not in that file."),
        ]
    ):
        command = click.option(name, type=pem, help=what)(command)
    return command


def mqtt_tls_settings(url: str | None, ca: Path | None, cert: Path | None, key: Path | None) -> Any:
    """The MqttTls for the options, or None if none was given."""
    if ca is None and cert is None and key is None:
        return None
    if not url:
        raise DeliveryError("--mqtt-ca/--mqtt-cert/--mqtt-key need --mqtt mqtts://host:port")
    from delivery.mqtt import MqttTls

    return MqttTls(ca, cert, key)


def coap_settings(addr: str | None, insecure_no_auth: bool, max_observers: int) -> Any:
    """The CoapSettings for ``serve --coap HOST:PORT`` (None without it); the transport and
    aiocoap are not imported here."""
    if not addr:
        return None
    from ajour_build.core.hosts import is_loopback
    from delivery.coap import CoapSettings

    host, _, port = addr.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [::1]:5683
    if not host or not port.isdigit() or int(port) > 65535:
        raise DeliveryError(f"--coap expects HOST:PORT (or [IPv6]:PORT), got {addr!r}")
    if insecure_no_auth and not is_loopback(host):
        raise DeliveryError(
            f"--insecure-no-auth turns authentication off, so it is only allowed on a loopback"
            f" --coap address (127.0.0.1, ::1), not on {host!r}"
        )
    return CoapSettings(host, int(port), not insecure_no_auth, max_observers=max_observers)
