"""The delivery worker's configuration: the ``registry`` and ``delivery`` sections of the
installation config (``ajour.yaml``), overridable by ``AJOUR_*`` variables.

Found like the build side finds it (``ajour_build.core.installation.find_config``). The
build-side sections of the same file are ignored here, on purpose: ``ajour-build validate``
checks them. A mistake in the ``delivery`` section is reported with file, line and a hint.
Command-line options of ``ajour-delivery serve`` override both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from ajour_build.core.errors import ConfigError, SpecError
from ajour_build.core.installation import (
    DeliveryConfig,
    RegistryConfig,
    find_config,
    merge,
    read_config_file,
)
from ajour_build.core.spec.problems import known_fields, problems_from_validation

ENV_PREFIX = "AJOUR_"
_HOSTPORT = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):[0-9]{1,5}")


class DeliverySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    registry: RegistryConfig = RegistryConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    source: str = Field(default="defaults", exclude=True)  # for messages; not read


def load_settings(
    explicit: Path | None, fleet_paths: list[Path], env: Mapping[str, str]
) -> DeliverySettings:
    """The worker's settings: environment > config file > defaults."""
    path = find_config(explicit, fleet_paths, env)
    doc = read_config_file(path)
    source = EnvSettingsSource(
        DeliverySettings, env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False
    )
    source.env_vars = {k.lower(): v for k, v in env.items()}
    try:
        overrides: dict[str, Any] = source()
    except Exception as exc:  # pydantic-settings raises SettingsError for bad JSON
        raise ConfigError(
            f"an AJOUR_DELIVERY__* or AJOUR_REGISTRY__* variable is malformed: {exc}; lists"
            " are JSON, e.g. AJOUR_DELIVERY__STATUS_TOKENS='[\"…\"]'"
        ) from exc
    data = merge(doc.data, overrides)
    data["source"] = str(path) if path else "the environment"
    doc.data = data
    try:
        return DeliverySettings.model_validate(data)
    except ValidationError as exc:
        vocab = known_fields(DeliverySettings)
        raise SpecError(problems_from_validation(exc, doc, (), vocab)) from exc
