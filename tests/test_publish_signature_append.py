"""A second signer adds its signature to the ``.sig``/``.att`` manifests, as cosign does.

Real registry (``docker-registry``) and real OCI layouts, real keys; the worker's sources
(``OciSource``, ``LayoutSource``) with their trust check decide what is served, and each
layer is verified here with ``cryptography`` directly.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.layout_writer import layout_writer
from ajour_build.core.artifact.reference import parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.artifact.signature import (
    att_tag,
    cosign_manifest,
    sig_tag,
    signature_artifact,
    signature_layer,
)
from ajour_build.core.artifact.trust import MAX_LAYERS
from ajour_build.core.errors import PublishError
from delivery.cache import TtlCache
from delivery.sources.layout import LayoutSource
from delivery.sources.oci import OciSource
from delivery.sources.trust import Verifier, load_policy
from tests.loopback_http import running
from tests.registry import Registry, run_registry
from tests.test_delivery_trust import (
    BUILDER,
    REPO,
    keys,
    publish,
    push_blobs,
    push_manifest,
    refused,
)

SIG = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def signed_by(layer: dict[str, Any], data: bytes, pub: Path) -> bool:
    """cosign's check of one ``.sig`` layer, or of a DSSE envelope's signature, by hand."""
    key = load_pem_public_key(pub.read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    if layer["mediaType"] == SIG:
        signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
        signed = data
    else:
        envelope = json.loads(data)
        body, kind = base64.b64decode(envelope["payload"]), b"application/vnd.in-toto+json"
        signature = base64.b64decode(envelope["signatures"][0]["sig"])
        signed = b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(body), body)
    try:
        key.verify(signature, signed, ec.ECDSA(hashes.SHA256()))
    except Exception:
        return False
    return True


def check_shape(manifest: dict[str, Any], config: bytes) -> None:
    """cosign's image config names every layer, in order."""
    doc = json.loads(config)
    assert doc["rootfs"]["diff_ids"] == [layer["digest"] for layer in manifest["layers"]]
    assert len(doc["history"]) == len(manifest["layers"])


def test_registry_two_keys_sign_one_digest_and_either_is_trusted(tmp_path: Path) -> None:
    ci, ci_pub = keys(tmp_path, "ci")
    release_key, release_pub = keys(tmp_path, "release")
    _, other_pub = keys(tmp_path, "other")
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/app:latest"
        reader = RegistryReader(registry.host)
        base = f"http://{registry.host}/v2/fw/app"

        def source(pub: Path) -> OciSource:
            policy = load_policy("app", (str(pub),), BUILDER, REPO)
            return OciSource(reader, parse_oci(url), TtlCache(30), verifier=Verifier(policy))

        def manifest(tag: str) -> tuple[str, dict[str, Any]]:
            got = httpx.get(f"{base}/manifests/{tag}", headers={"Accept": ACCEPT}, timeout=10)
            assert got.status_code == 200, got.text
            return got.headers["Docker-Content-Digest"], got.json()

        def blob(digest: str) -> bytes:
            return httpx.get(f"{base}/blobs/{digest}", timeout=10, follow_redirects=True).content

        digest = publish(tmp_path, url, "1.0", b"A" * 3000, ci)
        assert source(ci_pub).target().version == b"1.0"
        # the release key signs the digest CI signed (same version, same bytes)
        assert publish(tmp_path, url, "1.0", b"A" * 3000, release_key) == digest
        assert source(ci_pub).target().version == b"1.0", "CI's signature was lost"
        assert source(release_pub).target().version == b"1.0"
        assert refused(source(other_pub)) == "bad_signature"

        sig_digest, sig = manifest(sig_tag(digest))
        assert [layer["mediaType"] for layer in sig["layers"]] == [SIG, SIG]
        first, second = (blob(layer["digest"]) for layer in sig["layers"])
        assert first == second, "both sign the same simple-signing payload"
        assert signed_by(sig["layers"][0], first, ci_pub)
        assert signed_by(sig["layers"][1], second, release_pub)
        check_shape(sig, blob(sig["config"]["digest"]))
        _, att = manifest(att_tag(digest))
        envelopes = [blob(layer["digest"]) for layer in att["layers"]]
        assert signed_by(att["layers"][0], envelopes[0], ci_pub)
        assert not signed_by(att["layers"][1], envelopes[1], ci_pub)
        assert signed_by(att["layers"][1], envelopes[1], release_pub)
        check_shape(att, blob(att["config"]["digest"]))

        # CI publishes again: its signature is there already (nothing written), its
        # provenance replaces its own earlier one, the release key's stays
        assert publish(tmp_path, url, "1.0", b"A" * 3000, ci) == digest
        assert manifest(sig_tag(digest)) == (sig_digest, sig)
        _, again = manifest(att_tag(digest))
        assert len(again["layers"]) == 2
        assert again["layers"][0] == att["layers"][1], "the release key's provenance stays"
        assert again["layers"][1] != att["layers"][0], "CI's provenance is the new one"
        assert signed_by(again["layers"][1], blob(again["layers"][1]["digest"]), ci_pub)
        assert source(ci_pub).target().version == b"1.0"
        assert source(release_pub).target().version == b"1.0"


