"""Signatures and provenance of a published firmware manifest (docs/artifact-format.md,
"Signatures and provenance"), in cosign's layout so ``cosign verify --key`` reads them.

* The signature: the simple-signing payload naming the manifest digest, signed with the key,
  in a manifest tagged ``sha256-<hex>.sig`` in the firmware's repository. Each layer is
  one signer's payload (``application/vnd.dev.cosign.simplesigning.v1+json``), the base64
  signature in the layer's ``dev.cosignproject.cosign/signature`` annotation.
* The provenance: an in-toto Statement v1 with an SLSA v1 predicate about the digest, in a
  DSSE envelope signed with the same key, in a manifest tagged ``sha256-<hex>.att``, one
  layer per envelope (``application/vnd.dsse.envelope.v1+json``) annotated ``predicateType``.

A second signer adds a layer to these manifests (``publish/cosign_merge.py``), as cosign
does; it never replaces them.

Keys: ECDSA P-256 (cosign's default; signatures are ASN.1 DER over SHA-256) or ed25519, as
PEM (a PKCS#8 or SEC1 private key; PKIX public keys). ``cryptography`` is imported only when
a key is loaded: the core's import needs no more than the standard library and pydantic.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ajour_build.core.artifact.format import canonical, sha256_digest
from ajour_build.core.errors import ArtifactError

SIMPLESIGNING_MEDIA_TYPE: Final = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION: Final = "dev.cosignproject.cosign/signature"
DSSE_MEDIA_TYPE: Final = "application/vnd.dsse.envelope.v1+json"
PREDICATE_TYPE_ANNOTATION: Final = "predicateType"
IN_TOTO_PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE: Final = "https://slsa.dev/provenance/v1"
BUILD_TYPE: Final = "https://ajour.dev/firmware-build/v1"
COSIGN_TYPE: Final = "cosign container image signature"
OCI_CONFIG_MEDIA_TYPE: Final = "application/vnd.oci.image.config.v1+json"
KEY_HINT: Final = (
    "a PEM private key, ECDSA P-256 or ed25519, unencrypted PKCS#8 (e.g. `openssl genpkey"
    " -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sign.key`) or encrypted with the"
    " password in AJOUR_SIGN_KEY_PASSWORD"
)


_COSIGN_TAG = re.compile(r"sha256-[0-9a-f]{64}\.(?:sig|att|sbom)")


def is_cosign_tag(tag: str) -> bool:
    """A tag cosign's scheme names (``sha256-<hex>.sig``, ``.att``, ``.sbom``): no version."""
    return _COSIGN_TAG.fullmatch(tag) is not None


def sig_tag(digest: str) -> str:
    """cosign's tag of the signature of ``digest``: ``sha256-<hex>.sig``."""
    return digest.replace(":", "-") + ".sig"


def att_tag(digest: str) -> str:
    """cosign's tag of the attestations of ``digest``: ``sha256-<hex>.att``."""
    return digest.replace(":", "-") + ".att"


def simple_signing_payload(docker_reference: str, digest: str) -> bytes:
    """The payload cosign signs for a manifest digest (compact JSON)."""
    return canonical(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": COSIGN_TYPE,
            },
            "optional": None,
        }
    )


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what a DSSE signature signs."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


@dataclass(frozen=True)
class ArtifactBlob:
    """One blob of a signature or attestation manifest, with its descriptor."""

    data: bytes
    descriptor: dict[str, Any]


@dataclass(frozen=True)
class SignatureArtifact:
    """A cosign-layout manifest (``.sig`` or ``.att``) and the blobs it references."""

    tag: str
    manifest_bytes: bytes
    blobs: tuple[ArtifactBlob, ...]

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest_bytes)


def cosign_layer(data: bytes, media_type: str, annotations: dict[str, str]) -> ArtifactBlob:
    """One layer of a cosign manifest: the blob and its descriptor."""
    descriptor = {
        "mediaType": media_type,
        "size": len(data),
        "digest": sha256_digest(data),
        "annotations": annotations,
    }
    return ArtifactBlob(data, descriptor)


def cosign_manifest(tag: str, layers: Sequence[ArtifactBlob]) -> SignatureArtifact:
    """The manifest cosign writes: an OCI image config whose ``rootfs.diff_ids`` name every
    layer (cosign's layers are uncompressed: a diff_id is the layer's digest), and the
    layers in order. ``blobs`` is the config, then the layers."""
    config = canonical(
        {
            "architecture": "",
            "config": {},
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"} for _ in layers],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [b.descriptor["digest"] for b in layers]},
        }
    )
    config_desc = {
        "mediaType": OCI_CONFIG_MEDIA_TYPE,
        "size": len(config),
        "digest": sha256_digest(config),
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": [b.descriptor for b in layers],
    }
    return SignatureArtifact(tag, canonical(manifest), (ArtifactBlob(config, config_desc), *layers))


def require_crypto() -> None:
    """Raise a precise error if ``cryptography`` (the ``signing`` extra) is not installed."""
    try:
        import cryptography  # noqa: F401
    except ImportError:
        raise ArtifactError(
            "signatures need the cryptography package: pip install 'ajour[signing]'"
        ) from None


