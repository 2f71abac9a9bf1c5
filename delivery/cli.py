"""``ajour-delivery``: the delivery worker's command line."""

from __future__ import annotations

import json
import logging
import sys
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
            if ctx.meta.get("ajour.debug"):
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


@main.command()
@click.option(
    "--fleet",
    "fleet_paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Fleet spec file or directory (repeatable).",
)
def targets(fleet_paths: tuple[Path, ...]) -> None:
    """Print each device's firmware source, as delivery resolves it (JSON lines)."""
    fleet = load_fleet(list(fleet_paths))
    for (app, name), _device in sorted(fleet.devices.items()):
        firmware = fleet.effective_firmware(app, name)
        source: dict[str, Any] | None = None
        if firmware is not None:
            source = firmware.model_dump(mode="json", by_alias=True, exclude_none=True)
        click.echo(json.dumps({"application": app, "device": name, "firmware": source}))


if __name__ == "__main__":  # pragma: no cover
    main()
