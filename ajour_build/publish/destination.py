"""From a target URL to its publisher, and to a reader for ``inspect``.

:func:`release` is the one way firmware goes out, for the CLI, the Tekton publish step and
the service: publish, then tell delivery. A failed notification is a warning, not a
failure: the firmware is published, and delivery finds it at its next tag check.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ajour_build.core.artifact import credentials
from ajour_build.core.artifact.format import FirmwareInfo
from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.reference import SCHEMES, parse_dir, parse_layout, parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.core.spec.rollout import RolloutPolicy
from ajour_build.core.wire import EVENTS_TOKEN_ENV
from ajour_build.publish import notify
from ajour_build.publish.patches import count_from
from ajour_build.publish.publisher import FirmwareArtifact, Published, Publisher
from ajour_build.publish.signing import KEY_ENV, Signer, signer_from


def scheme_of(url: str) -> str:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    if scheme not in SCHEMES:
        raise PublishError(
            f"{url!r}: unknown target; use oci://host/repo:tag, oci-layout:///dir:tag,"
            " dir:///dir/<name> or hawkbit://host/<module>"
        )
    return scheme


def publisher_for(
    url: str,
    env: Mapping[str, str],
    insecure: bool = False,
    application: str | None = None,
    policy: RolloutPolicy | None = None,
    signer: Signer | None = None,
) -> Publisher:
    """The publisher of ``url``. ``policy`` (the application's ``spec.rollout``) matters for
    hawkBit only, which runs it as a hawkBit rollout; delivery runs it for the others. OCI
    publishers make patches from ``AJOUR_PUBLISH_PATCHES`` earlier versions (default 3,
    ``publish/patches.py``), and sign with ``signer`` (``publish/signing.py``)."""
    scheme = scheme_of(url)
    if signer is not None and scheme not in ("oci", "oci-layout"):
        raise PublishError(
            f"{url!r}: a signing key is set, but only oci:// and oci-layout:// targets keep"
            f" signatures; publish to one of them, or unset {KEY_ENV} / --sign-key"
        )
    try:
        if scheme == "oci":
            from ajour_build.publish.oci import OciPublisher

            ref = parse_oci(url)
            publisher = OciPublisher(ref, credentials.lookup(ref.host, env), insecure)
            publisher.patch_count = count_from(env)
            publisher.signer = signer
            return publisher
        if scheme == "oci-layout":
            from ajour_build.publish.layout import LayoutPublisher

            ref_layout = parse_layout(url)
            return LayoutPublisher(ref_layout, patch_count=count_from(env), signer=signer)
        if scheme == "dir":
            from ajour_build.publish.directory import DirPublisher

            return DirPublisher(parse_dir(url))
    except ArtifactError as exc:
        raise PublishError(str(exc)) from None
    from ajour_build.publish.hawkbit import HawkbitPublisher

    if policy is not None:
        return HawkbitPublisher.from_url(url, env, application=application, policy=policy)
    return HawkbitPublisher.from_url(url, env)


@dataclass(frozen=True)
class Release:
    published: Published
    warning: str | None = None  # notifying delivery failed (the firmware is out all the same)


def release(
    artifact: FirmwareArtifact,
    to: str,
    env: Mapping[str, str],
    insecure: bool = False,
    notify_url: str | None = None,
    application: str | None = None,
    policy: RolloutPolicy | None = None,
    signer: Signer | None = None,
) -> Release:
    """Publish ``artifact`` to ``to``, then notify ``notify_url`` (http(s):// or mqtt://,
    with the events token from ``env``'s ``AJOUR_DELIVERY_EVENTS_TOKEN``). It is signed
    with ``signer``, else with the key ``AJOUR_SIGN_KEY_FILE`` names, if any."""
    signer = signer or signer_from(env)
    publisher = publisher_for(to, env, insecure, application, policy, signer)
    published = publisher.publish(artifact)
    if notify_url:
        try:
            notify.send(notify_url, published, token=env.get(EVENTS_TOKEN_ENV, ""))
        except PublishError as exc:
            return Release(published, str(exc))
    return Release(published)


def inspect(url: str, env: Mapping[str, str], insecure: bool = False) -> FirmwareInfo:
    """What is published at ``url``: the true version behind a moving tag, and more."""
    scheme = scheme_of(url)
    if scheme == "oci":
        ref = parse_oci(url)
        reader = RegistryReader(ref.host, credentials.lookup(ref.host, env), insecure)
        return reader.inspect(ref)
    if scheme == "oci-layout":
        layout = parse_layout(url)
        return LayoutStore(layout.path).inspect(layout.tag)
    if scheme == "dir":
        return _inspect_dir(url)
    raise ArtifactError("inspect reads oci://, oci-layout:// and dir:// targets")


def _inspect_dir(url: str) -> FirmwareInfo:
    ref = parse_dir(url)
    meta_path = ref.path / f"{ref.name}.json"
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        checksum = "sha256:" + str(meta["checksum"]).removeprefix("sha256:")
        return FirmwareInfo(
            version=str(meta["version"]),
            size=int(meta["size"]),
            checksum=checksum,
            layout="drogue-file",
            manifest_digest="",
            title=Path(f"{ref.name}.bin").name,
        )
    except FileNotFoundError:
        raise ArtifactError(f"{meta_path} does not exist") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{meta_path} is not {{version, checksum, size}}: {exc}") from None
