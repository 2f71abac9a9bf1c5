"""The build service's keys, read once at start.

* The image key every local build gets (``AJOUR_IMAGE_KEY_FILE``, else the config's
  ``signing.image_key``): the runner copies it into the build's workspace and names the copy
  in ``AJOUR_IMAGE_KEY_FILE`` (an MCUboot image is signed with it in the builder).
* The signer of every publish (``AJOUR_SIGN_KEY_FILE``, else ``signing.key``; the
  provenance's builder id ``AJOUR_SIGN_BUILDER_ID``, else ``signing.builder_id``).

A key that cannot be read stops the service before it listens, with the file, the setting
that named it and what to do. No key's bytes reach a log: only its SHA-256 prefix.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ajour_build.config import InstallationConfig
from ajour_build.core.errors import ConfigError, PublishError
from ajour_build.publish.signing import BUILDER_ENV, KEY_ENV, Signer, signer_from
from ajour_build.runner.job import SIGNING_KEY_VAR

log = logging.getLogger(__name__)
IMAGE_KEY_ENV = SIGNING_KEY_VAR  # the service reads it as the builder does: a key file
IMAGE_KEY_HINT = (
    "a readable, non-empty key file the builder signs images with (for MCUboot: imgtool"
    " keygen -k image.key -t ed25519)"
)


@dataclass(frozen=True)
class ImageKey:
    """The image key's bytes (never shown), its file and the setting that named it."""

    content: bytes = field(repr=False)
    path: Path
    where: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass(frozen=True)
class ServiceKeys:
    image: ImageKey | None = None
    signer: Signer | None = None


def _setting(
    env: Mapping[str, str], variable: str, value: str, name: str, source: str
) -> tuple[str, str]:
    """The path a setting holds and where it was set: the variable wins over the config."""
    if env.get(variable):
        return env[variable], f"environment variable {variable}"
    if value:
        return value, f"{name} in {source}"
    return "", ""


def read_image_key(config: InstallationConfig, env: Mapping[str, str]) -> ImageKey | None:
    path, where = _setting(
        env, IMAGE_KEY_ENV, config.signing.image_key, "signing.image_key", config.source
    )
    if not path:
        return None
    fix = f"fix the path in {where}, or unset it to build without an image key"
    try:
        content = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"image key {path} (set by {where}): cannot read it ({exc.strerror}); expected"
            f" {IMAGE_KEY_HINT}; {fix}"
        ) from None
    if not content.strip():
        raise ConfigError(
            f"image key {path} (set by {where}): the file is empty; expected {IMAGE_KEY_HINT};"
            f" {fix}"
        )
    return ImageKey(content, Path(path), where)


def read_signer(config: InstallationConfig, env: Mapping[str, str]) -> Signer | None:
    path, where = _setting(env, KEY_ENV, config.signing.key, "signing.key", config.source)
    if not path:
        return None
    builder_id = env.get(BUILDER_ENV) or config.signing.builder_id or None
    try:
        signer = signer_from(env, path, builder_id)
    except PublishError as exc:
        raise ConfigError(
            f"{exc} (set by {where}); fix the path in {where}, or unset it to publish unsigned"
        ) from None
    assert signer is not None
    return signer


def read_keys(config: InstallationConfig, env: Mapping[str, str]) -> ServiceKeys:
    """The keys the service's builds use, read and checked now; each logged by its SHA-256
    prefix. The tekton backend's PipelineRuns mount no image key: one set is refused."""
    svc = config.service
    image = read_image_key(config, env)
    if image is not None and svc.backend != "local":
        raise ConfigError(
            f"an image key is set by {image.where}, but the {svc.backend} backend cannot hand"
            " it to builds (its PipelineRuns mount no Secret for it); unset it, or build with"
            " service.backend: local"
        )
    signer = read_signer(config, env) if svc.backend == "local" and svc.publish else None
    if image is not None:
        log.info("builds get the image key from %s (sha256 %s)", image.where, image.sha256[:12])
    if signer is not None:
        digest = hashlib.sha256(signer.key.path.read_bytes()).hexdigest()
        log.info("publishes are signed with the key %s (sha256 %s)", signer.key.path, digest[:12])
    return ServiceKeys(image, signer)