def test_layout_appends_dedupes_replaces_and_keeps_the_newest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ci, ci_pub = keys(tmp_path, "ci")
    release_key, release_pub = keys(tmp_path, "release")
    root = tmp_path / "oci" / "fw" / "app"
    url = f"oci-layout://{root}:latest"
    store = LayoutStore(root)

    def source(pub: Path, builder: str = BUILDER) -> LayoutSource:
        policy = load_policy("app", (str(pub),), builder)
        return LayoutSource(LayoutStore(root), "latest", recheck=0.0, verifier=Verifier(policy))

    def manifest(tag: str) -> tuple[str, dict[str, Any]]:
        body, digest = store.manifest(tag)
        return digest, json.loads(body)

    digest = publish(tmp_path, url, "1.0", b"A" * 3000, ci)
    publish(tmp_path, url, "1.0", b"A" * 3000, release_key)
    assert source(ci_pub).target().version == b"1.0"
    assert source(release_pub).target().version == b"1.0"
    sig_digest, sig = manifest(sig_tag(digest))
    payloads = [store.read_blob(layer["digest"]) for layer in sig["layers"]]
    assert signed_by(sig["layers"][0], payloads[0], ci_pub)
    assert not signed_by(sig["layers"][1], payloads[1], ci_pub)
    assert signed_by(sig["layers"][1], payloads[1], release_pub)
    check_shape(sig, store.read_blob(sig["config"]["digest"]))
    _, att = manifest(att_tag(digest))

    publish(tmp_path, url, "1.0", b"A" * 3000, release_key)  # the same key again
    assert manifest(sig_tag(digest)) == (sig_digest, sig), "a duplicate signature was added"
    _, again = manifest(att_tag(digest))
    assert again["layers"][0] == att["layers"][0] and again["layers"][1] != att["layers"][1]
    assert len(again["layers"]) == 2

    # a .sig already holding MAX_LAYERS signatures (cosign, other keys): the oldest is left
    # out, ours is the last, and every one kept still verifies
    many = [keys(tmp_path, f"k{i}") for i in range(MAX_LAYERS)]
    digest = publish(tmp_path, url, "2.0", b"B" * 3000, None)
    layers = [signature_layer(s.key, str(root), digest) for s, _ in many]
    full = cosign_manifest(sig_tag(digest), layers)
    with layout_writer(root) as writer:
        for item in full.blobs:
            writer.put_bytes(item.data)
        writer.tag(full.tag, writer.put_bytes(full.manifest_bytes), len(full.manifest_bytes))
    assert source(many[0][1], "").target().version == b"2.0"
    with caplog.at_level(logging.WARNING, logger="ajour_build.publish.cosign_merge"):
        publish(tmp_path, url, "2.0", b"B" * 3000, ci)
    assert f"left out the oldest 1 so that ours is among the {MAX_LAYERS}" in caplog.text
    _, sig = manifest(sig_tag(digest))
    assert len(sig["layers"]) == MAX_LAYERS
    assert sig["layers"][:-1] == [b.descriptor for b in layers[1:]]
    assert source(ci_pub).target().version == b"2.0"
    assert source(many[1][1], "").target().version == b"2.0"
    assert refused(source(many[0][1], "")) == "bad_signature"


