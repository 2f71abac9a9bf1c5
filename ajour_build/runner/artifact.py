"""Checking what a build left behind and keeping it."""

from __future__ import annotations

import shutil
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ajour_build.core.errors import BuildError
from ajour_build.core.files import sha256_file

MAX_ARTIFACT_BYTES = 256 * 1024 * 1024


class ArtifactFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    size: int
    sha256: str


class Artifact(ArtifactFile):
    """The firmware image (``path`` relative to the project) and same-stem extras (.elf…)."""

    path: str
    extras: tuple[ArtifactFile, ...] = ()


def _inside(path: Path, root: Path, what: str, tail: list[str]) -> Path:
    real = path.resolve()
    if not real.is_relative_to(root.resolve()):
        via = " through a symlink" if path.is_symlink() or real != path.absolute() else ""
        raise BuildError(
            f"the {what} {str(path.name)!r} points outside the workspace{via} (to {real});"
            " refusing to read it",
            tail,
        )
    return real


def collect(
    workdir: Path, workspace: Path, artifact_path: str, dest: Path, tail: list[str]
) -> Artifact:
    """Verify the artifact (inside the workspace, a non-empty regular file) and copy it."""
    candidate = workdir / artifact_path
    if not candidate.exists() and not candidate.is_symlink():
        raise BuildError(
            f"the builder exited 0 but left no artifact at {artifact_path!r}"
            " (AJOUR_ARTIFACT_PATH); check the build's output path or artifact.path",
            tail,
        )
    real = _inside(candidate, workspace, "artifact", tail)
    if not real.is_file():
        raise BuildError(f"the artifact {artifact_path!r} is not a regular file", tail)
    size = real.stat().st_size
    if size == 0:
        raise BuildError(f"the artifact {artifact_path!r} is empty", tail)
    if size > MAX_ARTIFACT_BYTES:
        raise BuildError(f"the artifact is {size} bytes, over the {MAX_ARTIFACT_BYTES} limit", tail)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(real, dest / candidate.name)
    extras = []
    for sibling in sorted(candidate.parent.glob(f"{candidate.stem}.*")):
        if sibling.name == candidate.name or not sibling.is_file():
            continue
        sib_real = sibling.resolve()
        if not sib_real.is_relative_to(workspace.resolve()):
            continue  # never follow an extra outside the workspace; it is simply not kept
        shutil.copyfile(sib_real, dest / sibling.name)
        extras.append(
            ArtifactFile(
                name=sibling.name, size=sib_real.stat().st_size, sha256=sha256_file(sib_real)
            )
        )
    return Artifact(
        name=candidate.name,
        path=artifact_path,
        size=size,
        sha256=sha256_file(dest / candidate.name),
        extras=tuple(extras),
    )


def verify(directory: Path, artifact: Artifact) -> bool:
    """True when the stored files still match their recorded sha256."""
    for item in (artifact, *artifact.extras):
        path = directory / item.name
        if not path.is_file() or sha256_file(path) != item.sha256:
            return False
    return True
