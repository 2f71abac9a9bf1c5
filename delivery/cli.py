"""``ajour-delivery``: serve firmware to devices, simulate devices, show device status."""

from __future__ import annotations

import json
from typing import Any

import click

from ajour_build.core.errors import EXIT_CODES, AjourError
from ajour_build.core.logs import FORMATS, LogFormat, configure_logging
from delivery import __version__
from delivery.errors import DeliveryError
from delivery.gateway_command import gateway
from delivery.rollout_cli import rollout
from delivery.serve_command import serve
from delivery.tools import COMMANDS


class _Group(click.Group):
    """Errors exit 1 with ``error: …`` on stderr, or ``{"error": …}`` on stdout under
    ``--json``; a port in use exits 3 (README "Exit codes")."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (AjourError, DeliveryError) as exc:
            root = ctx.find_root()
            if root.meta.get("ajour.debug"):
                raise
            if root.meta.get("ajour.json"):
                click.echo(json.dumps({"error": str(exc)}, indent=2))
            else:
                click.echo(f"error: {exc}", err=True)
            ctx.exit(getattr(exc, "exit_code", 1))


@click.group(cls=_Group, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="ajour-delivery")
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.option(
    "--log-format",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Log lines as text or as one JSON object each.",
)
@click.pass_context
def main(ctx: click.Context, debug: bool, log_format: LogFormat) -> None:
    """Ajour delivery: serve firmware to devices with the embedded-update protocol."""
    ctx.meta["ajour.debug"] = debug
    configure_logging(debug, log_format)


for _command in (*COMMANDS, rollout):
    main.add_command(_command)
main.add_command(gateway)
main.add_command(serve)


if __name__ == "__main__":  # pragma: no cover
    main()
