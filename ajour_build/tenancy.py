"""What an application's builds may touch: where they publish, and what they read.

The allowlist (:mod:`ajour_build.allowlist`) decides who builds; this module keeps an allowed
application inside its own namespace:

- **Publishing.** A build publishes to ``container.image``, relative to the registry prefix
  (or to ``service.publish_to``). Application ``A`` owns the repository ``A`` and every
  repository under ``A/``; ``publish_repositories`` in ``ajour.yaml`` grants it more, per
  application, each entry with everything under it.
- **Sources.** ``file://`` git sources clone a repository of the build host, any tenant's,
  so they are refused unless ``sources.allow_local`` is true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ajour_build.core.spec.fields import redact_uri


def repository_of(image: str) -> str:
    """The repository of a validated ``container.image`` (``fw/app`` of ``fw/app:1@sha256:…``)."""
    name = image.split("@", 1)[0]
    head, colon, tag = name.rpartition(":")
    return head if colon and "/" not in tag else name


def _within(repository: str, namespace: str) -> bool:
    return repository == namespace or repository.startswith(namespace + "/")


def is_local(uri: str) -> bool:
    """A git source on the build host's own file system (the spec allows only file:///…)."""
    return uri[:7].lower() == "file://"


@dataclass(frozen=True)
class Tenancy:
    """The publish namespaces and the local-source switch of one installation."""

    grants: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    allow_local: bool = False
    source: str = "ajour.yaml"

    def namespaces(self, application: str) -> tuple[str, ...]:
        return (application, *self.grants.get(application, ()))

    def publish_refusal(self, application: str, image: str) -> str | None:
        """Why ``application`` may not publish to ``image`` (``None``: it may)."""
        repository = repository_of(image)
        owned = self.namespaces(application)
        if any(_within(repository, ns) for ns in owned):
            return None
        first = repository.split("/", 1)[0]
        where = ", ".join(f"{ns} or {ns}/…" for ns in owned)
        return (
            f"container.image {image!r} publishes to repository {repository!r}, outside the"
            f" namespace of application {application!r} ({where}, under the registry prefix"
            f" or service.publish_to); use an image under {application}/, or add {first!r}"
            f" to publish_repositories.{application} in {self.source} (or to"
            " AJOUR_PUBLISH_REPOSITORIES) to allow it"
        )

    def source_refusal(self, uri: str) -> str | None:
        """Why a build may not read ``uri`` (``None``: it may)."""
        if self.allow_local or not is_local(uri):
            return None
        return (
            f"source.git.uri {redact_uri(uri)!r} is a repository on the build host, and local"
            f" sources are off; use an https:// or ssh:// remote, or set sources.allow_local:"
            f" true in {self.source} (or AJOUR_SOURCES__ALLOW_LOCAL=true) to allow them"
        )
