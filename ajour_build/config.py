"""The installation config (``ajour.yaml``), overridable by ``AJOUR_*`` environment variables.

Precedence: environment > file > defaults. Nested keys use ``__`` in the environment
(``AJOUR_REGISTRY__PREFIX``); lists and maps are JSON (``AJOUR_ALLOWED_APPLICATIONS='["a"]'``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from ajour_build.allowlist import ALLOW_ALL, Allowlist
from ajour_build.core.errors import Problem, SpecError
from ajour_build.core.installation import (
    DeliveryConfig,
    RegistryConfig,
    merge,
    read_config_file,
)
from ajour_build.core.spec.fields import (
    REPOSITORY_NAME,
    DnsLabel,
    DnsSubdomain,
    Duration,
    ImageRef,
    Text,
    _dns_label,
    parse_duration,
)
from ajour_build.core.spec.problems import field_places, known_fields, problems_from_validation
from ajour_build.tenancy import Tenancy

ENV_PREFIX = "AJOUR_"
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PipelineRefConfig(_Section):
    """How PipelineRuns find the ``ajour-firmware`` Pipeline: a Tekton resolver."""

    resolver: Literal["cluster", "git", "bundles", "hub"] = "cluster"
    params: dict[str, Text] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _params(cls, value: dict[str, str]) -> dict[str, str]:
        for key in value:
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]*", key):
                raise ValueError(f"resolver param name {key!r} is not valid")
        return value

    def resolved_params(self, namespace: str) -> list[dict[str, str]]:
        defaults: dict[str, str] = {}
        if self.resolver == "cluster":
            defaults = {"kind": "pipeline", "name": "ajour-firmware", "namespace": namespace}
        merged = {**defaults, **self.params}
        return [{"name": k, "value": v} for k, v in merged.items()]


class WorkspaceConfig(_Section):
    storage: Text = "1Gi"
    storage_class_name: DnsSubdomain | None = None
    dockerconfig_secret: DnsSubdomain | None = None

    @field_validator("storage")
    @classmethod
    def _quantity(cls, value: str) -> str:
        if not _QUANTITY.fullmatch(value):
            raise ValueError(f"{value!r} is not a Kubernetes quantity such as 1Gi or 500Mi")
        return value


class BuilderEntry(_Section):
    image: ImageRef
    description: Text = ""


class WebhookSecrets(_Section):
    """Shared secrets of the push webhooks; a provider without one is refused (not open)."""

    github: SecretStr | None = None
    gitlab: SecretStr | None = None
    gitea: SecretStr | None = None

    def secret(self, provider: str) -> str:
        value = getattr(self, provider, None)
        return value.get_secret_value() if isinstance(value, SecretStr) else ""


class RetentionConfig(_Section):
    """Which finished builds (records, logs, build directories) the service prunes, and how
    often (docs/operations.md, "Retain"). Queued and running builds are never pruned, and
    the newest ``keep_per_application`` builds of each application are always kept."""

    # finished builds older than this many days go (0: no age limit)
    max_age_days: int = Field(default=30, ge=0, le=36_500)
    # at most this many builds in the records, newest first (0: no count limit)
    max_builds: int = Field(default=1000, ge=0, le=10_000_000)
    keep_per_application: int = Field(default=10, ge=0, le=100_000)
    # how often ``ajour-build serve`` prunes; 0s: only ``ajour-build prune``
    interval: Text = "1h0m0s"

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if value in ("0", "0s"):
            return "0s"
        parse_duration(value)  # ValueError says what is wrong
        return value


class ServiceConfig(_Section):
    """``ajour-build serve``: backend, records, auth, and where builds publish."""

    backend: Literal["local", "tekton"] = "local"
    # SQLAlchemy URL of the build records; empty: SQLite in the state directory
    database: Text = ""
    # bearer tokens of the REST API and the console's trigger buttons
    tokens: tuple[SecretStr, ...] = ()
    webhooks: WebhookSecrets = WebhookSecrets()
    queue_size: int = Field(default=16, ge=1, le=10_000)
    workers: int = Field(default=1, ge=1, le=64)
    runner: Literal["container", "host"] = "container"
    publish: bool = True
    # publish to <publish_to>/<image> instead of the registry prefix (e.g. oci-layout:///srv/fw)
    publish_to: Text = ""
    # tell delivery about new firmware (http(s)://…/v1/events or mqtt://…)
    notify: Text = ""
    # the delivery worker's HTTP base URL, for the console's device views
    delivery_url: Text = ""
    # let anyone read builds and the console's views (triggers and cancels still need a token)
    public_read: bool = False
    # builds that were running when the service died: retry them, or only report them
    on_interrupted: Literal["retry", "report"] = "report"
    # bounds of one local build (docs/service.md#bounds): the clone's deadline, the
    # publish's (then it is abandoned and the build fails), and how long a worker may stay
    # busy past its step's deadline before /readyz fails
    clone_timeout: Duration = "10m0s"
    publish_timeout: Duration = "10m0s"
    stuck_after: Duration = "1m0s"
    # the build log: bytes per line (the rest is dropped), builder output per build in
    # build.log, and lines per build in the records
    log_line_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    log_bytes: int = Field(default=50 * 1024 * 1024, ge=64 * 1024, le=64 * 1024**3)
    log_lines: int = Field(default=50_000, ge=100, le=10_000_000)
    retention: RetentionConfig = RetentionConfig()

    @field_validator("database")
    @classmethod
    def _database(cls, value: str) -> str:
        if value and not re.match(r"^[a-z][a-z0-9+]*://", value):
            raise ValueError(
                f"{value!r} is not a database URL; write sqlite:////path/builds.db or"
                " postgresql://user@host/db"
            )
        return value

    def token_values(self) -> tuple[str, ...]:
        return tuple(t.get_secret_value() for t in self.tokens if t.get_secret_value())


class SourcesConfig(_Section):
    """Where builds may read their sources from."""

    # file:// git sources: clones of any repository on the build host, so off by default
    allow_local: bool = False


class SigningConfig(_Section):
    """Signing at publish (docs/artifact-format.md, "Signatures and provenance")."""

    # PEM private key (ECDSA P-256 or ed25519) that signs every published manifest and its
    # SLSA provenance; empty: unsigned (AJOUR_SIGN_KEY_FILE and --sign-key override it)
    key: Text = ""
    # the key file every build of ``ajour-build serve`` may sign its image with (MCUboot's:
    # imgtool's PEM), handed to the builder at AJOUR_IMAGE_KEY_FILE; empty: none. The
    # service's AJOUR_IMAGE_KEY_FILE overrides it (``ajour-build build`` takes --image-key)
    image_key: Text = ""
    # the provenance's runDetails.builder.id (empty: AJOUR_SIGN_BUILDER_ID, else Ajour's)
    builder_id: Text = ""


class InstallationConfig(BaseSettings):
    """One Ajour installation: registry, allowlist, cluster settings, builder aliases."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    registry: RegistryConfig = RegistryConfig()
    allowed_applications: tuple[Text, ...] = ()
    # per application, repositories it may publish to besides <app> and <app>/…
    publish_repositories: dict[DnsLabel, tuple[Text, ...]] = Field(default_factory=dict)
    sources: SourcesConfig = SourcesConfig()
    namespace: DnsLabel = "ajour"
    service_account: DnsSubdomain = "ajour-build"
    default_timeout: Duration = "1h0m0s"
    tools_image: ImageRef = "localhost/ajour/tools:0.1.0"
    pipeline_ref: PipelineRefConfig = PipelineRefConfig()
    workspace: WorkspaceConfig = WorkspaceConfig()
    builders: dict[DnsLabel, BuilderEntry] = Field(default_factory=dict)
    service: ServiceConfig = ServiceConfig()
    delivery: DeliveryConfig = DeliveryConfig()
    signing: SigningConfig = SigningConfig()
    # where the config came from, for messages; not read from the file
    source: str = Field(default="defaults", exclude=True)

    @field_validator("allowed_applications")
    @classmethod
    def _allowed(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if name != ALLOW_ALL:
                _dns_label(name)
        return value

    @field_validator("publish_repositories")
    @classmethod
    def _repositories(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        for app, names in value.items():
            for name in names:
                if not REPOSITORY_NAME.fullmatch(name):
                    raise ValueError(
                        f"publish_repositories.{app}: {name!r} is not a repository name; write"
                        " it relative to the registry prefix, lowercase, without a tag, for"
                        " example fw-shared or vendor/fw"
                    )
        return value

    @property
    def allowlist(self) -> Allowlist:
        return Allowlist.of(self.allowed_applications, self.source)

    @property
    def tenancy(self) -> Tenancy:
        return Tenancy(self.publish_repositories, self.sources.allow_local, self.source)

    def builder_image(self, image: str) -> str:
        """A builder alias (``builders.<name>``) resolves to its image; anything else is an
        image ref. Not to be confused with the builder catalog (``builder-images/``)."""
        entry = self.builders.get(image)
        return entry.image if entry is not None else image


def load_config(path: Path | None, env: Mapping[str, str] | None = None) -> InstallationConfig:
    """Read ``path`` (or only the environment when ``None``) into a validated config."""
    environ = dict(os.environ if env is None else env)
    doc = read_config_file(path)
    file_data: dict[str, Any] = doc.data
    env_data = EnvSettingsSource(
        InstallationConfig,
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
    )
    env_data.env_vars = {k.lower(): v for k, v in environ.items()}
    try:
        overrides = env_data()
    except Exception as exc:  # pydantic-settings raises SettingsError for bad JSON
        raise SpecError([_malformed_env(str(exc), environ)]) from exc
    merged = merge(file_data, overrides)
    merged["source"] = str(path) if path else "the environment"
    doc.data = merged
    try:
        return InstallationConfig.model_validate(merged)
    except ValidationError as exc:
        vocab = known_fields(InstallationConfig)
        places = field_places(InstallationConfig)
        found = problems_from_validation(exc, doc, (), vocab, places)
        raise SpecError(_blame_env(found, overrides, environ)) from exc


def _env_name(parts: tuple[str, ...], environ: Mapping[str, str]) -> str:
    """The variable as the user spelled it (matching is case-insensitive)."""
    wanted = (ENV_PREFIX + "__".join(parts)).lower()
    return next((k for k in environ if k.lower() == wanted), wanted.upper())


def _leaves(data: Mapping[str, Any], parent: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for key, value in data.items():
        here = (*parent, str(key))
        out.extend(_leaves(value, here) if isinstance(value, Mapping) else [here])
    return out


def _blame_env(
    problems: list[Problem], overrides: Mapping[str, Any], environ: Mapping[str, str]
) -> list[Problem]:
    """Problems in values that came from ``AJOUR_*`` variables name the variable, not the file."""
    from_env = {".".join(parts): parts for parts in _leaves(overrides)}
    out: list[Problem] = []
    for problem in problems:
        path = problem.path or ""
        parts = next(
            (
                p
                for key, p in from_env.items()
                if path == key or path.startswith((key + ".", key + "["))
            ),
            None,
        )
        if parts is None:
            out.append(problem)
            continue
        where = f"environment variable {_env_name(parts, environ)}"
        out.append(replace(problem, file=where, line=None, column=None))
    return out


def _field_at(parts: list[str]) -> Any:
    """The annotation of the config field at ``parts`` (None if there is none)."""
    model: Any = InstallationConfig
    annotation: Any = None
    for part in parts:
        fields = getattr(model, "model_fields", {})
        if part not in fields:
            return None
        annotation = model = fields[part].annotation
    return annotation


def _holds_secret(annotation: Any, depth: int = 0) -> bool:
    """Whether a value of ``annotation`` can hold a secret (never echo it then)."""
    if annotation is SecretStr or depth > 8:
        return annotation is SecretStr
    fields = getattr(annotation, "model_fields", {})
    nested = [f.annotation for f in fields.values()]
    nested += list(getattr(annotation, "__args__", ()) or ())
    return any(_holds_secret(a, depth + 1) for a in nested)


def _malformed_env(message: str, environ: Mapping[str, str]) -> Problem:
    """pydantic-settings' "error parsing value for field …" as: which variable, what to write."""
    found = re.search(r'field "([^"]+)"', message)
    top = found.group(1) if found else ""
    for name, value in sorted(environ.items()):
        parts = name.lower().removeprefix(ENV_PREFIX.lower()).split("__")
        if not name.upper().startswith(ENV_PREFIX) or parts[0] != top:
            continue
        try:
            json.loads(value)
        except ValueError:
            annotation = _field_at(parts)
            secret = _holds_secret(annotation)
            shown = "text that is not JSON" if secret else f"{value!r}, which is not JSON"
            if getattr(annotation, "__origin__", None) in (tuple, list):
                items = ["<item>"] if secret else [v.strip() for v in value.split(",")]
                example = json.dumps(items)
            else:
                example = '{"<key>": "<value>"}'
            return Problem(
                f"expected a JSON value (this setting is a list or a mapping), got {shown}",
                file=f"environment variable {name}",
                hint=f"write it as JSON, for example {name}='{example}'",
            )
    return Problem(f"an AJOUR_* environment variable is malformed: {message}")
