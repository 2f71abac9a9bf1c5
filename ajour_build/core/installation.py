"""What both sides read of the installation config (``ajour.yaml``): where it is, the registry
prefix, and the ``delivery:`` section.

The build side validates the whole file (``ajour_build.config``); the delivery worker reads
only ``registry`` and ``delivery`` (``delivery.config``) and ignores the build sections. Both
find the file the same way: ``--config`` > ``AJOUR_CONFIG`` > ``ajour.yaml`` at the top of a
fleet directory > ``./ajour.yaml``; both let ``AJOUR_*`` variables override it
(``AJOUR_DELIVERY__HTTP=0.0.0.0:8081``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator

from ajour_build.core.errors import ConfigError, Problem, SpecError
from ajour_build.core.fleet import CONFIG_NAMES
from ajour_build.core.spec.document import Document, DocumentError, read_documents
from ajour_build.core.spec.fields import DnsLabel, Text

_REGISTRY_PREFIX = re.compile(
    r"(?:[a-zA-Z0-9.-]+|\[[0-9a-fA-F:]+\])(?::[0-9]+)?(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_HOSTPORT = re.compile(r"(?:[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\]):[0-9]{1,5}")


class Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegistryConfig(Section):
    prefix: Text = "127.0.0.1:5000/ajour"
    insecure: bool = False

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if "://" in value or not _REGISTRY_PREFIX.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a registry prefix; write host[:port][/path], for example"
                " registry.example.com/firmware (no scheme)"
            )
        return value


class PollConfig(Section):
    """How long devices wait before their next status, in seconds."""

    synced: int = Field(default=300, ge=1, le=86_400)  # running the target version
    wait: int = Field(default=30, ge=1, le=86_400)  # nothing to serve (yet)


class TrustConfig(Section):
    """One application's trust policy: serve only firmware these keys signed
    (docs/delivery.md, "Signed firmware only")."""

    keys: tuple[Text, ...] = Field(min_length=1)  # PEM public key files (cosign.pub)
    builder: Text = ""  # the provenance's runDetails.builder.id must be this (empty: any)
    source: Text = ""  # its source URI must be this or under it (empty: any)


class DeliveryConfig(Section):
    """``ajour-delivery serve``: transports, credentials of its own endpoints, polling."""

    # HOST:PORT to serve HTTP on, e.g. 127.0.0.1:8081 (empty: no HTTP)
    http: Text = ""
    # mqtt://[user:password@]host[:port] to serve MQTT through (empty: no MQTT)
    mqtt: Text = ""
    group: DnsLabel = "ajour"  # the MQTT shared-subscription group of the workers
    drogue_apps: tuple[DnsLabel, ...] = ()  # applications served in Drogue's MQTT mode
    file_dir: Text = ""  # where ``file`` firmware lives
    store: Text = ":memory:"  # SQLite file of what devices reported
    # staged rollouts, shared by the workers: a SQLite file or postgresql://… (":memory:":
    # per process)
    rollout_db: Text = ":memory:"
    ttl: float = Field(default=30.0, gt=0, le=3600)  # tag resolution cache, seconds
    poll: PollConfig = PollConfig()
    app_poll: dict[DnsLabel, PollConfig] = Field(default_factory=dict)
    # bearer tokens for GET /v1/status and for POST /v1/events (a registry's notifications)
    status_tokens: tuple[SecretStr, ...] = ()
    events_tokens: tuple[SecretStr, ...] = ()
    # bearer token of POST /v1/rollouts/<app>/<action> (empty: operations are refused)
    operator_token: SecretStr = SecretStr("")
    hawkbit_url: Text = ""  # hawkBit DDI base URL, for hawkbit firmware specs
    hawkbit_tenant: Text = "DEFAULT"
    # HOST:PORT to serve CoAP on (UDP), e.g. 127.0.0.1:5683 (empty: no CoAP)
    coap: Text = ""
    coap_max_observers: int = Field(default=1000, ge=0, le=1_000_000)  # Observe registrations
    # per application: serve only signed firmware (and with matching provenance)
    trust: dict[DnsLabel, TrustConfig] = Field(default_factory=dict)

    @field_validator("http", "coap")
    @classmethod
    def _hostport(cls, value: str, info: ValidationInfo) -> str:
        if value and not _HOSTPORT.fullmatch(value):
            port = 5683 if info.field_name == "coap" else 8081
            raise ValueError(f"{value!r} is not HOST:PORT; write for example 127.0.0.1:{port}")
        return value

    @field_validator("mqtt")
    @classmethod
    def _mqtt(cls, value: str) -> str:
        if value and not re.fullmatch(r"mqtts?://[^/\s]+/?", value):
            raise ValueError(f"{value!r} is not a broker URL; write mqtt://host:1883")
        return value


def find_config(
    explicit: Path | None, fleet_paths: list[Path], env: Mapping[str, str]
) -> Path | None:
    """``--config`` > ``AJOUR_CONFIG`` > ``ajour.yaml`` in a fleet directory > ``./ajour.yaml``."""
    if explicit is not None:
        return explicit
    if env.get("AJOUR_CONFIG"):
        return Path(env["AJOUR_CONFIG"])
    for path in fleet_paths:
        if path.is_dir():
            for name in sorted(CONFIG_NAMES):
                if (path / name).is_file():
                    return path / name
    for name in sorted(CONFIG_NAMES):
        if Path(name).is_file():
            return Path(name)
    return None


def read_config_file(path: Path | None) -> Document:
    """The config file as one YAML mapping (an empty one without a file)."""
    if path is None:
        return Document("<environment>", 0, {})
    if not path.is_file():
        raise ConfigError(f"installation config {str(path)!r} does not exist")
    try:
        docs = read_documents(path)
    except DocumentError as exc:
        raise SpecError([exc.problem]) from exc
    if len(docs) != 1 or not isinstance(docs[0].data, dict):
        raise SpecError(
            [Problem("the installation config must be one YAML mapping", file=str(path))]
        )
    return docs[0]


def merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` on top of ``base``, mappings merged key by key."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
