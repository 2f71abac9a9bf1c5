"""Whether a firmware manifest may be served: its signature, and its provenance, checked
against a trust policy (docs/delivery.md, "Signed firmware only").

``check`` reads the ``.sig`` (and, if the policy names a builder or a source, the ``.att``)
manifest of a digest through two functions, so a registry and a layout directory share it:
``lookup(tag)`` gives a tag's manifest bytes (None: no such tag), ``fetch(descriptor)`` a
blob verified against its digest. The digest is signed when one layer of the ``.sig``
manifest is a simple-signing payload naming exactly that digest, with a signature one of the
policy's keys verifies. The provenance matches when an ``.att`` layer is a DSSE envelope one
of the keys verifies, holding an in-toto statement about that digest with an SLSA v1
predicate whose ``runDetails.builder.id`` is the policy's builder and whose source URI is
under the policy's source.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from ajour_build.core.artifact.format import Descriptor, parse_manifest
from ajour_build.core.artifact.signature import (
    COSIGN_TYPE,
    DSSE_MEDIA_TYPE,
    IN_TOTO_PAYLOAD_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    SLSA_PROVENANCE,
    PublicKey,
    att_tag,
    pae,
    sig_tag,
)
from ajour_build.core.errors import ArtifactError

Reason = Literal["unsigned", "bad_signature", "provenance_mismatch"]
REASONS: tuple[Reason, ...] = ("unsigned", "bad_signature", "provenance_mismatch")
Lookup = Callable[[str], bytes | None]
Fetch = Callable[[Descriptor], bytes]
MAX_LAYERS = 16  # signature layers looked at per manifest


class TrustError(ArtifactError):
    """The digest is not to be served: ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class TrustPolicy:
    """Keys whose signatures are trusted, and what the provenance must say (empty: any)."""

    keys: tuple[PublicKey, ...]
    builder: str = ""  # runDetails.builder.id, exactly
    source: str = ""  # the source URI: equal, or under it (a path below)

    @property
    def wants_provenance(self) -> bool:
        return bool(self.builder or self.source)


def check(policy: TrustPolicy, digest: str, lookup: Lookup, fetch: Fetch) -> None:
    """Return if ``digest`` is signed (and its provenance matches); raise ``TrustError``
    saying why not, or ``ArtifactError`` if the store cannot be read."""
    body = lookup(sig_tag(digest))
    if body is None:
        raise TrustError(
            "unsigned", f"{digest} has no signature (no tag {sig_tag(digest)}); sign it at publish"
        )
    problems = [_signature_problem(policy, digest, layer, fetch) for layer in _layers(body)]
    if not problems:
        raise TrustError("unsigned", f"the signature manifest {sig_tag(digest)} has no layers")
    if None not in problems:
        raise TrustError("bad_signature", f"{digest}: no valid signature: {problems[0]}")
    if policy.wants_provenance:
        _provenance(policy, digest, lookup, fetch)


def _layers(body: bytes) -> list[Descriptor]:
    """The layers of a ``.sig`` or ``.att`` manifest; a malformed one signs nothing."""
    try:
        raw = parse_manifest(body).get("layers") or []
        if not isinstance(raw, list):
            raise ArtifactError("its layers are not a list")
        return [Descriptor.model_validate(item) for item in raw[:MAX_LAYERS]]
    except (ArtifactError, ValidationError) as exc:
        raise TrustError("bad_signature", f"a malformed signature manifest: {exc}") from None


