"""Machine-local settings of the build side (``AJOUR_*`` environment variables)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_state() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "ajour"


class LocalSettings(BaseSettings):
    """Where the local runner keeps state and finds builders and its container engine."""

    model_config = SettingsConfigDict(env_prefix="AJOUR_", frozen=True, extra="ignore")

    state_dir: Path = _default_state()
    builders_dir: Path = Path("builder-images")
    # a Docker API URL (unix://… or tcp://…); empty: DOCKER_HOST, else a private podman service
    container_host: str = ""
    base_image: str = "localhost/debian:bookworm"