def test_layout_refuses_to_write_over_a_signature_manifest_it_cannot_read(
    tmp_path: Path,
) -> None:
    ci, ci_pub = keys(tmp_path, "ci")
    release_key, _ = keys(tmp_path, "release")
    root = tmp_path / "oci" / "fw" / "app"
    url = f"oci-layout://{root}:latest"
    store = LayoutStore(root)
    digest = publish(tmp_path, url, "1.0", b"A" * 3000, ci)
    sig = sig_tag(digest)
    _, sig_manifest = store.manifest(sig)
    layer = json.loads(store.read_blob(sig_manifest))["layers"][0]["digest"]

    # the layer's blob is gone: refused, naming the tag, the blob and the fix
    store.blob_path(layer).unlink()
    with pytest.raises(PublishError) as caught:
        publish(tmp_path, url, "1.0", b"A" * 3000, release_key)
    message = str(caught.value)
    assert f"{root}: the tag {sig} holds no cosign manifest that can be read" in message
    assert f"the blob {layer} of layer 0 is missing" in message
    assert f"delete the tag (remove its entry from {root}/index.json)" in message
    assert store.resolve(sig) == sig_manifest, "the tag was written over"

    # junk, and an index, at the tags of other signed versions: refused, the tags untouched
    for n, (which, junk, why) in enumerate(
        (
            (sig_tag, b"not json", "manifest is not JSON"),
            (att_tag, b'{"schemaVersion": 2, "layers": [{"digest": 1}]}', "layer 0 is no"),
            (att_tag, b'{"schemaVersion": 2, "layers": {}}', "not a list"),
            (sig_tag, b'{"mediaType": "application/vnd.oci.image.index.v1+json"}', "an index"),
        )
    ):
        version, content = f"2.{n}", bytes([n]) * 3000
        tag = which(publish(tmp_path, url, version, content, ci))
        with layout_writer(root) as writer:
            junk_digest = writer.put_bytes(junk)
            writer.tag(tag, junk_digest, len(junk))
        with pytest.raises(PublishError, match=rf"the tag {tag} holds no cosign manifest") as bad:
            publish(tmp_path, url, version, content, release_key)
        assert why in str(bad.value)
        assert store.resolve(tag) == junk_digest
    # the manifest blob the .sig tag names is gone
    tag = sig_tag(publish(tmp_path, url, "3.0", b"C" * 3000, ci))
    gone = store.resolve(tag)
    assert gone is not None
    store.blob_path(gone).unlink()
    with pytest.raises(PublishError, match=rf"the tag {tag} .*its manifest blob is missing"):
        publish(tmp_path, url, "3.0", b"C" * 3000, release_key)
    assert store.resolve(tag) == gone
    # once the broken tags are deleted, the publish signs again
    with layout_writer(root) as writer:
        entries = [m for m in store.index()["manifests"] if m["annotations"][
            "org.opencontainers.image.ref.name"] not in (sig, att_tag(digest))]  # fmt: skip
        (root / "index.json").write_bytes(store.index_bytes(entries))
    publish(tmp_path, url, "1.0", b"A" * 3000, ci)
    policy = load_policy("app", (str(ci_pub),), BUILDER, REPO)
    assert LayoutSource(store, "latest", recheck=0.0, verifier=Verifier(policy)).target()


