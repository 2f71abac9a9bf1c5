"""The ``ajour-delivery`` commands around serving: targets, simulate and status, and the
credential commands of :mod:`delivery.credentials_cli` (:mod:`delivery.cli` adds them all to
its group)."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from ajour_build.core.casing import camel_keys
from ajour_build.core.fleet import load_fleet
from ajour_build.core.spec.fields import redact_uri
from ajour_build.core.wire import STATUS_TOKEN_ENV, read_reports
from delivery.credentials_cli import broker_config, hash_password
from delivery.errors import DeliveryError
from delivery.options import FLEET, mqtt_tls_options, mqtt_tls_settings


@click.command(epilog="\b\nExample:\n  ajour-delivery targets --fleet examples/fleet\n")
@FLEET
def targets(fleet_paths: tuple[Path, ...]) -> None:
    """Print each device's firmware source, as delivery resolves it (JSON lines)."""
    fleet = load_fleet(list(fleet_paths))
    for (app, name), _device in sorted(fleet.devices.items()):
        firmware = fleet.effective_firmware(app, name)
        source: dict[str, Any] | None = None
        if firmware is not None:
            source = firmware.model_dump(mode="json", by_alias=True, exclude_none=True)
        click.echo(json.dumps({"application": app, "device": name, "firmware": source}))


@click.command(
    epilog="\b\nExamples:\n  ajour-delivery simulate --http http://127.0.0.1:8081 --app blinky"
    " --devices 20\n  ajour-delivery simulate --mqtt mqtt://127.0.0.1:1883 --app blinky"
    " --fleet examples/fleet\n"
)
@click.option("--http", "http_url", help="Worker URL, e.g. http://127.0.0.1:8081.")
@click.option(
    "--mqtt",
    "mqtt_urls",
    multiple=True,
    help="Broker URL, e.g. mqtt://127.0.0.1:1883 (mqtts: TLS); repeat it for the nodes of"
    " several brokers: devices are spread over them and fail over to the next.",
)
@mqtt_tls_options
@click.option(
    "--mqtt-connection",
    type=click.Choice(["gateway", "device"]),
    default="gateway",
    show_default=True,
    help="MQTT: one gateway connection with the URL's credentials, or one per device as"
    " <device>@<app> with its password (the users and ACL of broker-config).",
)
@click.option("--app", "application", required=True, help="The devices' application.")
@click.option("--devices", default=1, show_default=True, help="How many devices (--prefix).")
@click.option("--prefix", default="dev", show_default=True, help="Devices are <prefix>0..N-1.")
@click.option(
    "--fleet",
    "fleet_paths",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Simulate the devices of --app in this fleet (repeatable), with the plain passwords"
    " of their spec.credentials, instead of --prefix.",
)
@click.option(
    "--device",
    "device_names",
    multiple=True,
    metavar="NAME",
    help="Simulate this device (repeatable); with --fleet, one of its devices of --app.",
)
@click.option(
    "--start-version", default="0.0.0", show_default=True, help="Firmware version devices start at."
)
@click.option("--mtu", type=int, default=512, show_default=True, help="Bytes per Write to ask for.")
@click.option(
    "--password", help="Every device's password (basic auth or MQTT login as <device>@<app>)."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds after which devices not in sync give up.",
)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    help="Share of devices that fail after a swap (picked with --seed).",
)
@click.option(
    "--failure",
    type=click.Choice(["revert", "vanish"]),
    default="revert",
    show_default=True,
    help="How they fail: the bootloader reverts, or the device never comes back.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Picks the failing devices.")
@click.option(
    "--keep-polling",
    type=float,
    default=0.0,
    help="Keep polling for this many seconds after starting, like real devices: a synced"
    " device sends its status again after its Sync's poll (HTTP and MQTT).",
)
@click.option(
    "--delta",
    is_flag=True,
    help="Devices advertise delta updates and apply patches to --firmware (docs/delivery.md).",
)
@click.option(
    "--firmware",
    "firmware_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The image the devices run at --start-version (needed by --delta).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (errors too).")
