"""Application and Device resources: Drogue Cloud's shape, plus ``kind``.

Drogue's registry JSON loads unchanged. Its metadata fields and spec sections that are not
Ajour's are accepted and ignored on purpose (listed below), except ``spec.credentials``,
which delivery uses to authenticate devices. Inside ``spec.firmware`` everything is strict.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from ajour_build.core.spec.fields import Text, _dns_label, _dns_subdomain
from ajour_build.core.spec.firmware import Firmware

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
    """Drogue's spec is an open map of sections; Ajour reads ``firmware`` and ``credentials``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    firmware: Firmware | None = None
    credentials: JsonValue = None


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
            raise ValueError(
                f"apiVersion {self.api_version!r} is unknown; use {API_VERSIONS[0]!r} or omit it"
            )
        app = self.metadata.application
        if self.kind == "Application" and app is not None:
            raise ValueError(
                "an Application must not have metadata.application; use kind: Device for a device"
            )
        if self.kind == "Device" and app is None:
            raise ValueError("a Device needs metadata.application naming its Application")
        if app is None:
            _dns_label(self.metadata.name)
        else:
            _dns_label(app)
            _dns_subdomain(self.metadata.name)
        return self

    @property
    def resolved_kind(self) -> Literal["Application", "Device"]:
        """Drogue's JSON has no kind: a resource with metadata.application is a Device."""
        return "Device" if self.metadata.application is not None else "Application"


def unknown_spec_sections(raw_spec: Any) -> list[str]:
    """Spec section names that look like a typo of ``firmware``."""
    if not isinstance(raw_spec, dict):
        return []
    return [
        key
        for key in raw_spec
        if key != "firmware" and difflib.get_close_matches(key, ["firmware"], n=1, cutoff=0.75)
    ]
