"""Adding a signature or an attestation to the cosign manifest a tag already holds.

cosign appends: a second key's signature of a digest becomes a second layer of
``sha256-<hex>.sig``, next to the first, so a verifier trusting either key accepts the
digest. ``merged`` does the same for a publisher, given the manifest the tag holds now
(``lookup``) and its layers' blobs (``fetch``):

* ``.sig``: the layers there are kept, in order, and ours is appended, unless one of them
  already is this key's signature of this very payload (cosign's duplicate detection:
  signing again adds nothing, and writes nothing).
* ``.att``: the layers there are kept, except this key's earlier attestations of the same
  predicate type, which ours replaces (re-publishing does not pile up provenance; other
  keys' attestations stay). cosign's ``attest`` appends, and its ``--replace`` drops every
  attestation of the predicate type, whoever signed it; dropping only our own keeps the
  other signers' provenance, which a worker's policy may be the one to ask for.
* At most ``MAX_LAYERS`` layers (what a worker reads of a manifest): the oldest are left
  out, with a warning, so the newest signature is always one a worker sees.

A tag whose manifest cannot be read (not JSON, not an image manifest, a layer no descriptor
or its blob missing) is refused with ``ArtifactError`` naming the tag and how to clear it:
writing over it would silently lose whatever signatures it was meant to hold.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass

from pydantic import ValidationError

from ajour_build.core.artifact.format import Descriptor, parse_manifest
from ajour_build.core.artifact.signature import (
    DSSE_MEDIA_TYPE,
    SIGNATURE_ANNOTATION,
    SIMPLESIGNING_MEDIA_TYPE,
    ArtifactBlob,
    PublicKey,
    SignatureArtifact,
    cosign_manifest,
)
from ajour_build.core.artifact.trust import MAX_LAYERS, signed_statement
from ajour_build.core.errors import ArtifactError

log = logging.getLogger(__name__)

Lookup = Callable[[str], bytes | None]  # a tag's manifest bytes; None: no such tag
Fetch = Callable[[Descriptor], bytes]  # a blob, verified against its digest


class MissingBlob(ArtifactError):
    """The store has no blob with this digest (``lookup`` and ``fetch`` raise it)."""


@dataclass(frozen=True)
class Merge:
    """What to write at a tag: ``artifact`` (None: the tag already holds our signature) and
    the blobs of it the store lacks (``upload``: the config and our layer)."""

    artifact: SignatureArtifact | None
    upload: tuple[ArtifactBlob, ...] = ()
    kept: int = 0  # other layers kept
    replaced: int = 0  # our earlier attestations of the same predicate type, replaced
    dropped: int = 0  # the oldest layers left out to stay within MAX_LAYERS


def merged(
    tag: str,
    ours: ArtifactBlob,
    key: PublicKey,
    lookup: Lookup,
    fetch: Fetch,
    where: tuple[str, str],
) -> Merge:
    """The manifest for ``tag`` holding the layers there now and ``ours`` (signed with the
    private half of ``key``). ``where``: the repository, and how to delete the tag there
    (for errors and logs)."""
    existing = _existing(tag, lookup, fetch, where)
    # a duplicate counts only among the layers a worker reads (the first MAX_LAYERS)
    if tag.endswith(".sig") and any(_signs(lay, ours, key) for lay in existing[:MAX_LAYERS]):
        return Merge(None, kept=len(existing))
    kept = [layer for layer in existing if not _same_attestation(layer, ours, key)]
    replaced = len(existing) - len(kept)
    dropped = max(0, len(kept) + 1 - MAX_LAYERS)
    if dropped:
        log.warning(
            "%s: %s holds %d layers; left out the oldest %d so that ours is among the %d a"
            " worker reads",
            where[0],
            tag,
            len(kept),
            dropped,
            MAX_LAYERS,
        )
    made = cosign_manifest(tag, (*kept[dropped:], ours))
    return Merge(made, (made.blobs[0], ours), len(kept) - dropped, replaced, dropped)


def holds(
    tag: str, ours: ArtifactBlob, key: PublicKey, lookup: Lookup, where: tuple[str, str]
) -> bool:
    """Whether the manifest at ``tag`` has our layer (read back after writing it)."""
    body = lookup(tag)
    if body is None:
        return False
    # every key's .sig layer has the same payload (the same digest): ours is the one whose
    # signature our key verifies
    return any(
        raw.get("digest") == ours.descriptor["digest"]
        and (
            ours.descriptor["mediaType"] != SIMPLESIGNING_MEDIA_TYPE
            or _signs(ArtifactBlob(ours.data, raw), ours, key)
        )
        for raw in _raw_layers(tag, body, where)
    )


def _existing(tag: str, lookup: Lookup, fetch: Fetch, where: tuple[str, str]) -> list[ArtifactBlob]:
    """The layers of the manifest at ``tag`` with their blobs; [] if there is no tag."""
    try:
        body = lookup(tag)
    except MissingBlob as exc:
        raise _unreadable(tag, where, f"its manifest blob is missing ({exc})") from None
    if body is None:
        return []
    layers = []
    for index, raw in enumerate(_raw_layers(tag, body, where)):
        try:
            descriptor = Descriptor.model_validate(raw)
        except ValidationError as exc:
            problem = exc.errors()[0]
            field = ".".join(map(str, problem["loc"])) or "it"
            raise _unreadable(
                tag, where, f"layer {index} is no descriptor ({field}: {problem['msg']})"
            ) from None
        try:
            data = fetch(descriptor)
        except MissingBlob:
            raise _unreadable(
                tag, where, f"the blob {descriptor.digest} of layer {index} is missing"
            ) from None
        layers.append(ArtifactBlob(data, raw))
    return layers


def _raw_layers(tag: str, body: bytes, where: tuple[str, str]) -> list[dict[str, object]]:
    try:
        manifest = parse_manifest(body)
    except ArtifactError as exc:
        raise _unreadable(tag, where, str(exc)) from None
    if "manifests" in manifest:
        kind = manifest.get("mediaType") or "no mediaType"
        raise _unreadable(tag, where, f"it is an image index ({kind}), not an image manifest")
    raw = manifest.get("layers")
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise _unreadable(tag, where, "its layers are not a list of descriptors")
    return raw


def _unreadable(tag: str, where: tuple[str, str], why: str) -> ArtifactError:
    repository, delete = where
    return ArtifactError(
        f"{repository}: the tag {tag} holds no cosign manifest that can be read ({why}); a"
        " new signature is added to those there, and writing over what cannot be read could"
        f" lose other signers' signatures. Look at it; if it is broken, delete the tag"
        f" ({delete}) and publish again"
    )


def _signs(layer: ArtifactBlob, ours: ArtifactBlob, key: PublicKey) -> bool:
    """``layer`` is ``key``'s signature of our payload (cosign's duplicate detection)."""
    desc = layer.descriptor
    if desc.get("digest") != ours.descriptor["digest"]:
        return False
    if desc.get("mediaType") != SIMPLESIGNING_MEDIA_TYPE:
        return False
    annotations = desc.get("annotations")
    encoded = annotations.get(SIGNATURE_ANNOTATION) if isinstance(annotations, dict) else None
    try:
        signature = base64.b64decode(str(encoded or ""), validate=True)
    except (binascii.Error, ValueError):
        return False
    return bool(signature) and key.verifies(signature, ours.data)


def _same_attestation(layer: ArtifactBlob, ours: ArtifactBlob, key: PublicKey) -> bool:
    """``layer`` is a DSSE envelope ``key`` signed, of the predicate type ``ours`` has."""
    if ours.descriptor["mediaType"] != DSSE_MEDIA_TYPE:
        return False
    if layer.descriptor.get("mediaType") != DSSE_MEDIA_TYPE:
        return False
    theirs, mine = signed_statement(layer.data, (key,)), signed_statement(ours.data, (key,))
    if theirs is None or mine is None:
        return False
    return theirs.get("predicateType") == mine.get("predicateType")
