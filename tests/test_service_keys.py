"""The build service's keys: the image key every build gets (``AJOUR_IMAGE_KEY_FILE``, else
the config's ``signing.image_key``) and the publish signing key (``AJOUR_SIGN_KEY_FILE``,
else ``signing.key``), read at start.

The real service over HTTP, a real git remote, host-mode builds with a builder script that
stamps the SHA-256 of the key file it was given into the firmware, and publishes to the
real docker-registry on loopback; signatures are read back raw and checked with
``cryptography`` (tests/test_publish_signing.py's checks).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ajour_build.cli import main
from ajour_build.core.errors import ConfigError
from ajour_build.publish.destination import inspect
from tests.firmware import built_app, fake_builder
from tests.registry import run_registry
from tests.service import TOKEN, Harness
from tests.test_publish_signing import check_cosign, ec_key, get

# the firmware says which key the build got (its SHA-256, and whether it read the workspace's
# copy), or "none"
BUILDER = """\
mkdir -p out
if [ -n "${AJOUR_IMAGE_KEY_FILE:-}" ]; then
  key=$(sha256sum "$AJOUR_IMAGE_KEY_FILE" | cut -c1-64)
  case "$AJOUR_IMAGE_KEY_FILE" in */secrets/signing-key) where=copy ;; *) where=direct ;; esac
else
  key=none where=none
