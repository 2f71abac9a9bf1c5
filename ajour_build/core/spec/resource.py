"""Application and Device resources: Drogue Cloud's shape, plus ``kind``.

Drogue's registry JSON loads unchanged. Its metadata fields and spec sections that are not
Ajour's are accepted and ignored on purpose (listed below), except ``spec.credentials``,
which delivery uses to authenticate devices. Inside ``spec.firmware`` everything is strict.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from ajour_build.core.spec.fields import (
    Text,
    _dns_label,
    _dns_subdomain,
    is_dns_label,
    is_dns_subdomain,
)
from ajour_build.core.spec.firmware import Firmware
from ajour_build.core.spec.problems import PlacedValueError
from ajour_build.core.spec.rollout import RolloutPolicy

API_VERSIONS = ("ajour.dev/v1alpha1",)


class Metadata(BaseModel):
    """Object metadata. Unknown keys are errors; Drogue's bookkeeping is ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: Text
    application: Text | None = None
    # Drogue/Kubernetes bookkeeping, accepted and ignored on purpose:
    uid: Any = None
    creation_timestamp: Any = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: Any = Field(default=None, alias="deletionTimestamp")
    generation: Any = None
    resource_version: Any = Field(default=None, alias="resourceVersion")
    finalizers: Any = None
    owner_references: Any = Field(default=None, alias="ownerReferences")
    labels: dict[str, Text] = Field(default_factory=dict)
    annotations: dict[str, Text] = Field(default_factory=dict)


class Spec(BaseModel):
    """Drogue's spec is an open map of sections; Ajour reads ``firmware``, ``credentials``
    and, on an Application, ``rollout``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    firmware: Firmware | None = None
    credentials: JsonValue = None
    rollout: RolloutPolicy | None = None


class Resource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    api_version: Text | None = Field(default=None, alias="apiVersion")
    kind: Literal["Application", "Device"] | None = None
    metadata: Metadata
    spec: Spec = Spec()
    status: Any = None  # Drogue's status section: ignored on purpose

    @model_validator(mode="after")
    def _kind_and_names(self) -> Resource:
        if self.api_version is not None and self.api_version not in API_VERSIONS:
            raise PlacedValueError(
                ("apiVersion",),
                f"apiVersion {self.api_version!r} is unknown; use {API_VERSIONS[0]!r} or omit it",
            )
        app = self.metadata.application
        if self.kind == "Application" and app is not None:
            raise PlacedValueError(
                ("metadata", "application"),
                "an Application must not have metadata.application; use kind: Device for a device",
            )
        if self.kind == "Device" and app is None:
            raise PlacedValueError(
                ("metadata",), "a Device needs metadata.application naming its Application"
            )
        if self.spec.rollout is not None:
            if app is not None:
                raise PlacedValueError(
                    ("spec", "rollout"),
                    "spec.rollout belongs on the Application: a Device's wave follows from"
                    " its labels and name; move the rollout policy to its Application",
                )
            firmware = self.spec.firmware
            if firmware is None or firmware.container is None:
                raise PlacedValueError(
                    ("spec", "rollout"),
                    "spec.rollout needs container firmware (spec.firmware.container): a"
                    " rollout offers devices the previous version by its version tag",
                )
        _placed(("metadata", "name"), _dns_label if app is None else _dns_subdomain, self)
        if app is not None:
            _placed(("metadata", "application"), _dns_label, self)
        return self

    @property
    def resolved_kind(self) -> Literal["Application", "Device"]:
        """Drogue's JSON has no kind: a resource with metadata.application is a Device."""
        return "Device" if self.metadata.application is not None else "Application"


def _placed(path: tuple[str, str], check: Callable[[str], str], res: Resource) -> None:
    """Run ``check`` on the metadata field at ``path``; its error names that field."""
    try:
        check(getattr(res.metadata, path[1]))
    except ValueError as exc:
        raise PlacedValueError(path, str(exc)) from None


# Drogue Cloud's own spec sections: never a typo of ``firmware``
DROGUE_SECTIONS = frozenset(
    {"credentials", "alias", "gatewaySelector", "authentication", "trustAnchors", "knative"}
)


@functools.lru_cache(maxsize=4096)
def _looks_like_firmware(key: str) -> bool:
    return bool(difflib.get_close_matches(key, ["firmware"], n=1, cutoff=0.75))


def unknown_spec_sections(raw_spec: Any) -> list[str]:
    """Spec section names that look like a typo of ``firmware``."""
    if not isinstance(raw_spec, dict):
        return []
    return [
        key
        for key in raw_spec
        if key != "firmware" and key not in DROGUE_SECTIONS and _looks_like_firmware(key)
    ]


# What quick_resource reads; anything else goes through Resource, which names the problem.
_TOP_LEVEL = frozenset({"apiVersion", "kind", "metadata", "spec", "status"})
_BOOKKEEPING = frozenset(
    {
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
        "resourceVersion",
        "finalizers",
        "ownerReferences",
    }
)
_NO_SPEC: dict[str, Any] = {}  # read only
_LABELS = ("labels", "annotations")


# A resource in the shape Resource accepts, read without building it: kind, name,
# application, the raw spec.firmware (validate it with Firmware) and the raw
# spec.credentials (JSON-compatible data).
Plain = tuple[Literal["Application", "Device"], str, str | None, Any, Any]

# application names recur for every device: their check is remembered
_application_ok = functools.lru_cache(maxsize=1024)(is_dns_label)


def quick_resource(raw: dict[str, Any]) -> Plain | None:
    """What ``Resource.model_validate(raw)`` reads, for plain resources; None: ask it.

    Accepts only what Resource accepts, and reads the same names, kind and sections (a test
    compares the two on generated resources); on anything unusual it answers None, and the
    caller validates with Resource, which reports each problem with its path.
    """
    if not _TOP_LEVEL.issuperset(raw):
        return None
    metadata = raw.get("metadata")
    spec = raw.get("spec", _NO_SPEC)
    if type(metadata) is not dict or type(spec) is not dict or "rollout" in spec:
        return None  # a rollout policy: Resource validates it, with its path
    name = metadata.get("name")
    app = metadata.get("application")
    if type(name) is not str or (app is not None and type(app) is not str):
        return None
    if app is None and "application" in metadata:
        return None  # an explicit null
    if len(metadata) > (1 if app is None else 2) and not _plain_metadata(metadata):
        return None
    kind = raw.get("kind")
    if (kind is not None or "kind" in raw) and kind != ("Application" if app is None else "Device"):
        return None
    api = raw.get("apiVersion")
    if (api is not None or "apiVersion" in raw) and api not in API_VERSIONS:
        return None
    if app is None:
        if not is_dns_label(name):
            return None
        return "Application", name, None, spec.get("firmware"), spec.get("credentials")
    if not (_application_ok(app) and is_dns_subdomain(name)):
        return None
    return "Device", name, app, spec.get("firmware"), spec.get("credentials")


def _plain_metadata(metadata: dict[str, Any]) -> bool:
    for key, value in metadata.items():
        if key == "name" or key == "application" or key in _BOOKKEEPING:
            continue
        if key not in _LABELS or type(value) is not dict:
            return False
        for item in value.values():
            if type(item) is not str or "\x00" in item:
                return False
    return True
