"""Signing at publish: cosign's signature and an SLSA v1 provenance beside the manifest.

The artifacts are read back raw (the registry's HTTP API, the layout's files) and verified
here with ``cryptography`` directly, following cosign's SIGNATURE_SPEC and DSSE, never with
Ajour's own verification code.
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from ajour_build.cli import main
from ajour_build.core.errors import PublishError
from ajour_build.publish.destination import release
from ajour_build.publish.publisher import BuilderInfo, FirmwareArtifact, SourceInfo
from ajour_build.publish.signing import signer_from
from tests.registry import run_registry

ACCEPT = "application/vnd.oci.image.manifest.v1+json"
PASSWORD = "pw-very-secret-1234"


def ec_key(tmp: Path, name: str = "sign.key", password: str = "") -> tuple[Path, Any]:
    key = ec.generate_private_key(ec.SECP256R1())
    crypt: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode())
        if password
        else serialization.NoEncryption()
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, crypt)
    path = tmp / name
    path.write_bytes(pem)
    return path, key.public_key()


def public_pem(path: Path, public: Any) -> Path:
    path.write_bytes(
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def artifact(
    tmp: Path, version: str = "1.0.0", content: bytes = b"\x11" * 2048
) -> FirmwareArtifact:
    path = tmp / f"fw-{version}.bin"
    path.write_bytes(content)
    return FirmwareArtifact(
        path,
        version,
        SourceInfo("https://git.example.com/acme/fw.git", "a" * 40, "blinky"),
        BuilderInfo("registry.example.com/arm-gcc:13", ("--board", "nrf52")),
    )


def get(url: str, accept: str = ACCEPT) -> bytes:
    request = urllib.request.Request(url, headers={"Accept": accept})
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


def check_cosign(manifest: dict[str, Any], blob: Any, public: Any, digest: str, ref: str) -> None:
    """cosign's verification of a ``.sig`` manifest, done by hand."""
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dev.cosign.simplesigning.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    payload = blob(layer["digest"])
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    public.verify(signature, payload, ec.ECDSA(hashes.SHA256()))  # raises if it does not
    assert json.loads(payload) == {
        "critical": {
            "identity": {"docker-reference": ref},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }


def check_attestation(manifest: dict[str, Any], blob: Any, public: Any, digest: str) -> Any:
    """The ``.att`` manifest's DSSE envelope, its signature checked over DSSE's PAE."""
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.dsse.envelope.v1+json"
    assert layer["annotations"] == {"predicateType": "https://slsa.dev/provenance/v1"}
    envelope = json.loads(blob(layer["digest"]))
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    body = base64.b64decode(envelope["payload"])
    kind = b"application/vnd.in-toto+json"
    pae = b"DSSEv1 " + str(len(kind)).encode() + b" " + kind + b" "
    pae += str(len(body)).encode() + b" " + body
    public.verify(
        base64.b64decode(envelope["signatures"][0]["sig"]), pae, ec.ECDSA(hashes.SHA256())
    )
    statement = json.loads(body)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["subject"][0]["digest"] == {"sha256": digest.removeprefix("sha256:")}
    return statement


def test_a_signed_registry_publish_verifies_with_cosigns_scheme(tmp_path: Path) -> None:
    key, public = ec_key(tmp_path)
    signer = signer_from({}, key, "https://ci.example.com/builders/fw@v1")
    with run_registry(tmp_path / "registry") as registry:
        url = f"oci://{registry.host}/fw/app:latest"
        out = release(artifact(tmp_path), url, {}, signer=signer).published
        digest, hexdigest = out.digest, out.digest.removeprefix("sha256:")
        assert out.signatures == (f"sha256-{hexdigest}.sig", f"sha256-{hexdigest}.att")
        base = f"http://{registry.host}/v2/fw/app"
        tags = json.loads(get(f"{base}/tags/list", "application/json"))["tags"]
        assert set(tags) == {"1.0.0", "latest", *out.signatures}

        def blob(d: str) -> bytes:
            return get(f"{base}/blobs/{d}", "*/*")

        sig = json.loads(get(f"{base}/manifests/sha256-{hexdigest}.sig"))
        check_cosign(sig, blob, public, digest, f"{registry.host}/fw/app")
        att = json.loads(get(f"{base}/manifests/sha256-{hexdigest}.att"))
        predicate = check_attestation(att, blob, public, digest)["predicate"]
        assert predicate["runDetails"]["builder"]["id"] == "https://ci.example.com/builders/fw@v1"
        definition = predicate["buildDefinition"]
        assert definition["externalParameters"]["source"] == {
            "uri": "https://git.example.com/acme/fw.git",
            "revision": "a" * 40,
            "project": "blinky",
        }
        assert definition["externalParameters"]["builderImage"] == "registry.example.com/arm-gcc:13"
        assert definition["externalParameters"]["args"] == ["--board", "nrf52"]

        # publishing the same version again signs the digest the version tag holds
        again = release(artifact(tmp_path), url, {}, signer=signer).published
        assert again.digest == digest and again.signatures == out.signatures


def test_a_signed_layout_publish_keeps_cosigns_tags_in_the_index(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key, public = ec_key(tmp_path)
    layout = tmp_path / "oci" / "fw"
    env = {"AJOUR_SIGN_KEY_FILE": str(key)}  # the environment names the key
    out = release(artifact(tmp_path), f"oci-layout://{layout}:latest", env).published
    index = json.loads((layout / "index.json").read_text())
    by_tag = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
    }
    hexdigest = out.digest.removeprefix("sha256:")
    assert set(by_tag) == {"1.0.0", "latest", f"sha256-{hexdigest}.sig", f"sha256-{hexdigest}.att"}

    def blob(d: str) -> bytes:
        return (layout / "blobs" / "sha256" / d.removeprefix("sha256:")).read_bytes()

    check_cosign(json.loads(blob(by_tag[f"sha256-{hexdigest}.sig"])), blob, public, out.digest,
                 str(layout))  # fmt: skip
    att = json.loads(blob(by_tag[f"sha256-{hexdigest}.att"]))
    check_attestation(att, blob, public, out.digest)
    # a later version's patch history skips the signature tags (they are no versions): it
    # never reads them, so a .sig manifest gone missing does not even cause a warning
    blob(by_tag[f"sha256-{hexdigest}.sig"])
    (layout / "blobs" / "sha256" / by_tag[f"sha256-{hexdigest}.sig"][7:]).unlink()
    with caplog.at_level(logging.INFO, logger="ajour_build.publish.patches"):
        later = release(artifact(tmp_path, "1.1.0", b"\x12" * 2048),
                        f"oci-layout://{layout}:latest", env).published  # fmt: skip
    assert later.version == "1.1.0"
    assert "sha256-" not in caplog.text


def test_an_ed25519_key_signs_too(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    path = tmp_path / "ed.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    layout = tmp_path / "oci" / "fw"
    out = release(artifact(tmp_path), f"oci-layout://{layout}:latest", {},
                  signer=signer_from({}, path)).published  # fmt: skip
    index = json.loads((layout / "index.json").read_text())
    sig = next(m for m in index["manifests"] if m["annotations"][
        "org.opencontainers.image.ref.name"].endswith(".sig"))  # fmt: skip
    manifest = json.loads((layout / "blobs" / "sha256" / sig["digest"][7:]).read_bytes())
    layer = manifest["layers"][0]
    payload = (layout / "blobs" / "sha256" / layer["digest"][7:]).read_bytes()
    signature = base64.b64decode(layer["annotations"]["dev.cosignproject.cosign/signature"])
    key.public_key().verify(signature, payload)
    assert out.digest in payload.decode()


def test_the_key_never_reaches_output_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    key, _ = ec_key(tmp_path, password=PASSWORD)
    pem = key.read_text()
    secret_lines = [line for line in pem.splitlines() if not line.startswith("-----")]
    runner = CliRunner()
    fw = artifact(tmp_path).path
    layout = tmp_path / "oci" / "fw"
    base = ["publish", str(fw), "--to", f"oci-layout://{layout}:latest", "--version", "1.0.0"]
    env = {"AJOUR_SIGN_KEY_PASSWORD": PASSWORD}
    ok = runner.invoke(main, [*base, "--sign-key", str(key), "--json"], env=env)
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["signatures"][0].endswith(".sig")
    # without the password, and with a file that is no key: errors name the file, not bytes
    locked = runner.invoke(main, [*base, "--sign-key", str(key), "--json"],
                           env={"AJOUR_SIGN_KEY_PASSWORD": ""})  # fmt: skip
    assert locked.exit_code == 1 and "it is encrypted" in locked.output
    assert str(key) in locked.output
    garbage = tmp_path / "notakey.pem"
    garbage.write_text(pem.replace("PRIVATE KEY", "PRIVATE KEZ"))
    bad = runner.invoke(main, [*base, "--sign-key", str(garbage)])
    assert bad.exit_code == 1 and "expected a PEM private key" in bad.output
    for text in (ok.output, locked.output, bad.output, caplog.text):
        assert PASSWORD not in text
        assert not any(line in text for line in secret_lines)


def test_signing_is_refused_for_targets_that_keep_no_signatures(tmp_path: Path) -> None:
    key, _ = ec_key(tmp_path)
    with pytest.raises(PublishError, match=r"only oci:// and oci-layout:// targets keep"):
        release(artifact(tmp_path), f"dir://{tmp_path / 'files' / 'fw'}", {},
                signer=signer_from({}, key))  # fmt: skip


def test_a_missing_key_file_is_a_precise_error(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match=r"signing key .*missing\.key: cannot read it"):
        signer_from({"AJOUR_SIGN_KEY_FILE": str(tmp_path / "missing.key")})
    assert signer_from({}) is None
    assert public_pem(tmp_path / "x.pub", ec_key(tmp_path)[1]).is_file()


def test_build_publish_takes_the_flag_then_the_environment_then_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ajour_build.cli.build import _signer
    from ajour_build.config import SigningConfig

    flag, config, envkey = (ec_key(tmp_path, f"{n}.key")[0] for n in ("flag", "config", "env"))
    conf = SigningConfig(key=str(config), builder_id="https://ci.example.com/b")
    monkeypatch.delenv("AJOUR_SIGN_KEY_FILE", raising=False)
    assert _signer(None, SigningConfig()) is None
    found = _signer(None, conf)
    assert found is not None and found.key.path == config
    assert found.builder_id == "https://ci.example.com/b"
    monkeypatch.setenv("AJOUR_SIGN_KEY_FILE", str(envkey))
    assert (signer := _signer(None, conf)) is not None and signer.key.path == envkey
    assert (signer := _signer(flag, conf)) is not None and signer.key.path == flag
    # the builder id: AJOUR_SIGN_BUILDER_ID > signing.builder_id (docs/artifact-format.md)
    monkeypatch.setenv("AJOUR_SIGN_BUILDER_ID", "https://env.example.com/b")
    assert (signer := _signer(None, conf)) is not None
    assert signer.builder_id == "https://env.example.com/b"
