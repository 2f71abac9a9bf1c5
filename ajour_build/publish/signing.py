"""Signing at publish: a cosign signature and an SLSA v1 provenance per firmware manifest.

With a key (``--sign-key FILE``, else ``AJOUR_SIGN_KEY_FILE``, else the installation
config's ``signing.key``), the OCI publishers push, next to the firmware manifest and before
any tag points at it, the ``sha256-<hex>.sig`` and ``sha256-<hex>.att`` manifests
(``core.artifact.signature``), so a worker that checks signatures never sees the firmware
unsigned. A tag that holds signatures already keeps them: ours is added, as cosign adds it
(``cosign_merge``). The key's bytes and its password never reach a log, an error or JSON output.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ajour_build.core.artifact.format import now_rfc3339
from ajour_build.core.artifact.signature import (
    BUILD_TYPE,
    SLSA_PROVENANCE,
    STATEMENT_TYPE,
    ArtifactBlob,
    PublicKey,
    SigningKey,
    att_tag,
    attestation_layer,
    sig_tag,
    signature_layer,
)
from ajour_build.core.errors import ArtifactError, PublishError
from ajour_build.publish.publisher import FirmwareArtifact

KEY_ENV = "AJOUR_SIGN_KEY_FILE"
PASSWORD_ENV = "AJOUR_SIGN_KEY_PASSWORD"
BUILDER_ENV = "AJOUR_SIGN_BUILDER_ID"
DEFAULT_BUILDER_ID = "https://ajour.dev/builders/ajour-build-publish@v1"


@dataclass(frozen=True)
class Signer:
    """A key and the builder identity the provenance names."""

    key: SigningKey
    builder_id: str = DEFAULT_BUILDER_ID

    def tags(self, digest: str) -> tuple[str, str]:
        return sig_tag(digest), att_tag(digest)

    @property
    def public(self) -> PublicKey:
        """The key's public half (to recognise its own signatures already in a manifest)."""
        return PublicKey(self.key.public_pem(), repr(self.key))

    def layers(
        self, repository: str, digest: str, artifact: FirmwareArtifact
    ) -> tuple[tuple[str, ArtifactBlob], tuple[str, ArtifactBlob]]:
        """The ``.sig`` and ``.att`` tags of ``digest``, published in ``repository``
        (``host/path`` for a registry: cosign's docker-reference), and the layer each gets
        (``cosign_merge.merged`` adds it to the layers the tag holds)."""
        statement = provenance(repository, digest, artifact, self.builder_id)
        return (
            (sig_tag(digest), signature_layer(self.key, repository, digest)),
            (att_tag(digest), attestation_layer(self.key, statement)),
        )


def provenance(
    repository: str, digest: str, artifact: FirmwareArtifact, builder_id: str
) -> dict[str, Any]:
    """The in-toto Statement v1 with the SLSA v1 provenance of ``digest``."""
    source = artifact.source
    params: dict[str, Any] = {
        "source": {"uri": source.uri, "revision": source.commit, "project": source.project},
        "builderImage": artifact.builder.image,
        "args": list(artifact.builder.args),
        "version": artifact.version,
    }
    dependencies: list[dict[str, Any]] = []
    if source.uri:
        git = {"uri": f"git+{source.uri}"}
        if source.commit:
            git["uri"] += f"@{source.commit}"
            dependencies.append({**git, "digest": {"gitCommit": source.commit}})
        else:
            dependencies.append(git)
    if artifact.builder.image:
        dependencies.append({"uri": artifact.builder.image})
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": params,
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": builder_id},
                "metadata": {"finishedOn": now_rfc3339()},
            },
        },
    }


def signer_from(
    env: Mapping[str, str], key_file: Path | str | None = None, builder_id: str | None = None
) -> Signer | None:
    """The signer ``key_file`` (else ``AJOUR_SIGN_KEY_FILE``) names, None without one; the
    builder id is ``builder_id``, else ``AJOUR_SIGN_BUILDER_ID``, else the default."""
    path = str(key_file or env.get(KEY_ENV, "") or "")
    if not path:
        return None
    try:
        key = SigningKey(Path(path), env.get(PASSWORD_ENV, ""))
    except ArtifactError as exc:
        raise PublishError(str(exc)) from None
    return Signer(key, builder_id or env.get(BUILDER_ENV, "") or DEFAULT_BUILDER_ID)
