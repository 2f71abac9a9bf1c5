"""``ajour-delivery``: serve firmware to devices, simulate devices, show device status."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from ajour_build.errors import AjourError
from ajour_build.fleet import load_fleet
from delivery import __version__
from delivery.errors import DeliveryError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (AjourError, DeliveryError) as exc:
            if ctx.find_root().meta.get("ajour.debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(1)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="ajour-delivery")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Ajour delivery: serve firmware to devices with the embedded-update protocol."""
    ctx.meta["ajour.debug"] = debug
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


_FLEET = click.option(
    "--fleet",
    "fleet_paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Fleet spec file or directory (repeatable).",
)


@main.command()
@_FLEET
def targets(fleet_paths: tuple[Path, ...]) -> None:
    """Print each device's firmware source, as delivery resolves it (JSON lines)."""
    fleet = load_fleet(list(fleet_paths))
    for (app, name), _device in sorted(fleet.devices.items()):
        firmware = fleet.effective_firmware(app, name)
        source: dict[str, Any] | None = None
        if firmware is not None:
            source = firmware.model_dump(mode="json", by_alias=True, exclude_none=True)
        click.echo(json.dumps({"application": app, "device": name, "firmware": source}))


def _hostport(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise DeliveryError(f"--http expects HOST:PORT, got {value!r}")
    return host, int(port)


@main.command()
@_FLEET
@click.option("--http", "http_addr", help="Serve HTTP on HOST:PORT (for example 127.0.0.1:8081).")
@click.option(
    "--registry",
    default="127.0.0.1:5000/ajour",
    show_default=True,
    help="Registry prefix for container.image, or oci-layout:///dir.",
)
@click.option("--file-dir", type=click.Path(path_type=Path), help="Directory for file firmware.")
@click.option("--store", "store_path", default=":memory:", help="SQLite file for device status.")
@click.option("--ttl", default=30.0, show_default=True, help="Tag resolution cache TTL (s).")
@click.option("--insecure-no-auth", is_flag=True, help="Do not authenticate devices (demos only).")
def serve(
    fleet_paths: tuple[Path, ...],
    http_addr: str | None,
    registry: str,
    file_dir: Path | None,
    store_path: str,
    ttl: float,
    insecure_no_auth: bool,
) -> None:
    """Serve firmware to the fleet's devices until interrupted."""
    from delivery.http import HttpSettings, HttpTransport
    from delivery.store import StatusStore
    from delivery.targets import Targets
    from delivery.worker import Worker

    if not http_addr:
        raise DeliveryError("give a transport: --http HOST:PORT")
    worker = Worker(
        Targets(load_fleet(list(fleet_paths)), registry, file_dir, ttl), StatusStore(store_path)
    )
    host, port = _hostport(http_addr)
    transport = HttpTransport(worker, HttpSettings(host, port, not insecure_no_auth))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    transport.start()
    click.echo(f"serving {len(worker.targets.fleet.devices)} devices on {transport.url}", err=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        transport.stop()


@main.command()
@click.option("--http", "http_url", required=True, help="Worker URL, e.g. http://127.0.0.1:8081.")
@click.option("--app", "application", required=True)
@click.option("--devices", default=1, show_default=True, help="How many devices.")
@click.option("--prefix", default="dev", show_default=True, help="Devices are <prefix>0..N-1.")
@click.option("--start-version", default="0.0.0", show_default=True)
@click.option("--mtu", type=int, default=512, show_default=True)
@click.option("--password", help="Device password (basic auth as <device>@<app>).")
@click.option("--json", "as_json", is_flag=True)
def simulate(
    http_url: str,
    application: str,
    devices: int,
    prefix: str,
    start_version: str,
    mtu: int,
    password: str | None,
    as_json: bool,
) -> None:
    """Run simulated embedded-update devices until they are in sync."""
    from delivery.simulator import simulate_http

    names = [f"{prefix}{i}" for i in range(devices)]
    results = simulate_http(http_url, application, names, start_version.encode(), mtu, password)
    versions: dict[str, int] = {}
    for r in results:
        versions[r.final] = versions.get(r.final, 0) + 1
    failed = [r for r in results if not r.synced]
    if as_json:
        click.echo(
            json.dumps(
                {
                    "devices": [vars(r) for r in results],
                    "versions": versions,
                    "failed": len(failed),
                },
                indent=2,
            )
        )
    else:
        for version, count in sorted(versions.items()):
            click.echo(f"{count} devices on {version}")
        for r in failed:
            click.echo(f"{r.device}: not synced ({r.error or 'gave up'})", err=True)
    if failed:
        raise DeliveryError(f"{len(failed)} of {len(results)} devices did not sync")


@main.command()
@click.option("--url", default="http://127.0.0.1:8081", show_default=True, help="Worker URL.")
@click.option("--app", "application", help="Only this application.")
@click.option("--json", "as_json", is_flag=True)
def status(url: str, application: str | None, as_json: bool) -> None:
    """Show per-device status: current and target version, progress, state, last seen."""
    path = "/v1/status" + (f"/{application}" if application else "")
    try:
        with urllib.request.urlopen(url.rstrip("/") + path, timeout=10) as response:
            rows = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DeliveryError(f"cannot read status from {url}: {exc}") from None
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        progress = f"{r['offset']}/{r['size']}" if r["offset"] is not None else "-"
        click.echo(
            f"{r['application']}/{r['device']}: {r['state']} current={r['current']}"
            f" target={r['target']} progress={progress}"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