def _signature_problem(
    policy: TrustPolicy, digest: str, layer: Descriptor, fetch: Fetch
) -> str | None:
    """Why this layer does not sign ``digest`` with a trusted key (None: it does)."""
    if layer.media_type != SIMPLESIGNING_MEDIA_TYPE:
        return f"layer {layer.digest} is {layer.media_type!r}, not {SIMPLESIGNING_MEDIA_TYPE}"
    encoded = layer.annotations.get(SIGNATURE_ANNOTATION, "")
    try:
        signature = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return f"its {SIGNATURE_ANNOTATION} annotation is not base64"
    if not signature:
        return f"it has no {SIGNATURE_ANNOTATION} annotation"
    payload = fetch(layer)
    if not any(key.verifies(signature, payload) for key in policy.keys):
        return "the signature does not verify with any of the trusted keys"
    try:
        doc = json.loads(payload)
        critical = doc["critical"]
        image = {str(k).lower(): v for k, v in critical["image"].items()}
        signed, kind = image["docker-manifest-digest"], critical["type"]
    except (ValueError, KeyError, TypeError, AttributeError):
        return "the signed payload is not a simple-signing document"
    if kind != COSIGN_TYPE or signed != digest:
        return f"the signed payload names {signed!r} ({kind!r}), not {digest}"
    return None


def _provenance(policy: TrustPolicy, digest: str, lookup: Lookup, fetch: Fetch) -> None:
    body = lookup(att_tag(digest))
    if body is None:
        raise TrustError(
            "provenance_mismatch",
            f"{digest} has no provenance (no tag {att_tag(digest)}); the policy asks for one",
        )
    seen: list[str] = []
    for layer in _layers(body):
        if layer.media_type != DSSE_MEDIA_TYPE:
            continue
        statement = signed_statement(fetch(layer), policy.keys)
        if statement is None:
            continue
        mismatch = _mismatch(policy, digest, statement)
        if mismatch is None:
            return
        seen.append(mismatch)
    if not seen:
        raise TrustError(
            "bad_signature", f"{att_tag(digest)}: no DSSE envelope verifies with a trusted key"
        )
    raise TrustError("provenance_mismatch", f"{digest}: {seen[0]}")


def signed_statement(envelope: bytes, keys: Sequence[PublicKey]) -> dict[str, Any] | None:
    """The in-toto statement of a DSSE ``envelope`` if one of ``keys`` signed it, else None
    (for any envelope that is malformed, of another payload type, or signed by others)."""
    try:
        doc = json.loads(envelope)
        payload = base64.b64decode(doc["payload"], validate=True)
        signatures = [base64.b64decode(s["sig"], validate=True) for s in doc["signatures"]]
        if doc["payloadType"] != IN_TOTO_PAYLOAD_TYPE:
            return None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None
    signed = pae(IN_TOTO_PAYLOAD_TYPE, payload)
    if not any(key.verifies(sig, signed) for sig in signatures for key in keys):
        return None
    try:
        statement = json.loads(payload)
    except ValueError:
        return None
    return statement if isinstance(statement, dict) else None


def _mismatch(policy: TrustPolicy, digest: str, statement: dict[str, Any]) -> str | None:
    """What in the statement disagrees with the policy (None: nothing)."""
    hexdigest = digest.removeprefix("sha256:")
    subjects = statement.get("subject") or []
    if not any(
        isinstance(s, dict) and (s.get("digest") or {}).get("sha256") == hexdigest for s in subjects
    ):
        return "the provenance is about another artifact (its subject is not this digest)"
    if statement.get("predicateType") != SLSA_PROVENANCE:
        return f"the provenance is {statement.get('predicateType')!r}, not {SLSA_PROVENANCE}"
    predicate = statement.get("predicate") or {}
    builder = _path(predicate, "runDetails", "builder", "id")
    source = _path(predicate, "buildDefinition", "externalParameters", "source", "uri")
    if policy.builder and builder != policy.builder:
        return f"built by {builder!r}, the policy trusts builder {policy.builder!r}"
    if policy.source and not under(source, policy.source):
        return f"built from {source!r}, the policy trusts sources under {policy.source!r}"
    return None


def under(uri: str, prefix: str) -> bool:
    """``uri`` is ``prefix``, or below it (``prefix`` ending in ``/``, or ``prefix/…``)."""
    if not uri:
        return False
    if uri == prefix or (prefix.endswith("/") and uri.startswith(prefix)):
        return True
    return uri.startswith(prefix + "/")


def _path(doc: Any, *keys: str) -> str:
    for key in keys:
        doc = doc.get(key) if isinstance(doc, dict) else None
    return doc if isinstance(doc, str) else ""
