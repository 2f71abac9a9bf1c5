"""The builder catalog: ``builder-images/<name>/{builder.yaml, Containerfile, ajour-builder}``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from ajour_build.core.errors import CatalogError, Problem, SpecError
from ajour_build.core.spec.document import DocumentError, read_documents
from ajour_build.core.spec.fields import DnsLabel, ImageRef, NonEmptyText, Text
from ajour_build.core.spec.firmware import Strict
from ajour_build.core.spec.problems import known_fields, problems_from_validation

ENTRYPOINT = "ajour-builder"
EXPECTED = "a directory of builder folders, each with a builder.yaml (like Ajour's builder-images/)"
CONTAINERFILE = "Containerfile"


class Toolchain(Strict):
    name: NonEmptyText
    version: Text


class BuilderSpec(Strict):
    """``builder.yaml``: what a builder image contains and how to run it."""

    name: DnsLabel
    description: Text
    version: NonEmptyText
    image: ImageRef
    toolchains: tuple[Toolchain, ...] = ()
    targets: tuple[Text, ...] = ()
    default_args: tuple[Text, ...] = ()
    network: bool = False

    @property
    def ref(self) -> str:
        return f"{self.image}:{self.version}"


@dataclass(frozen=True)
class Builder:
    spec: BuilderSpec
    directory: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def entrypoint(self) -> Path:
        return self.directory / ENTRYPOINT

    @property
    def containerfile(self) -> Path:
        return self.directory / CONTAINERFILE

    def matches(self, image: str) -> bool:
        """True when a spec's ``build.image`` names this builder (by name, ref or repo)."""
        return image in (self.spec.name, self.spec.ref, self.spec.image)


def _load_one(directory: Path) -> tuple[Builder | None, list[Problem]]:
    path = directory / "builder.yaml"
    try:
        docs = read_documents(path)
    except DocumentError as exc:
        return None, [exc.problem]
    if len(docs) != 1:
        return None, [Problem("builder.yaml must hold exactly one document", file=str(path))]
    try:
        spec = BuilderSpec.model_validate(docs[0].data)
    except ValidationError as exc:
        return None, problems_from_validation(exc, docs[0], (), known_fields(BuilderSpec))
    problems: list[Problem] = []
    if spec.name != directory.name:
        problems.append(
            Problem(
                f"name {spec.name!r} differs from the folder name {directory.name!r}",
                file=str(path),
                path="name",
            )
        )
    for needed in (CONTAINERFILE, ENTRYPOINT):
        if not (directory / needed).is_file():
            problems.append(Problem(f"{needed} is missing", file=str(directory / needed)))
    entry = directory / ENTRYPOINT
    if entry.is_file() and not os.access(entry, os.X_OK):
        problems.append(Problem("the entrypoint is not executable (chmod +x)", file=str(entry)))
    return Builder(spec, directory), problems


def catalog_problem(root: Path) -> str | None:
    """Why ``root`` is not a builder catalog, as "expected …, but …"; None when it is one.
    A catalog without a single ``<name>/builder.yaml`` is refused: a build would otherwise
    run without its builder (no entrypoint, no default arguments)."""
    try:
        if not root.exists():
            got = "it does not exist"
        elif not root.is_dir():
            got = "it is a file"
        elif (root / "builder.yaml").is_file():
            got = f"it is the folder of one builder (give its parent, {str(root.parent)!r})"
        elif not any((p / "builder.yaml").is_file() for p in root.iterdir()):
            got = "no folder in it holds a builder.yaml"
        else:
            return None
    except OSError as exc:
        got = f"it cannot be read ({exc.strerror})"
    return f"{str(root)!r}: expected {EXPECTED}, but {got}"


def load_catalog(root: Path) -> list[Builder]:
    """Every builder under ``root``, sorted by name; all problems raised together."""
    problem = catalog_problem(root)
    if problem is not None:
        raise CatalogError(
            f"builder catalog {problem}; pass --builders DIR or set AJOUR_BUILDERS_DIR"
        )
    builders: list[Builder] = []
    problems: list[Problem] = []
    for directory in sorted(p for p in root.resolve().iterdir() if (p / "builder.yaml").is_file()):
        builder, found = _load_one(directory)
        problems += found
        if builder is not None:
            builders.append(builder)
    if problems:
        raise SpecError(problems)
    return builders


def find(catalog: list[Builder], image: str) -> Builder | None:
    return next((b for b in catalog if b.matches(image)), None)