def test_registry_refuses_to_write_over_a_signature_manifest_it_cannot_read(
    tmp_path: Path,
) -> None:
    ci, _ = keys(tmp_path, "ci")
    release_key, _ = keys(tmp_path, "release")
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/app:latest"
        base = f"http://{registry.host}/v2/fw/app"
        digest = publish(tmp_path, url, "1.0", b"A" * 3000, ci)
        sig = sig_tag(digest)
        got = httpx.get(f"{base}/manifests/{sig}", headers={"Accept": ACCEPT}, timeout=10)
        sig_digest, layer = got.headers["Docker-Content-Digest"], got.json()["layers"][0]

        # the layer's blob deleted from the repository (the registry allows deletes)
        assert httpx.delete(f"{base}/blobs/{layer['digest']}", timeout=10).status_code == 202
        with pytest.raises(PublishError) as caught:
            publish(tmp_path, url, "1.0", b"A" * 3000, release_key)
        message = str(caught.value)
        assert f"{registry.host}/fw/app: the tag {sig} holds no cosign manifest" in message
        assert f"the blob {layer['digest']} of layer 0 is missing" in message
        assert f"`oras manifest delete {registry.host}/fw/app:{sig}`" in message
        head = httpx.head(f"{base}/manifests/{sig}", headers={"Accept": ACCEPT}, timeout=10)
        assert head.headers["Docker-Content-Digest"] == sig_digest, "the tag was written over"

        # an image index at the tag: no manifest a signature can be added to
        index_type = "application/vnd.oci.image.index.v1+json"
        index = json.dumps({"schemaVersion": 2, "mediaType": index_type, "manifests": []})
        put = httpx.put(
            f"{base}/manifests/{sig}",
            content=index,
            headers={"Content-Type": index_type},
            timeout=10,
        )
        assert put.status_code == 201, put.text
        with pytest.raises(PublishError, match=rf"the tag {sig} holds no cosign manifest .*index"):
            publish(tmp_path, url, "1.0", b"A" * 3000, release_key)


@contextmanager
def racing_front(registry: Registry, race: Callable[[str, str], None]) -> Iterator[str]:
    """A forwarding front for ``registry`` (its host:port): after forwarding each PUT of a
    ``.sig`` manifest, and before answering it, it calls ``race(front, tag)``: another
    publisher writing the tag at that moment, straight to the registry."""
    target = f"http://{registry.host}"
    client = httpx.Client(base_url=target, timeout=10)

    class Front(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            skip = {"host", "content-length", "connection", "accept-encoding"}
            headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
            got = client.request(self.command, self.path, content=body, headers=headers)
            front = str(self.headers.get("Host", ""))  # the front, as the publisher calls it
            tag = self.path.rsplit("/manifests/", 1)[-1]
            if self.command == "PUT" and "/manifests/" in self.path and tag.endswith(".sig"):
                race(front, tag)
            self.send_response(got.status_code)
            for key, value in got.headers.items():
                if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                    self.send_header(key, value.replace(registry.host, front))
            self.send_header("Content-Length", str(len(got.content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(got.content)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Front)
    server.daemon_threads = True
    try:
        with running(server) as port:
            yield f"127.0.0.1:{port}"
    finally:
        client.close()


def test_registry_a_signature_written_over_by_a_racing_publisher_is_merged_again(
    tmp_path: Path,
) -> None:
    """Two publishers sign one digest at once: each read the tag before the other wrote it,
    so the second write holds only the second key. The first reads the tag back after its
    PUT, finds its layer gone, and merges again: both signatures stay."""
    ours, ours_pub = keys(tmp_path, "ours")
    theirs, theirs_pub = keys(tmp_path, "theirs")
    raced: list[str] = []

    def race(front: str, tag: str) -> None:
        if raced and not always:
            return
        raced.append(tag)
        digest = "sha256:" + tag.removeprefix("sha256-").removesuffix(".sig")
        made = signature_artifact(theirs.key, f"{front}/fw/app", digest)
        push_blobs(registry, "fw/app", made)
        push_manifest(registry, "fw/app", made)

    with run_registry(tmp_path / "registry") as registry:
        with racing_front(registry, race) as front:
            always = False
            url = f"oci://{front}/fw/app:latest"
            digest = publish(tmp_path, url, "1.0", b"A" * 3000, ours)
            assert raced == [sig_tag(digest)]
            reader = RegistryReader(registry.host)
            direct = f"oci://{registry.host}/fw/app:latest"
            for pub in (ours_pub, theirs_pub):
                policy = load_policy("app", (str(pub),))
                verifier = Verifier(policy)
                source = OciSource(reader, parse_oci(direct), TtlCache(30), verifier=verifier)
                assert source.target().version == b"1.0"

            # a publisher that keeps losing the race says so, rather than reporting success
            always, raced[:] = True, []
            with pytest.raises(PublishError, match=r"lost our signature twice .* publish again"):
                publish(tmp_path, url, "1.1", b"B" * 3000, ours)
            assert len(raced) == 2
