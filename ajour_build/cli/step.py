"""``ajour-build step …``: the one implementation Tekton's Tasks call (env in, results out)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ajour_build.core.errors import AjourError
from ajour_build.publish.publisher import BuilderInfo, FirmwareArtifact, SourceInfo, elf_beside
from ajour_build.steps.clone import clear, clone


def _env(name: str, required: bool = True) -> str:
    value = os.environ.get(name, "")
    if required and not value:
        raise AjourError(f"{name} is not set; the Tekton Task passes it through env:")
    return value


def _result(env_name: str, value: str) -> None:
    """Write a Tekton result (exact bytes, no newline) where the Task's env points."""
    target = os.environ.get(env_name)
    if target:
        path = Path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(value, encoding="utf-8")


@click.group(
    epilog="\b\nExample (what the ajour-git-clone Task runs):\n"
    "  AJOUR_GIT_URL=https://git.example.com/fw.git AJOUR_CHECKOUT_DIR=/workspace/source"
    " ajour-build step clone\n"
)
def step() -> None:
    """Pipeline steps, configured by environment variables (see pipelines/README.md)."""


@step.command("clone")
def clone_step() -> None:
    """Clone AJOUR_GIT_URL at AJOUR_GIT_REVISION into AJOUR_CHECKOUT_DIR."""
    dest = Path(_env("AJOUR_CHECKOUT_DIR"))
    clear(dest)
    checkout = clone(
        _env("AJOUR_GIT_URL"),
        _env("AJOUR_GIT_REVISION", required=False) or "HEAD",
        dest,
        _env("AJOUR_FIRMWARE_VERSION", required=False),
    )
    _result("AJOUR_RESULT_COMMIT", checkout.commit)
    _result("AJOUR_RESULT_URL", checkout.url)
    _result("AJOUR_RESULT_VERSION", checkout.version)
    click.echo(f"checked out {checkout.commit} ({checkout.revision}) into {dest}")


@step.command("result")
def result_step() -> None:
    """Write AJOUR_RESULT_VALUE to the result file AJOUR_RESULT_PATH (no shell needed)."""
    path = Path(_env("AJOUR_RESULT_PATH"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_env("AJOUR_RESULT_VALUE"), encoding="utf-8")


@step.command("publish", context_settings={"ignore_unknown_options": True})
@click.argument("builder_args", nargs=-1, type=click.UNPROCESSED)
def publish_step(builder_args: tuple[str, ...]) -> None:
    """Publish AJOUR_ARTIFACT_FILE to AJOUR_PUBLISH_TO (builder args follow --, as metadata)."""
    from ajour_build.publish.destination import release

    if os.environ.get("AJOUR_DOCKERCONFIG_BOUND") == "false" or not os.environ.get("DOCKER_CONFIG"):
        os.environ.pop("DOCKER_CONFIG", None)  # an unbound workspace gives an empty path
    signing = os.environ.get("AJOUR_SIGNING_DIR", "")
    if os.environ.get("AJOUR_SIGNING_BOUND") == "true" and signing:  # the signing workspace
        os.environ["AJOUR_SIGN_KEY_FILE"] = str(Path(signing) / "sign.key")
        password = Path(signing) / "password"
        if password.is_file():
            os.environ["AJOUR_SIGN_KEY_PASSWORD"] = password.read_text(encoding="utf-8").strip()
    firmware = Path(_env("AJOUR_ARTIFACT_FILE"))
    artifact = FirmwareArtifact(
        firmware,
        _env("AJOUR_FIRMWARE_VERSION"),
        SourceInfo(
            _env("AJOUR_SOURCE_URL", required=False),
            _env("AJOUR_SOURCE_COMMIT", required=False),
            _env("AJOUR_SOURCE_PROJECT", required=False),
        ),
        BuilderInfo(_env("AJOUR_BUILDER_IMAGE", required=False), builder_args),
        elf=elf_beside(firmware),
    )
    out = release(
        artifact, _env("AJOUR_PUBLISH_TO"), os.environ, False, os.environ.get("AJOUR_NOTIFY_URL")
    )
    published, warning = out.published, out.warning
    _result(
        "AJOUR_RESULT_IMAGE_URL",
        published.reference.split("@", 1)[0] + ":" + published.version
        if published.target.startswith("oci://")
        else published.target,
    )
    _result("AJOUR_RESULT_IMAGE_DIGEST", published.digest)
    click.echo(f"published {published.version} to {published.target} ({published.digest})")
    if warning:
        click.echo(f"warning: {warning}", err=True)
