"""``ajour-build prune`` (build records by the retention policy) and ``ajour-build gc``
(unreachable blobs of an OCI layout): docs/operations.md, "Retain"."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ajour_build.cli import console, want_json
from ajour_build.cli.spec import _config
from ajour_build.core.artifact.layout_gc import collect
from ajour_build.core.artifact.reference import parse_layout
from ajour_build.core.errors import AjourError, ArtifactError
from ajour_build.core.spec.fields import parse_duration
from ajour_build.settings import LocalSettings


@click.command(
    epilog="\b\nExamples:\n"
    "  ajour-build prune --config ajour.yaml --dry-run\n"
    "  ajour-build prune --config ajour.yaml --state-dir /var/lib/ajour --json\n"
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Installation config with service.retention and service.database (default:"
    " AJOUR_CONFIG, ./ajour.yaml).",
)
@click.option("--state-dir", type=click.Path(path_type=Path), help="Default: AJOUR_STATE_DIR.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def prune(
    ctx: click.Context, config_path: Path | None, state_dir: Path | None, dry_run: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Prune finished builds (records, log lines, build directories) by service.retention."""
    want_json(ctx, as_json)
    try:  # the records are the service's: SQLAlchemy comes with the [service] extra
        from ajour_build.service.records import Records
        from ajour_build.service.retention import prune as prune_records
    except ImportError as exc:
        raise AjourError(
            f"ajour-build prune needs the build service's packages ({exc.name} is missing):"
            " pip install 'ajour[service]'"
        ) from None
    settings = LocalSettings()
    if state_dir is not None:
        settings = settings.model_copy(update={"state_dir": state_dir})
    config = _config(config_path, [], required=True)
    assert config is not None
    svc = config.service
    if svc.database:
        records = Records(svc.database)
    else:
        path = settings.state_dir / "service" / "builds.db"
        if not path.is_file():
            raise AjourError(
                f"no build records at {path}: give --state-dir of the service, or set"
                " service.database in the config"
            )
        records = Records.sqlite(path)
    try:
        done = prune_records(records, svc.retention, settings.state_dir / "builds", dry_run)
    finally:
        records.close()
    if as_json:
        click.echo(json.dumps(done.as_dict(), indent=2))
        return
    verb = "would prune" if dry_run else "pruned"
    console().print(
        f"{verb} {len(done.builds)} build(s), {done.log_lines} log line(s),"
        f" {len(done.directories)} build directorie(s); {done.kept} build(s) kept"
    )


@click.command(
    epilog="\b\nExamples:\n"
    "  ajour-build gc oci-layout:///var/lib/ajour/fw --dry-run\n"
    "  ajour-build gc oci-layout:///var/lib/ajour/fw --min-age 10m --json\n"
)
@click.argument("layout")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@click.option(
    "--min-age",
    default="1h",
    show_default=True,
    help="Keep unreachable blobs younger than this (a duration: 10m, 1h; 0s: none).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
def gc(ctx: click.Context, layout: str, dry_run: bool, min_age: str, as_json: bool) -> None:
    """Remove the blobs of an OCI layout that no tag reaches (holding the publish lock)."""
    want_json(ctx, as_json)
    try:
        age = 0 if min_age in ("0", "0s") else parse_duration(min_age)
    except ValueError as exc:
        raise AjourError(f"--min-age: {exc}") from None
    ref = parse_layout(layout)
    try:
        done = collect(ref.path, dry_run, float(age))
    except TimeoutError as exc:
        raise ArtifactError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(done.as_dict(), indent=2))
        return
    verb = "would remove" if dry_run else "removed"
    console().print(
        f"{verb} {len(done.removed)} blob(s), {done.freed} bytes; {done.reachable} reachable,"
        f" {done.young} unreachable but younger than {min_age}"
    )
