"""``ajour-build serve``: the build service (webhooks, REST API, console)."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from ajour_build.cli.builders import catalog_option
from ajour_build.cli.spec import _config
from ajour_build.core.errors import AjourError
from ajour_build.core.listener import listen
from ajour_build.settings import LocalSettings


@click.command(
    epilog="\b\nExamples:\n"
    "  ajour-build serve --fleet examples/fleet --config examples/fleet/ajour.yaml\n"
    "  ajour-build serve --fleet fleet/ --host 0.0.0.0 --port 8080 --no-console\n"
)
@click.option(
    "--fleet",
    "fleet_paths",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="Fleet spec files or directories (repeatable); read again when they change.",
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Installation config (default: AJOUR_CONFIG, the fleet's ajour.yaml, ./ajour.yaml).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8080,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on (0: any free port).",
)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Default: AJOUR_STATE_DIR.")
@catalog_option
@click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="Serve the API without tokens (only on a trusted, loopback-only machine).",
)
@click.option("--no-console", is_flag=True, help="Serve only the API and webhooks.")
def serve(
    fleet_paths: tuple[Path, ...],
    config_path: Path | None,
    host: str,
    port: int,
    state_dir: Path | None,
    builders_dir: Path | None,
    insecure_no_auth: bool,
    no_console: bool,
) -> None:
    """Serve push webhooks, the build API and the console; build with the configured backend."""
    import uvicorn

    from ajour_build.server import assemble, create_app

    settings = LocalSettings()
    if state_dir is not None:
        settings = settings.model_copy(update={"state_dir": state_dir})
    config = _config(config_path, list(fleet_paths), required=True)
    assert config is not None
    if insecure_no_auth and host not in ("127.0.0.1", "::1", "localhost"):
        raise AjourError(f"--insecure-no-auth is only allowed on loopback, not on {host!r}")
    with listen(host, port, "ajour-build serve", "--port (or --host)") as sock:
        logging.getLogger("ajour_build").setLevel(  # before assemble: it logs the keys it read
            min(logging.INFO, logging.getLogger().getEffectiveLevel())
        )
        service = assemble(list(fleet_paths), config, settings, builders_dir, insecure_no_auth)
        app = create_app(service, console=not no_console)
        click.echo(
            f"ajour build service on http://{host}:{port} (backend {config.service.backend},"
            f" records {service.records.engine.url.render_as_string(hide_password=True)})",
            err=True,
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )
        server.run(sockets=[sock])
    if not server.started:
        raise AjourError("the build service did not start; the log above says why")