fi
printf 'fw %s key %s %s' "$AJOUR_FIRMWARE_VERSION" "$key" "$where" > out/fw.bin
echo "signed the image"
"""


def image_key(path: Path) -> bytes:
    """An ed25519 key as imgtool keygen writes it (PKCS#8 PEM)."""
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(pem)
    return pem


def harness(tmp_path: Path, registry: str, signing: str = "") -> Harness:
    h = Harness(
        tmp_path,
        f"registry: {{prefix: '{registry}/ajour', insecure: true}}\n"
        "allowed_applications: [fw]\n"
        "sources: {allow_local: true}\n"
        f"service: {{tokens: [{TOKEN}], runner: host}}\n" + signing,
    )
    fake_builder(tmp_path / "builders", "keyed", BUILDER)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fw.yaml").write_text(built_app("fw", h.remote_uri, builder="keyed"))
    h.commit({"VERSION": "1.0.0\n"})
    return h


def build(h: Harness) -> tuple[dict[str, object], str]:
    with h.client() as c:
        reply = c.post("/api/v1/applications/fw/trigger")
        assert reply.status_code == 202, reply.text
        (started,) = reply.json()["triggered"]
    done = h.wait(started["id"], ("succeeded", "failed", "cancelled"))
    with h.client() as c:
        log = c.get(f"/api/v1/builds/{started['id']}/logs").text
    assert done["state"] == "succeeded", (done, log)
    return done, log


def test_every_build_gets_the_image_key_and_it_is_never_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``AJOUR_IMAGE_KEY_FILE`` wins over the config's ``signing.image_key``; the builder
    reads a copy inside its workspace; the logs show only the key's SHA-256 prefix."""
    pem = image_key(tmp_path / "image.key")
    image_key(tmp_path / "other.key")  # the config's: the environment's wins
    monkeypatch.setenv("AJOUR_IMAGE_KEY_FILE", str(tmp_path / "image.key"))
    caplog.set_level(logging.INFO, logger="ajour_build")
    digest = hashlib.sha256(pem).hexdigest()
    with run_registry(tmp_path / "registry") as registry:
        h = harness(
            tmp_path, registry.host, f"signing: {{image_key: '{tmp_path / 'other.key'}'}}\n"
        )
        with h.running():
            _, log = build(h)
            again, log_again = build(h)  # the same key hits the cache
        info = inspect(f"oci://{registry.host}/ajour/fw:latest", os.environ, insecure=True)
    firmware = f"fw 1.0.0 key {digest} copy".encode()
    assert info.checksum == "sha256:" + hashlib.sha256(firmware).hexdigest()
    assert f"signing key: AJOUR_IMAGE_KEY_FILE (sha256 {digest[:12]})" in log
    assert again["cached"] is True and "cached: reusing build" in log_again
    started = f"builds get the image key from environment variable AJOUR_IMAGE_KEY_FILE (sha256 {digest[:12]})"  # noqa: E501
    assert started in caplog.text
    body = pem.decode().splitlines()[1]  # the key's base64, a line no log may hold
    assert body not in log and body not in caplog.text
    builds = tmp_path / "state" / "builds"
    assert not list(builds.rglob("signing-key"))  # the copy went with the workspace


def test_publishes_are_signed_with_the_config_files_key(tmp_path: Path) -> None:
    """``signing.key`` in ajour.yaml signs what the service publishes (not only
    ``AJOUR_SIGN_KEY_FILE``), with ``signing.builder_id`` in the provenance."""
    key, public = ec_key(tmp_path)
    with run_registry(tmp_path / "registry") as registry:
        h = harness(
            tmp_path,
            registry.host,
            f"signing: {{key: '{key}', builder_id: 'https://ci.example.com/b@v1'}}\n",
        )
        with h.running():
            done, _ = build(h)
        digest = str(done["digest"])
        hexdigest = digest.removeprefix("sha256:")
        base = f"http://{registry.host}/v2/ajour/fw"
        tags = json.loads(get(f"{base}/tags/list", "application/json"))["tags"]
        assert f"sha256-{hexdigest}.sig" in tags and f"sha256-{hexdigest}.att" in tags, tags
        sig = json.loads(get(f"{base}/manifests/sha256-{hexdigest}.sig"))

        def blob(d: str) -> bytes:
            return get(f"{base}/blobs/{d}", "*/*")

        check_cosign(sig, blob, public, digest, f"{registry.host}/ajour/fw")
    artifacts = tmp_path / "state" / "builds" / str(done["backendRef"]) / "artifacts"
    assert (artifacts / "fw.bin").read_bytes() == b"fw 1.0.0 key none none"


@pytest.mark.parametrize(
    ("backend", "setting", "env", "message"),
    [
        (
            "local",
            "signing: {image_key: MISSING}\n",
            "",
            r"image key \S+missing\.key \(set by signing\.image_key in \S+ajour\.yaml\):"
            r" cannot read it \(No such file or directory\); expected a readable, non-empty key"
            r" file the builder signs images with .*; fix the path in signing\.image_key in"
            r" \S+ajour\.yaml, or unset it",
        ),
        (
            "local",
            "",
            "DIR",
            r"image key \S+ \(set by environment variable AJOUR_IMAGE_KEY_FILE\): cannot read it"
            r" \(Is a directory\); expected .*; fix the path in environment variable"
            r" AJOUR_IMAGE_KEY_FILE, or unset it",
        ),
        (
            "local",
            "",
            "EMPTY",
            r"image key \S+empty\.key \(set by environment variable AJOUR_IMAGE_KEY_FILE\):"
            r" the file is empty",
        ),
        (
            "local",
            "signing: {key: MISSING}\n",
            "",
            r"signing key \S+missing\.key: cannot read it \(No such file or directory\);"
            r" expected .* \(set by signing\.key in \S+ajour\.yaml\); fix the path in"
            r" signing\.key in \S+ajour\.yaml, or unset it to publish unsigned",
        ),
        (
            "tekton",
            "signing: {image_key: KEY}\n",
            "",
            r"an image key is set by signing\.image_key in \S+ajour\.yaml, but the tekton"
            r" backend cannot hand it to builds \(its PipelineRuns mount no Secret for it\);"
            r" unset it, or build with service\.backend: local",
        ),
    ],
)
def test_a_key_that_cannot_be_read_stops_the_service_at_start(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backend: str,
    setting: str,
    env: str,
    message: str,
) -> None:
    places = {
        "MISSING": tmp_path / "missing.key",
        "DIR": tmp_path,
        "EMPTY": tmp_path / "empty.key",
        "KEY": tmp_path / "image.key",
    }
    places["EMPTY"].write_bytes(b"\n")
    image_key(places["KEY"])
    for word, place in places.items():
        setting = setting.replace(word, f"'{place}'")
    monkeypatch.delenv("AJOUR_IMAGE_KEY_FILE", raising=False)
    monkeypatch.delenv("AJOUR_SIGN_KEY_FILE", raising=False)
    if env:
        monkeypatch.setenv("AJOUR_IMAGE_KEY_FILE", str(places[env]))
    service = f"service: {{tokens: [{TOKEN}], runner: host, backend: {backend}}}\n"
    h = Harness(tmp_path, "allowed_applications: [fw]\n" + service + setting)
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "fw.yaml").write_text(built_app("fw", h.remote_uri, builder="keyed"))
    with pytest.raises(ConfigError, match=message), h.running():
        pytest.fail("the service started")
    # ajour-build serve stops the same way, before it serves anything
    args = ["serve", "--fleet", str(tmp_path / "fleet"), "--port", "0"]
    args += ["--state-dir", str(tmp_path / "state"), "--insecure-no-auth"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert re.search(message, " ".join(result.output.split())), result.output