class SigningKey:
    """A private key read from a PEM file. ``repr`` and errors never show its bytes."""

    def __init__(self, path: Path, password: str = "") -> None:
        require_crypto()
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.path = path
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ArtifactError(
                f"signing key {path}: cannot read it ({exc.strerror}); expected {KEY_HINT}"
            ) from None
        try:
            key = load_pem_private_key(pem, password.encode() or None)
        except (ValueError, TypeError) as exc:
            why = "it is encrypted" if "encrypted" in str(exc).lower() else "it is not one"
            raise ArtifactError(f"signing key {path}: {why}; expected {KEY_HINT}") from None
        except Exception:  # cryptography's UnsupportedAlgorithm and the like
            raise ArtifactError(f"signing key {path}: unsupported; expected {KEY_HINT}") from None
        if isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP256R1):
            self._ec: ec.EllipticCurvePrivateKey | None = key
            self._ed: ed25519.Ed25519PrivateKey | None = None
        elif isinstance(key, ed25519.Ed25519PrivateKey):
            self._ec, self._ed = None, key
        else:
            raise ArtifactError(
                f"signing key {path}: a {type(key).__name__.removeprefix('_')} key; expected"
                f" {KEY_HINT}"
            )

    def __repr__(self) -> str:
        return f"SigningKey({str(self.path)!r})"

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        if self._ec is not None:
            return self._ec.sign(data, ec.ECDSA(hashes.SHA256()))
        assert self._ed is not None
        return self._ed.sign(data)

    def public_pem(self) -> bytes:
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        key = self._ec or self._ed
        assert key is not None
        return key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


class PublicKey:
    """A public key read from a PEM (PKIX) file: what ``cosign verify --key`` takes."""

    def __init__(self, pem: bytes, where: str) -> None:
        require_crypto()
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        self.where = where
        try:
            key = load_pem_public_key(pem)
        except Exception:
            raise ArtifactError(
                f"{where} is not a PEM public key (-----BEGIN PUBLIC KEY-----, ECDSA P-256 or"
                " ed25519); export it with `openssl pkey -in sign.key -pubout`"
            ) from None
        if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
            self._key: ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey = key
        elif isinstance(key, ed25519.Ed25519PublicKey):
            self._key = key
        else:
            raise ArtifactError(f"{where}: expected an ECDSA P-256 or ed25519 public key")

    @classmethod
    def from_file(cls, path: Path) -> PublicKey:
        try:
            return cls(path.read_bytes(), str(path))
        except OSError as exc:
            raise ArtifactError(f"public key {path}: cannot read it ({exc.strerror})") from None

    def verifies(self, signature: bytes, data: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        try:
            if isinstance(self._key, ec.EllipticCurvePublicKey):
                self._key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
            else:
                self._key.verify(signature, data)
        except (InvalidSignature, ValueError):
            return False
        return True


def signature_layer(key: SigningKey, docker_reference: str, digest: str) -> ArtifactBlob:
    """The ``.sig`` layer of ``digest``: the simple-signing payload, its signature annotated."""
    payload = simple_signing_payload(docker_reference, digest)
    signature = base64.b64encode(key.sign(payload)).decode()
    return cosign_layer(payload, SIMPLESIGNING_MEDIA_TYPE, {SIGNATURE_ANNOTATION: signature})


def signature_artifact(key: SigningKey, docker_reference: str, digest: str) -> SignatureArtifact:
    """A ``.sig`` manifest of ``digest`` (in the repository ``docker_reference``) holding
    only this key's signature."""
    return cosign_manifest(sig_tag(digest), (signature_layer(key, docker_reference, digest),))


def dsse_envelope(key: SigningKey, statement: dict[str, Any]) -> bytes:
    """``statement`` in a DSSE envelope signed with ``key`` (JSON bytes)."""
    payload = json.dumps(statement, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(pae(IN_TOTO_PAYLOAD_TYPE, payload))
    return canonical(
        {
            "payloadType": IN_TOTO_PAYLOAD_TYPE,
            "payload": base64.b64encode(payload).decode(),
            "signatures": [{"keyid": "", "sig": base64.b64encode(signature).decode()}],
        }
    )


def attestation_layer(key: SigningKey, statement: dict[str, Any]) -> ArtifactBlob:
    """An ``.att`` layer: ``statement`` in a signed DSSE envelope, annotated with its
    predicate type."""
    envelope = dsse_envelope(key, statement)
    predicate = str(statement.get("predicateType", ""))
    return cosign_layer(envelope, DSSE_MEDIA_TYPE, {PREDICATE_TYPE_ANNOTATION: predicate})


def attestation_artifact(
    key: SigningKey, digest: str, statement: dict[str, Any]
) -> SignatureArtifact:
    """An ``.att`` manifest of ``digest`` holding only this attestation."""
    return cosign_manifest(att_tag(digest), (attestation_layer(key, statement),))
