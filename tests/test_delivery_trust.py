"""Delivery serves only signed firmware where an application has a trust policy.

Real registry (``docker-registry``) and real OCI layouts; the artifacts are signed by the
publishers (``ajour-build publish --sign-key``) or, for the cases a publisher cannot make
(a tag moved to other bytes), pushed with plain publishes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import generate_latest

from ajour_build.core.artifact.layout_store import LayoutStore
from ajour_build.core.artifact.layout_writer import layout_writer
from ajour_build.core.artifact.reference import parse_oci
from ajour_build.core.artifact.registry_reader import RegistryReader
from ajour_build.core.artifact.signature import SignatureArtifact, sig_tag, signature_artifact
from ajour_build.core.errors import SpecError
from ajour_build.core.fleet import load_fleet
from ajour_build.publish.destination import release
from ajour_build.publish.publisher import FirmwareArtifact, SourceInfo
from ajour_build.publish.signing import Signer, signer_from
from delivery.cache import TtlCache
from delivery.http import HttpSettings, HttpTransport
from delivery.protocol import Status, Wait, Write, decode_command, encode_status
from delivery.sources.layout import LayoutSource
from delivery.sources.oci import OciSource
from delivery.sources.trust import RETRY_S, Unverified, Verifier, load_policy
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from delivery.worker_config import load_settings
from tests.http_wire import EVENTS_TOKEN, STATUS_TOKEN
from tests.registry import Registry, free_port, run_registry
from tests.test_publish_signing import ec_key, public_pem

BUILDER = "https://ci.example.com/builders/fw@v1"
REPO = "https://git.example.com/acme/fw.git"


def keys(tmp: Path, name: str) -> tuple[Signer, Path]:
    """A signer and the file of its public key."""
    private, public = ec_key(tmp, f"{name}.key")
    signer = signer_from({}, private, BUILDER)
    assert signer is not None
    return signer, public_pem(tmp / f"{name}.pub", public)


def publish(tmp: Path, url: str, version: str, content: bytes, signer: Signer | None) -> str:
    path = tmp / f"fw-{version}.bin"
    path.write_bytes(content)
    firmware = FirmwareArtifact(path, version, SourceInfo(REPO, "c" * 40, ""))
    return release(firmware, url, {}, signer=signer).published.digest


def refused(source: OciSource | LayoutSource) -> str:
    with pytest.raises(Unverified) as caught:
        source.target()
    return caught.value.reason


def test_registry_source_serves_only_what_a_trusted_key_signed(tmp_path: Path) -> None:
    signer, pub = keys(tmp_path, "ours")
    other, other_pub = keys(tmp_path, "theirs")
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/app:latest"
        reader = RegistryReader(registry.host)

        def source(policy_keys: tuple[Path, ...], builder: str = "", src: str = "") -> OciSource:
            policy = load_policy("app", tuple(map(str, policy_keys)), builder, src)
            return OciSource(reader, parse_oci(url), TtlCache(30), verifier=Verifier(policy))

        publish(tmp_path, url, "1.0", b"A" * 3000, signer)
        assert source((pub,)).target().version == b"1.0"
        assert source((other_pub, pub)).target().version == b"1.0", "any listed key will do"
        assert source((pub,), BUILDER, REPO).target().version == b"1.0"
        assert source((pub,), src="https://git.example.com/acme").target().version == b"1.0"
        assert refused(source((other_pub,))) == "bad_signature"
        assert refused(source((pub,), builder="https://evil.example.com/b")) == (
            "provenance_mismatch"
        )
        assert refused(source((pub,), src="https://git.example.com/acme-evil")) == (
            "provenance_mismatch"
        )

        # the tag moves to other bytes, unsigned: the new digest has no signature
        serving = source((pub,))
        assert serving.target().version == b"1.0"
        publish(tmp_path, url, "1.1", b"B" * 3000, None)
        serving.invalidate()
        assert refused(serving) == "unsigned"
        # signed with a key the policy does not list
        publish(tmp_path, url, "1.2", b"C" * 3000, other)
        serving.invalidate()
        assert refused(serving) == "bad_signature"
        # signed again with ours: served (the publish event drops the remembered refusals)
        publish(tmp_path, url, "1.3", b"D" * 3000, signer)
        serving.invalidate()
        assert serving.target().version == b"1.3"
        # verified once per digest: the registry gone, the source still answers from memory
        registry.stop()
        for _ in range(100):
            assert serving.target().version == b"1.3"


def test_layout_source_reads_the_signature_tags_from_the_index(tmp_path: Path) -> None:
    signer, pub = keys(tmp_path, "ours")
    other, _ = keys(tmp_path, "theirs")
    root = tmp_path / "oci" / "fw" / "app"
    url = f"oci-layout://{root}:latest"
    policy = load_policy("app", (str(pub),), BUILDER, REPO)
    source = LayoutSource(LayoutStore(root), "latest", recheck=0.0, verifier=Verifier(policy))
    publish(tmp_path, url, "1.0", b"A" * 3000, None)
    assert refused(source) == "unsigned"
    publish(tmp_path, url, "1.1", b"B" * 3000, other)
    assert refused(source) == "bad_signature"
    publish(tmp_path, url, "1.2", b"C" * 3000, signer)
    assert source.target().version == b"1.2"  # index.json changed: looked at again
    wrong = Signer(signer.key, "https://elsewhere.example.com/builder")
    publish(tmp_path, url, "1.3", b"D" * 3000, wrong)
    assert refused(source) == "provenance_mismatch"
    # a .sig that is no manifest, or whose layer is no descriptor: refused, never a crash
    store = LayoutStore(root)
    digest = store.resolve("latest")
    assert digest is not None
    for junk in (b"not json", b'{"schemaVersion": 2, "layers": [{"digest": 1}]}'):
        with layout_writer(root) as writer:
            writer.tag(sig_tag(digest), writer.put_bytes(junk), len(junk))
        assert refused(source) == "bad_signature"


FLEET = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
---
kind: Application
metadata: {name: open}
spec: {firmware: {container: {image: fw/app:latest}}}
---
kind: Application
metadata: {name: files}
spec: {firmware: {file: {name: fw}}}
---
metadata: {name: dev0, application: app}
---
metadata: {name: dev0, application: open}
---
metadata: {name: dev0, application: files}
"""


