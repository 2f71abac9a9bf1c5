"""The ``spec.firmware`` section: Ajour's own, so every model here is strict."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ajour_build.core.spec.fields import (
    Args,
    ArtifactPath,
    BuilderImage,
    Duration,
    EnvName,
    FileName,
    GitRef,
    GitUri,
    NonEmptyText,
    ProjectPath,
    RepositoryRef,
    Text,
)

ENV_LIST_SEPARATOR = " "
MAX_ENV_BYTES = 32 * 1024


class Strict(BaseModel):
    """Frozen, and unknown fields are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class EnvVar(Strict):
    name: EnvName
    value: Text | tuple[Text, ...]

    @property
    def text(self) -> str:
        """The value as the builder sees it: lists are joined with a space."""
        if isinstance(self.value, tuple):
            return ENV_LIST_SEPARATOR.join(self.value)
        return self.value


class GitSource(Strict):
    uri: GitUri
    project: ProjectPath = "."
    rev: GitRef = "HEAD"


class BuildSource(Strict):
    git: GitSource


class ArtifactSpec(Strict):
    path: ArtifactPath


class BuildSpec(Strict):
    image: BuilderImage
    source: BuildSource
    args: Args = ()
    env: tuple[EnvVar, ...] = ()
    artifact: ArtifactSpec = ArtifactSpec(path="firmware.bin")
    timeout: Duration | None = None

    @model_validator(mode="after")
    def _env_unique_and_bounded(self) -> BuildSpec:
        seen: set[str] = set()
        size = 0
        for var in self.env:
            if var.name in seen:
                raise ValueError(f"env variable {var.name!r} is set twice; keep one")
            seen.add(var.name)
            size += len(var.name) + len(var.text.encode())
        if size > MAX_ENV_BYTES:
            raise ValueError(f"env is {size} bytes; the limit is {MAX_ENV_BYTES}")
        return self


def _no_build(kind: str, data: Any) -> Any:
    if isinstance(data, dict) and "build" in data:
        raise ValueError(
            f"build is supported for container firmware only, not for {kind}: Ajour builds"
            " publish to the OCI registry. Move the build under firmware.container"
        )
    return data


class ContainerFirmware(Strict):
    image: RepositoryRef
    image_pull_policy: Literal["Always", "IfNotPresent"] = Field(
        default="IfNotPresent", alias="imagePullPolicy"
    )
    build: BuildSpec | None = None


class HawkbitFirmware(Strict):
    controller: NonEmptyText

    @model_validator(mode="before")
    @classmethod
    def _reject_build(cls, data: Any) -> Any:
        return _no_build("hawkbit", data)


class FileFirmware(Strict):
    name: FileName

    @model_validator(mode="before")
    @classmethod
    def _reject_build(cls, data: Any) -> Any:
        return _no_build("file", data)


BRANCHES = ("container", "hawkbit", "file")


class Firmware(Strict):
    """Exactly one of ``container | hawkbit | file`` (Drogue's older ``oci`` = container)."""

    container: ContainerFirmware | None = None
    hawkbit: HawkbitFirmware | None = None
    file: FileFirmware | None = None

    @model_validator(mode="before")
    @classmethod
    def _exactly_one(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        if "oci" in data:
            if "container" in data:
                raise ValueError("give either container or its older name oci, not both")
            data = {("container" if k == "oci" else k): v for k, v in data.items()}
        present = [b for b in BRANCHES if b in data]
        if len(present) != 1:
            got = " and ".join(present) if present else "none"
            raise ValueError(f"firmware needs exactly one of container, hawkbit or file; got {got}")
        return data

    @property
    def kind(self) -> Literal["container", "hawkbit", "file"]:
        if self.container is not None:
            return "container"
        if self.hawkbit is not None:
            return "hawkbit"
        return "file"

    @property
    def build(self) -> BuildSpec | None:
        return self.container.build if self.container is not None else None