@click.pass_context
def simulate(
    ctx: click.Context,
    http_url: str | None,
    mqtt_urls: tuple[str, ...],
    mqtt_ca: Path | None,
    mqtt_cert: Path | None,
    mqtt_key: Path | None,
    mqtt_connection: str,
    application: str,
    devices: int,
    prefix: str,
    fleet_paths: tuple[Path, ...],
    device_names: tuple[str, ...],
    start_version: str,
    mtu: int,
    password: str | None,
    timeout: float,
    fail_rate: float,
    failure: str,
    seed: int,
    keep_polling: float,
    delta: bool,
    firmware_path: Path | None,
    as_json: bool,
) -> None:
    """Run simulated embedded-update devices until they are in sync.

    Devices are <prefix>0..N-1, the devices of --app in a fleet (--fleet), or those named
    by --device. A device the worker or broker refuses fails at once, with the reason."""
    from delivery.simulator import Failures, simulate_http

    ctx.find_root().meta["ajour.json"] = as_json
    if bool(http_url) == bool(mqtt_urls):
        raise DeliveryError("give exactly one of --http URL or --mqtt URL (repeatable)")
    mqtt_tls = mqtt_tls_settings(next(iter(mqtt_urls), None), mqtt_ca, mqtt_cert, mqtt_key)
    names, secrets = _simulated(application, fleet_paths, device_names, prefix, devices)
    hashed = [n for n, secret in secrets.items() if secret is None]
    if hashed and password is None:
        click.echo(
            f"warning: {len(hashed)} devices have no plain password in the fleet (only hashes"
            f" or none), so they log in without one: {', '.join(hashed[:5])}"
            f"{' …' if len(hashed) > 5 else ''}; give one with --password",
            err=True,
        )
    creds: Any = password if password is not None or not secrets else secrets.get
    firmware = _start_firmware(delta, firmware_path)
    failures = Failures.share(names, fail_rate, failure, seed, firmware, delta)
    if http_url:
        results = simulate_http(
            http_url, application, names, start_version.encode(), mtu, creds,
            failures=failures, keep_polling=keep_polling, timeout=timeout,
        )  # fmt: skip
    else:
        from delivery.mqtt_simulator import simulate_mqtt  # paho-mqtt: the [mqtt] extra

        results = simulate_mqtt(
            mqtt_urls, application, names, start_version.encode(), mtu, tls=mqtt_tls,
            failures=failures, timeout=timeout,
            connection="device" if mqtt_connection == "device" else "gateway", password=creds,
            keep_polling=keep_polling,
        )  # fmt: skip
    versions: dict[str, int] = {}
    for r in results:
        versions[r.final] = versions.get(r.final, 0) + 1
    failed = [r for r in results if not r.synced and r.device not in failures.devices]
    if failures.devices and not as_json:
        click.echo(f"{len(failures.devices)} devices fail after a swap ({failure})")
    if as_json:
        click.echo(
            json.dumps(
                {
                    "devices": [camel_keys(vars(r)) for r in results],
                    "versions": versions,
                    "failed": len(failed),
                },
                indent=2,
            )
        )
    else:
        for version, count in sorted(versions.items()):
            click.echo(f"{count} devices on {version}")
        received = sum(r.bytes_received for r in results)
        patched = sum(r.patch_bytes for r in results)
        click.echo(
            f"received {received} bytes ({patched} of them patch bytes),"
            f" {sum(r.wire_bytes for r in results)} bytes of statuses and commands"
        )
        for r in failed:
            click.echo(f"{r.device}: not synced: {r.error or 'gave up'}", err=True)
    if failed:
        raise DeliveryError(f"{len(failed)} of {len(results)} devices did not sync")