def test_the_worker_answers_wait_and_says_why(tmp_path: Path) -> None:
    signer, pub = keys(tmp_path, "ours")
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    (tmp_path / "files").mkdir()
    layouts = tmp_path / "oci"
    publish(tmp_path, f"oci-layout://{layouts / 'fw' / 'app'}:latest", "1.0", b"A" * 3000, None)
    policy = load_policy("app", (str(pub),))
    trust = {"app": policy, "files": policy}
    targets = Targets(load_fleet([tmp_path / "fleet"]), f"oci-layout://{layouts}",
                      tmp_path / "files", trust=trust)  # fmt: skip
    worker = Worker(targets, StatusStore())
    status = encode_status(Status(b"0.9", 512))

    def command(app: str) -> object:
        reply = worker.handle(app, "dev0", status)
        assert reply is not None
        return decode_command(reply)

    assert isinstance(command("app"), Wait)
    assert isinstance(command("open"), Write), "an application without a policy is served"
    assert isinstance(command("files"), Wait), "file firmware has no signatures to check"
    assert worker.store is not None
    row = worker.store.get("app", "dev0")
    assert row is not None and row.state == "Failed" and "has no signature" in row.detail
    files = worker.store.get("files", "dev0")
    assert files is not None and "carries no signatures" in files.detail
    metrics = generate_latest(worker.metrics).decode()
    assert 'ajour_delivery_unverified_total{reason="unsigned"} 2.0' in metrics
    assert 'ajour_delivery_unverified_total{reason="bad_signature"} 0.0' in metrics

    publish(tmp_path, f"oci-layout://{layouts / 'fw' / 'app'}:latest", "1.1", b"B" * 3000, signer)
    targets.invalidate()
    assert isinstance(command("app"), Write)


def test_the_trust_section_is_checked(tmp_path: Path) -> None:
    config = tmp_path / "ajour.yaml"
    config.write_text("delivery:\n  trust:\n    app:\n      keys: []\n")
    with pytest.raises(SpecError, match=r"delivery\.trust\.app\.keys"):
        load_settings(config, [], {})
    config.write_text(f"delivery:\n  trust:\n    app:\n      keys: [{tmp_path}/none.pub]\n")
    found = load_settings(config, [], {}).delivery.trust["app"]
    with pytest.raises(Exception, match=r"delivery\.trust\.app: public key .*none\.pub"):
        load_policy("app", found.keys)
    (tmp_path / "bad.pub").write_text("not a key")
    with pytest.raises(Exception, match=r"is not a PEM public key"):
        load_policy("app", (str(tmp_path / "bad.pub"),))


