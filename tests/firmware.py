"""Helpers for tests that build real firmware: git repos, podman images, QEMU."""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from pathlib import Path

import git

from ajour_build.builders import podman
from ajour_build.builders.catalog import load_catalog
from ajour_build.builders.image import build_image, ensure_base_image
from tests.conftest import REPO

BASE_IMAGE = "localhost/debian:bookworm"
QEMU = [
    "qemu-system-arm",
    "-M",
    "mps2-an385",
    "-nographic",
    "-monitor",
    "none",
    "-serial",
    "none",
    "-semihosting-config",
    "enable=on,target=native",
]


def make_repo(path: Path, source: Path, branch: str = "main") -> git.Repo:
    """A real git repository holding a copy of ``source``, with one commit."""
    shutil.copytree(source, path, ignore=shutil.ignore_patterns("build", "target"))
    repo = git.Repo.init(path, initial_branch=branch)
    repo.git.add(A=True)
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Ajour Test")
        cfg.set_value("user", "email", "test@ajour.invalid")
    repo.index.commit("firmware")
    return repo


def run_qemu(elf: Path, timeout: float = 30) -> tuple[int, str]:
    """Run a firmware ELF on QEMU's mps2-an385; semihosting output is on stderr."""
    result = subprocess.run(
        [*QEMU, "-kernel", str(elf)], capture_output=True, text=True, timeout=timeout, check=False
    )
    return result.returncode, result.stdout + result.stderr


def ensure_builder_images(state_dir: Path, names: tuple[str, ...]) -> dict[str, str]:
    """Build the base image and the named builder images unless podman already has them."""
    env = podman.environment(state_dir)
    ensure_base_image(BASE_IMAGE, "bookworm", "http://deb.debian.org/debian", env, state_dir)
    refs = {}
    for builder in load_catalog(REPO / "builder-images"):
        if builder.name in names:
            if not podman.image_exists(builder.spec.ref, env):
                build_image(builder, BASE_IMAGE, env)
            refs[builder.name] = builder.spec.ref
    return refs


def fake_builder(catalog: Path, name: str, script: str) -> Path:
    """A builder for host-mode tests whose entrypoint is ``script`` (POSIX sh)."""
    folder = catalog / name
    folder.mkdir(parents=True)
    (folder / "builder.yaml").write_text(
        f"name: {name}\ndescription: test builder\nversion: '1'\nimage: localhost/test/{name}\n"
    )
    (folder / "Containerfile").write_text("FROM scratch\n")
    entry = folder / "ajour-builder"
    entry.write_text("#!/bin/sh\nset -eu\n" + textwrap.dedent(script))
    entry.chmod(0o755)
    return folder


def built_app(
    name: str, uri: str, builder: str = "fake", rev: str = "main", artifact: str = "out/fw.bin"
) -> str:
    """An Application whose firmware the builder ``builder`` builds from ``uri`` at ``rev``
    (the image ``<name>:latest``), as one YAML document."""
    return (
        f"kind: Application\nmetadata: {{name: {name}}}\nspec:\n  firmware:\n    container:\n"
        f"      image: {name}:latest\n      build:\n        image: {builder}\n"
        f'        source: {{git: {{uri: "{uri}", rev: {rev}}}}}\n'
        f"        artifact: {{path: {artifact}}}\n"
    )