def _simulated(
    app: str, fleet_paths: tuple[Path, ...], named: tuple[str, ...], prefix: str, count: int
) -> tuple[list[str], dict[str, str | None]]:
    """The devices to simulate, and each fleet device's plain password (None: it has none)."""
    from delivery.device_auth import candidates

    if not fleet_paths:
        return (list(dict.fromkeys(named)) or [f"{prefix}{i}" for i in range(count)]), {}
    fleet = load_fleet(list(fleet_paths))
    known = {d.name: d for d in fleet.devices_of(app)}
    if not known:
        apps = sorted({a for a, _ in fleet.devices})
        raise DeliveryError(
            f"the fleet has no devices of application {app!r}; its applications with devices:"
            f" {', '.join(apps) or '(none)'}"
        )
    unknown = [n for n in named if n not in known]
    if unknown:
        raise DeliveryError(
            f"--device {', '.join(unknown)}: not a device of {app!r} in the fleet; its"
            f" devices: {', '.join(sorted(known)[:10])}{' …' if len(known) > 10 else ''}"
        )
    names = list(dict.fromkeys(named)) or list(known)
    secrets: dict[str, str | None] = {}
    for name in names:
        plain = [p.value for p in candidates(known[name].credentials) if p.scheme == "plain"]
        secrets[name] = plain[0] if plain else None
    return names, secrets


def _start_firmware(delta: bool, path: Path | None) -> bytes:
    """The image simulated devices start with (``--firmware``); ``--delta`` needs one."""
    if path is None:
        if delta:
            raise DeliveryError(
                "--delta needs --firmware FILE: the image the devices run at --start-version,"
                " which the patches apply to"
            )
        return b""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DeliveryError(f"--firmware {path}: cannot read it ({exc})") from None


@click.command(
    epilog="\b\nExample:\n  AJOUR_DELIVERY_STATUS_TOKEN=… ajour-delivery status --app blinky\n"
)
@click.option("--url", default="http://127.0.0.1:8081", show_default=True, help="Worker URL.")
@click.option("--app", "application", help="Only this application.")
@click.option(
    "--token",
    envvar=STATUS_TOKEN_ENV,
    help=f"The worker's status token (or {STATUS_TOKEN_ENV}; default: the first of"
    " delivery.status_tokens in the installation config).",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Installation config (default: AJOUR_CONFIG, ./ajour.yaml).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output (errors too).")
@click.pass_context
def status(
    ctx: click.Context,
    url: str,
    application: str | None,
    token: str | None,
    config_path: Path | None,
    as_json: bool,
) -> None:
    """Show per-device status: state, current and target version, progress, last seen."""
    ctx.find_root().meta["ajour.json"] = as_json
    if not token:
        from delivery.worker_config import load_settings

        tokens = load_settings(config_path, [], os.environ).delivery.status_tokens
        token = tokens[0].get_secret_value() if tokens else None
    from delivery.status_table import render as render_table

    rows = read_reports(_status_json(url, application, token))
    if not rows and not as_json:
        of = f" of application {application!r}" if application else ""
        click.echo(f"the worker knows no device{of}", err=True)
    if as_json:
        click.echo(json.dumps([r.as_json() for r in rows], indent=2))
        return
    if rows:
        click.echo(render_table(rows, time.time()))


def _status_json(url: str, application: str | None, token: str | None) -> Any:
    """``GET /v1/status[/<app>]`` of the worker at ``url`` as JSON, or a DeliveryError."""
    shown = redact_uri(url)
    path = "/v1/status" + (f"/{quote(application, safe='')}" if application else "")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url.rstrip("/") + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            hint = (
                "the token was refused; check it against the worker's"
                if token
                else "the worker asks for its status token; pass --token, set"
                f" {STATUS_TOKEN_ENV} or"
            )
            raise DeliveryError(
                f"{shown} answered HTTP {exc.code}: {hint} delivery.status_tokens"
            ) from None
        if exc.code == 404 and application:
            raise DeliveryError(f"{shown} knows no device of application {application!r}") from None
        raise DeliveryError(f"cannot read status from {shown}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot read status from {shown}: {reason}") from None
    except ValueError:
        raise DeliveryError(f"{shown} did not answer JSON; is it a delivery worker?") from None


COMMANDS = (targets, simulate, broker_config, status, hash_password)