LATE = """\
kind: Application
metadata: {name: app}
spec: {firmware: {container: {image: fw/app:latest}}}
---
metadata: {name: dev0, application: app}
---
metadata: {name: beta0, application: app}
spec: {firmware: {container: {image: fw/beta:latest}}}
"""


def push_blobs(registry: Registry, repository: str, made: SignatureArtifact) -> None:
    """Upload a signature's blobs as cosign does, before its manifest (distribution's API)."""
    with httpx.Client(base_url=f"http://{registry.host}", timeout=10) as client:
        for blob in made.blobs:
            started = client.post(f"/v2/{repository}/blobs/uploads/")
            location = started.headers["Location"]
            joiner = "&" if "?" in location else "?"
            done = client.put(
                f"{location}{joiner}digest={blob.descriptor['digest']}", content=blob.data
            )
            assert done.status_code == 201, done.text


def push_manifest(registry: Registry, repository: str, made: SignatureArtifact) -> None:
    media_type = json.loads(made.manifest_bytes)["mediaType"]
    put = httpx.put(
        f"http://{registry.host}/v2/{repository}/manifests/{made.tag}",
        content=made.manifest_bytes,
        headers={"Content-Type": media_type},
        timeout=10,
    )
    assert put.status_code == 201, put.text


def events(worker: Worker) -> int:
    return worker.counters.snapshot().get("events", 0)


def settle(registry: Registry, worker: Worker) -> None:
    """Until the registry's notifications have all reached the worker: quiet for 0.5 s."""
    deadline, last, quiet = time.monotonic() + 15, (-1, -1), time.monotonic()
    while time.monotonic() - quiet < 0.5:
        assert time.monotonic() < deadline, "the registry's notifications did not settle"
        now = (len(registry.events.received), events(worker))
        if now != last:
            last, quiet = now, time.monotonic()
        time.sleep(0.05)


def test_a_signature_pushed_late_is_served_once_the_registry_notifies(tmp_path: Path) -> None:
    """Unsigned firmware is refused; its ``.sig`` is pushed afterwards (cosign, another CI
    step). The registry's notification of that push drops the refusals of its repository,
    so the next status is served, not one up to 30 s later; other repositories' refusals
    stay, and a served digest costs no registry request per status."""
    signer, pub = keys(tmp_path, "ours")
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(LATE)
    port = free_port()
    with run_registry(
        tmp_path / "registry",
        also_notify=f"http://127.0.0.1:{port}/v1/events",
        notify_headers={"Authorization": f"Bearer {EVENTS_TOKEN}"},
    ) as registry:
        trust = {"app": load_policy("app", (str(pub),))}
        targets = Targets(load_fleet([tmp_path / "fleet"]), f"{registry.host}/ajour", trust=trust)
        worker = Worker(targets, StatusStore())
        settings = HttpSettings(port=port, events_token=EVENTS_TOKEN, status_token=STATUS_TOKEN)
        transport = HttpTransport(worker, settings)
        transport.start()
        status = encode_status(Status(b"0.9", 512))

        def command(device: str) -> object:
            reply = worker.handle("app", device, status)
            assert reply is not None
            return decode_command(reply)

        def unsigned() -> int:
            return worker.counters.snapshot().get("unverified_unsigned", 0)

        try:
            host = registry.host
            digest = publish(
                tmp_path, f"oci://{host}/ajour/fw/app:latest", "1.0", b"A" * 3000, None
            )
            publish(tmp_path, f"oci://{host}/ajour/fw/beta:latest", "2.0", b"B" * 3000, None)
            signature = signature_artifact(signer.key, f"{host}/ajour/fw/app", digest)
            push_blobs(registry, "ajour/fw/app", signature)
            settle(registry, worker)
            assert isinstance(command("dev0"), Wait) and isinstance(command("beta0"), Wait)
            assert unsigned() == 2

            pushed = time.monotonic()
            push_manifest(registry, "ajour/fw/app", signature)  # the tag sha256-<hex>.sig
            # the registry also notifies the worker of the pulls above: a new event alone does
            # not mean the push's has come; the refusal must end well before its RETRY_S
            waits = 0
            while not isinstance(command("dev0"), Write):
                waits += 1
                assert time.monotonic() - pushed < RETRY_S / 3, "the refusal outlived the push"
                time.sleep(0.02)

            registry.stop()  # from here on, any registry request would fail
            for _ in range(50):
                assert isinstance(command("dev0"), Write)  # verified once, served from memory
            assert isinstance(command("beta0"), Wait)
            assert unsigned() == 3 + waits, "fw/beta's refusal was dropped by fw/app's notification"
        finally:
            transport.stop()
