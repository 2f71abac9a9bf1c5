"""Machine-local settings of the build side (``AJOUR_*`` environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def shipped_builders() -> Path:
    """The builder catalog that comes with Ajour, found next to the package, never by the
    working directory: in a wheel ``ajour_build/builder_images`` (pyproject.toml's
    ``force-include``), in a checkout ``builder-images/`` beside ``ajour_build/``."""
    package = Path(__file__).resolve().parent
    wheel = package / "builder_images"
    return wheel if wheel.is_dir() else package.parent / "builder-images"


def _default_state() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ajour"


class LocalSettings(BaseSettings):
    """Where the local runner keeps state and finds builders and its container engine."""

    model_config = SettingsConfigDict(env_prefix="AJOUR_", frozen=True, extra="ignore")

    state_dir: Path = _default_state()
    builders_dir: Path = Field(default_factory=shipped_builders)  # the builder catalog
    # a Docker API URL (unix://… or tcp://…); empty: DOCKER_HOST, else a private podman service
    container_host: str = ""
    base_image: str = "localhost/debian:bookworm"

    @field_validator("builders_dir", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: object) -> object:
        """``AJOUR_BUILDERS_DIR=`` is unset, as click reads it for --builders (not ``.``)."""
        return shipped_builders() if value == "" else value
