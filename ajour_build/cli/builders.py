"""``ajour-build builders list|build|base``: the builder image catalog."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import click
from click.core import ParameterSource
from rich.table import Table

from ajour_build.builders import podman
from ajour_build.builders.catalog import catalog_problem, load_catalog
from ajour_build.builders.image import build_image, ensure_base_image
from ajour_build.cli import console
from ajour_build.core.casing import camel_keys
from ajour_build.core.errors import AjourError
from ajour_build.settings import LocalSettings, shipped_builders

ENV = "AJOUR_BUILDERS_DIR"


def checked_catalog(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """A ``--builders`` option's callback: a directory that is not a builder catalog is a
    usage error (exit 2) naming where it came from, the option or ``AJOUR_BUILDERS_DIR``."""
    problem = catalog_problem(value) if value is not None else None
    if problem is None:
        return value
    from_env = ctx.get_parameter_source(param.name or "") is ParameterSource.ENVIRONMENT
    where, fix = (
        (f"environment variable {ENV}", f"set {ENV} to a builder catalog, or unset it")
        if from_env
        else ("'--builders'", "pass a builder catalog, or leave --builders out")
    )
    raise click.BadParameter(
        f"{problem}. Fix: {fix} to use the catalog shipped with Ajour ({shipped_builders()}).",
        ctx,
        param,
        param_hint=where,
    )


catalog_option = click.option(
    "--builders",
    "builders_dir",
    type=click.Path(path_type=Path),
    envvar=ENV,
    callback=checked_catalog,
    help=f"Builder catalog directory (default: {ENV}, else the one shipped with Ajour);"
    " it must hold <name>/builder.yaml folders.",
)


@click.group(
    epilog="\b\nExamples:\n  ajour-build builders list\n  ajour-build builders base\n"
    "  ajour-build builders build arm-gcc --if-missing\n"
)
def builders() -> None:
    """The builder catalog: builder-images/, shipped with Ajour (AJOUR_BUILDERS_DIR or
    --builders for another)."""


@builders.command("list")
@catalog_option
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_(builders_dir: Path | None, as_json: bool) -> None:
    """Show the builders: name, image, toolchains, targets."""
    root = builders_dir or LocalSettings().builders_dir
    catalog = load_catalog(root)
    if as_json:
        out = [camel_keys(b.spec.model_dump(mode="json")) | {"ref": b.spec.ref} for b in catalog]
        click.echo(json.dumps(out, indent=2))
        return
    table = Table("name", "image", "toolchains", "targets", "network")
    for b in catalog:
        tools = ", ".join(f"{t.name} {t.version}" for t in b.spec.toolchains)
        table.add_row(
            b.name, b.spec.ref, tools, ", ".join(b.spec.targets), "yes" if b.spec.network else "no"
        )
    console().print(table)


@builders.command("build")
@click.argument("name")
@catalog_option
@click.option("--base-image", help="Base image (default: AJOUR_BASE_IMAGE).")
@click.option("--if-missing", is_flag=True, help="Do nothing if the image already exists.")
def build(name: str, builders_dir: Path | None, base_image: str | None, if_missing: bool) -> None:
    """Build a builder image locally with podman."""
    settings = LocalSettings()
    catalog = load_catalog(builders_dir or settings.builders_dir)
    builder = next((b for b in catalog if b.name == name), None)
    if builder is None:
        names = ", ".join(b.name for b in catalog) or "none"
        raise AjourError(f"no builder named {name!r} in the catalog (have: {names})")
    env = podman.environment(settings.state_dir)
    if if_missing and podman.image_exists(builder.spec.ref, env):
        console().print(f"{builder.spec.ref} exists")
        return
    base = base_image or settings.base_image
    if not podman.image_exists(base, env):
        raise AjourError(
            f"base image {base!r} is missing; create it with `ajour-build builders base`"
            " (debootstrap + podman import) or pass --base-image"
        )
    started = time.perf_counter()
    out = console()
    with out.status(f"building {builder.spec.ref} from {base}"):
        image_id = build_image(builder, base, env)
    out.print(f"built {builder.spec.ref} ({image_id[:19]}) in {time.perf_counter() - started:.1f}s")


@builders.command("base")
@click.option("--image", help="Image name (default: AJOUR_BASE_IMAGE).")
@click.option("--suite", default="bookworm", show_default=True, help="Debian suite to bootstrap.")
@click.option(
    "--mirror",
    default="http://deb.debian.org/debian",
    show_default=True,
    help="Debian mirror debootstrap fetches from.",
)
def base(image: str | None, suite: str, mirror: str) -> None:
    """Create the base image with debootstrap + podman import (needs root)."""
    settings = LocalSettings()
    env = podman.environment(settings.state_dir)
    target = image or settings.base_image
    started = time.perf_counter()
    with console().status(f"debootstrap {suite} into {target}"):
        try:
            created = ensure_base_image(target, suite, mirror, env, settings.state_dir)
        except subprocess.CalledProcessError as exc:
            raise AjourError(f"creating the base image failed: {exc}") from None
    word = "created" if created else "exists"
    console().print(f"{target} {word} ({time.perf_counter() - started:.1f}s)")
