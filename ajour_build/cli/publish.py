"""``ajour-build publish`` and ``ajour-build inspect``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.table import Table

from ajour_build.cli import checked_version, console, want_json
from ajour_build.core.artifact.format import TITLE
from ajour_build.core.casing import camel_keys
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.publish.destination import inspect as inspect_target
from ajour_build.publish.destination import release
from ajour_build.publish.patches import PATCHES_ENV
from ajour_build.publish.publisher import (
    BuilderInfo,
    FirmwareArtifact,
    Published,
    SourceInfo,
    elf_beside,
)
from ajour_build.publish.signing import signer_from


def _report(published: Published, warning: str | None, as_json: bool) -> None:
    if as_json:
        click.echo(
            json.dumps(
                camel_keys(
                    {
                        **vars(published),
                        "tags": list(published.tags),
                        "signatures": list(published.signatures),
                        "warning": warning,
                    }
                ),
                indent=2,
            )
        )
        return
    out = console()
    out.print(f"published {published.version} to {published.target}")
    out.print(f"  reference: {published.reference}")
    out.print(f"  digest:    {published.digest}")
    if published.tags:
        out.print(f"  tags:      {', '.join(published.tags)}")
    if published.signatures:
        out.print(f"  signed:    {', '.join(published.signatures)}")
    if warning:
        console(stderr=True).print(f"[yellow]warning:[/] {warning}")


@click.command(
    epilog="\b\nExamples:\n"
    "  ajour-build publish build/blinky.bin --to oci://127.0.0.1:5000/fw/blinky:latest"
    " --version 1.4.0\n"
    "  ajour-build publish build/blinky.bin --to oci-layout:///var/lib/ajour/fw:latest"
    " --version 1.4.0 --notify http://127.0.0.1:8081/v1/events\n"
)
@click.argument("artifact", type=click.Path(path_type=Path))
@click.option(
    "--to",
    "to",
    required=True,
    help="oci://host/repo:tag, oci-layout:///dir:tag, dir:///dir/<name>, hawkbit://…",
)
@click.option(
    "--version",
    "version",
    required=True,
    callback=checked_version,
    help="The firmware version (immutable; an OCI tag).",
)
@click.option("--source-uri", default="", help="Git URI of the source (metadata).")
@click.option("--source-commit", default="", help="Commit the firmware was built from.")
@click.option("--source-project", default="", help="Project folder in the repository.")
@click.option("--builder-image", default="", help="Builder image (metadata).")
@click.option("--builder-arg", "builder_args", multiple=True, help="Builder argument (repeat).")
@click.option("--notify", "notify_url", help="Tell delivery: http(s):// URL or mqtt://host/topic.")
@click.option(
    "--elf",
    type=click.Path(path_type=Path, dir_okay=False),
    help="The build's ELF, a second layer for symbolicating crashes (oci:// and oci-layout://"
    " only; default: <name>.elf next to the firmware, if there is one).",
)
@click.option("--insecure", is_flag=True, help="Allow plain http to a non-loopback registry.")
@click.option(
    "--patches",
    type=click.IntRange(0, 16),
    help="OCI targets: delta patches from this many earlier versions (default 3, or"
    " AJOUR_PUBLISH_PATCHES; 0: none).",
)
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="PEM private key (ECDSA P-256 or ed25519) to sign the manifest and its provenance"
    " with (oci:// and oci-layout://; default: AJOUR_SIGN_KEY_FILE).",
)
@click.option(
    "--builder-id",
    help="The provenance's runDetails.builder.id (default: AJOUR_SIGN_BUILDER_ID, else Ajour's).",
)
@click.option("--json", "as_json", is_flag=True, help="Print where it was published as JSON.")
@click.pass_context
def publish(
    ctx: click.Context,
    artifact: Path,
    to: str,
    version: str,
    source_uri: str,
    source_commit: str,
    source_project: str,
    builder_image: str,
    builder_args: tuple[str, ...],
    notify_url: str | None,
    elf: Path | None,
    insecure: bool,
    patches: int | None,
    sign_key: Path | None,
    builder_id: str | None,
    as_json: bool,
) -> None:
    """Publish a firmware file (format v1 in OCI; Drogue's layout in a directory)."""
    want_json(ctx, as_json)
    firmware = FirmwareArtifact(
        artifact,
        version,
        SourceInfo(source_uri, source_commit, source_project),
        BuilderInfo(builder_image, builder_args),
        elf=elf or elf_beside(artifact),
    )
    env = dict(os.environ)
    if patches is not None:
        env[PATCHES_ENV] = str(patches)
    signer = signer_from(env, sign_key, builder_id)
    out = release(firmware, to, env, insecure, notify_url, signer=signer)
    _report(out.published, out.warning, as_json)


@click.command(
    epilog="\b\nExamples:\n  ajour-build inspect oci://127.0.0.1:5000/fw/blinky:latest\n"
    "  ajour-build inspect --json oci-layout:///var/lib/ajour/fw:latest\n"
)
@click.argument("target")
@click.option("--insecure", is_flag=True, help="Allow plain http to a non-loopback registry.")
@click.option("--json", "as_json", is_flag=True, help="Print the firmware's metadata as JSON.")
@click.pass_context
def inspect(ctx: click.Context, target: str, insecure: bool, as_json: bool) -> None:
    """Show what is published: the true version behind a tag, size, checksum, source."""
    want_json(ctx, as_json)
    try:
        info = inspect_target(target, os.environ, insecure)
    except ArtifactError as exc:
        raise PublishError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(camel_keys(info.model_dump(mode="json", by_alias=True)), indent=2))
        return
    table = Table("field", "value", show_header=False)
    rows = [
        ("target", target),
        ("version", info.version),
        ("size", str(info.size)),
        ("checksum", info.checksum),
        ("digest", info.manifest_digest or "-"),
        ("layout", info.layout),
        ("source", info.source.uri or "-"),
        ("commit", info.source.commit or "-"),
        ("builder", info.builder.image or "-"),
        ("created", info.created or "-"),
        ("elf", f"{info.elf.annotations.get(TITLE, '')} ({info.elf.digest})" if info.elf else "-"),
    ]
    for key, value in rows:
        table.add_row(key, value)
    console().print(table)
