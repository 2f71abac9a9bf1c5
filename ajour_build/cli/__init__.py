"""``ajour-build``: validate fleet specs, render Tekton v1 runs, build firmware locally."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import click
from rich.console import Console

from ajour_build import __version__
from ajour_build.core.errors import EXIT_CODES, AjourError, NotAllowedError, SpecError
from ajour_build.core.logs import FORMATS, LogFormat, configure_logging
from ajour_build.core.version import version_problem


class AjourGroup(click.Group):
    """Turns :class:`AjourError` into ``error: ...`` on stderr, or a JSON object with
    ``error`` on stdout when the command was asked for ``--json``, and its exit code: 1, or 3
    for a port in use (README "Exit codes"; a traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except AjourError as exc:
            root = ctx.find_root()
            if root.meta.get("ajour.debug"):
                raise
            if root.meta.get("ajour.json"):
                click.echo(json.dumps(_error_json(exc), indent=2))
            else:
                click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)


def _error_json(exc: AjourError) -> dict[str, Any]:
    """Every ``--json`` error has ``error``; spec and allowlist errors say more."""
    if isinstance(exc, SpecError):
        head = str(exc).split(":", 1)[0]
        return {"valid": False, "error": head, "problems": [p.as_dict() for p in exc.problems]}
    if isinstance(exc, NotAllowedError):
        return {"valid": False, "error": str(exc), "refused": exc.refusals}
    return {"error": str(exc)}


def checked_version(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """A ``--version`` option's callback: the one version grammar (``core.version``)."""
    problem = version_problem(value) if value is not None else None
    if problem is not None:
        raise click.BadParameter(problem)
    return value


def console(stderr: bool = False) -> Console:
    """Rich output; wide when piped so tables are never truncated. With ``NO_COLOR`` set and
    not empty (https://no-color.org) no ANSI styles at all: rich's own ``no_color`` drops
    colours only and keeps bold and dim, so the colour system is switched off instead."""
    stream = sys.stderr if stderr else sys.stdout
    plain = bool(os.environ.get("NO_COLOR"))
    return Console(
        stderr=stderr,
        highlight=False,
        width=None if stream.isatty() else 200,
        color_system=None if plain else "auto",
        no_color=plain,
    )


def want_json(ctx: click.Context, value: bool) -> None:
    """Errors are printed as JSON when the command was asked for JSON."""
    ctx.find_root().meta["ajour.json"] = value


@click.group(cls=AjourGroup, epilog=EXIT_CODES)
@click.version_option(__version__, prog_name="ajour-build")
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
    """Ajour: turn fleet specs into firmware builds (Tekton v1 or local)."""
    ctx.meta["ajour.debug"] = debug
    configure_logging(debug, log_format)


def _register() -> None:
    from ajour_build.cli import build, builders, publish, serve, spec, step, upkeep

    main.add_command(spec.validate)
    main.add_command(spec.render)
    main.add_command(build.build)
    main.add_command(builders.builders)
    main.add_command(step.step)
    main.add_command(publish.publish)
    main.add_command(publish.inspect)
    main.add_command(serve.serve)
    main.add_command(upkeep.prune)
    main.add_command(upkeep.gc)


_register()
