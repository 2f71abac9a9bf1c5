"""The images of the two services (deploy/images), built with podman and run the way
deploy/kubernetes runs them: read-only root, uid 10001, config and fleet mounted read-only
(the fleet laid out as a ConfigMap volume lays it out), writable volumes only.

Containers get the host network and bind 127.0.0.1: no bridge network (and no ``-p``) here,
its private-range addresses are off limits (ajour_build/builders/podman.py). Both images are
built once per content hash of what goes into them (``./scripts/service-images``); a
second run reuses them, and a rebuild after a code change reuses the Debian and dependency
layers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from ajour_build.builders import podman
from delivery.protocol import Status, Write, decode_command, encode_status
from tests.conftest import APP, REPO
from tests.firmware import BASE_IMAGE, ensure_builder_images
from tests.kube_fake import PIPELINERUNS, KubeFake
from tests.registry import free_port
from tests.test_service_tekton_flow import kubeconfig
from tests.test_sources import publish

pytestmark = pytest.mark.slow
UID = "10001"
TOKEN = "api-token-for-the-image-test"
FIRMWARE = bytes(range(256)) * 8  # 2 KiB


def _tag() -> str:
    digest = hashlib.sha256()
    for path in sorted(
        [
            *REPO.glob("deploy/images/*"),
            REPO / "scripts" / "service-images",
            REPO / "pyproject.toml",
            REPO / "README.md",
            *REPO.glob("ajour_build/**/*"),
            *REPO.glob("delivery/**/*"),
            *REPO.glob("builder-images/**/*"),
        ]
    ):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes())
    return f"test-{digest.hexdigest()[:12]}"


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], str]]:
    """{name: image ref} of both images, and the podman state dir (its containers.conf)."""
    state = tmp_path_factory.mktemp("podman")
    ensure_builder_images(state, ())  # the Debian base image, made with debootstrap
    env = podman.environment(state)
    tag = _tag()
    refs = {name: f"localhost/ajour/{name}:{tag}" for name in ("build-service", "delivery")}
    if not all(podman.image_exists(ref, env) for ref in refs.values()):
        build = subprocess.run(
            [str(REPO / "scripts" / "service-images"), "localhost/ajour", tag, BASE_IMAGE],
            env={**env, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            check=False,
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    yield refs, str(state)


def _podman(state: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["podman", *args],
        env=podman.environment(Path(state)),
        capture_output=True,
        text=True,
        check=False,
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def _python(state: str, image: str, code: str) -> str:
    return _podman(
        state, "run", "--rm", "--read-only", "--user", UID, "--entrypoint",
        "/opt/ajour/bin/python", image, "-c", code,
    ).stdout  # fmt: skip


def _configmap_volume(folder: Path, files: dict[str, str]) -> Path:
    """A folder laid out as the kubelet lays out a ConfigMap volume: the files in a hidden
    timestamped folder, ``..data`` pointing at it, and one symlink per key."""
    stamp = folder / "..2026_12_06_17_00_00.000000001"
    stamp.mkdir(parents=True)
    (folder / "..data").symlink_to(stamp.name)
    for key, text in files.items():
        (stamp / key).write_text(text)
        (folder / key).symlink_to(f"..data/{key}")
    return folder


def _state_volume(folder: Path) -> Path:
    folder.mkdir()
    subprocess.run(["chown", f"{UID}:{UID}", str(folder)], check=True)
    return folder


def _get(url: str, token: str = "") -> tuple[int, bytes]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        body = exc.read()
        exc.close()
        return exc.code, body


def _wait_healthy(state: str, name: str, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if _get(url + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        running = _podman(state, "inspect", "--format", "{{.State.Running}}", name, check=False)
        if running.stdout.strip() != "true":
            break
        time.sleep(0.3)
    logs = _podman(state, "logs", name, check=False)
    pytest.fail(f"{name} did not answer /healthz:\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}")


@contextmanager
def _run(state: str, name: str, args: list[str]) -> Iterator[None]:
    _podman(state, "rm", "--force", "--ignore", name, check=False)
    _podman(
        state, "run", "--detach", "--name", name, "--read-only", "--user", f"{UID}:{UID}",
        "--network=host", "--cap-drop=ALL", "--security-opt=no-new-privileges", *args,
    )  # fmt: skip
    try:
        yield
    finally:
        _podman(state, "stop", "--time", "15", name, check=False)
        _podman(state, "rm", "--force", "--ignore", name, check=False)


def test_the_delivery_image_has_no_build_side_packages(
    images: tuple[dict[str, str], str],
) -> None:
    refs, state = images
    code = (
        "import importlib.util as u, json; print(json.dumps({m: bool(u.find_spec(m)) for m in"
        " ['jinja2', 'kubernetes', 'fastapi', 'sqlalchemy', 'git', 'jsonschema', 'rich',"
        " 'oras', 'paho', 'psycopg', 'h11', 'bcrypt', 'delivery', 'ajour_build']}))"
    )
    found = json.loads(_python(state, refs["delivery"], code))
    assert [m for m, there in found.items() if there] == [
        "paho", "psycopg", "h11", "bcrypt", "delivery", "ajour_build",
    ]  # fmt: skip
    found = json.loads(_python(state, refs["build-service"], code))
    assert all(found[m] for m in ("kubernetes", "fastapi", "sqlalchemy", "git", "psycopg"))
    user = _podman(state, "image", "inspect", "--format", "{{.Config.User}}", refs["delivery"])
    assert user.stdout.strip() == f"{UID}:{UID}"


def test_the_delivery_image_serves_probes_and_a_device(
    images: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    refs, state = images
    layouts = tmp_path / "firmware"
    publish(tmp_path, f"oci-layout://{layouts / 'app'}:latest", "1.0.0", FIRMWARE)
    port = free_port()
    fleet = _configmap_volume(
        tmp_path / "fleet",
        {
            "fleet.yaml": "kind: Application\nmetadata: {name: app}\n"
            "spec: {firmware: {container: {image: app:latest}}}\n---\n"
            "metadata: {name: dev0, application: app}\n"
            "spec: {credentials: {credentials: [{pass: device-password}]}}\n"
        },
    )
    config = _configmap_volume(
        tmp_path / "config",
        {"ajour.yaml": f"delivery: {{http: '127.0.0.1:{port}', store: /var/lib/ajour/d.db}}\n"},
    )
    args = [
        "-v", f"{fleet}:/etc/ajour/fleet:ro", "-v", f"{config}:/etc/ajour/config:ro",
        "-v", f"{layouts}:/srv/firmware:ro",
        "-v", f"{_state_volume(tmp_path / 'state')}:/var/lib/ajour",
        "-e", "AJOUR_DELIVERY_STATUS_TOKEN=status-token", "-e", "AJOUR_DELIVERY_EVENTS_TOKEN=ev",
        refs["delivery"], "serve", "--fleet=/etc/ajour/fleet",
        "--config=/etc/ajour/config/ajour.yaml", "--registry=oci-layout:///srv/firmware",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with _run(state, "ajour-test-delivery", args):
        _wait_healthy(state, "ajour-test-delivery", url)
        assert _get(url + "/readyz") == (200, b'{"status":"ok"}')
        status = encode_status(Status(version=b"0.9.0", mtu=256))
        auth = base64.b64encode(b"dev0@app:device-password").decode()
        request = urllib.request.Request(
            url + "/v1/dfu?application=app&device=dev0&ct=30",
            data=status,
            method="POST",
            headers={"Authorization": f"Basic {auth}", "Content-Type": "application/cbor"},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.headers["content-type"] == "application/cbor"
            command = decode_command(answer.read())
        assert command == Write(
            version=b"1.0.0", correlation_id=None, offset=0, data=FIRMWARE[:256]
        )
        code, body = _get(url + "/v1/status/app/dev0", "status-token")
        assert code == 200 and json.loads(body)[0]["device"] == "dev0"
        stopped = _podman(state, "stop", "--time", "15", "ajour-test-delivery")
        assert stopped.returncode == 0
        exit_code = _podman(
            state, "inspect", "--format", "{{.State.ExitCode}}", "ajour-test-delivery"
        )
        logs = _podman(state, "logs", "ajour-test-delivery").stderr
        assert exit_code.stdout.strip() == "0", logs
        assert "Traceback" not in logs and "device-password" not in logs


def test_the_build_service_image_runs_its_tekton_backend(
    images: tuple[dict[str, str], str], tmp_path: Path
) -> None:
    refs, state = images
    port = free_port()
    with KubeFake() as kube:
        kube_dir = tmp_path / "kube"
        kube_dir.mkdir()
        kubeconfig(kube_dir / "config", kube.url)
        fleet = _configmap_volume(tmp_path / "fleet", {"app1.yaml": APP.format(name="app1")})
        config = _configmap_volume(
            tmp_path / "config",
            {
                "ajour.yaml": "registry: {prefix: registry.example.com/fw}\n"
                "allowed_applications: [app1]\nnamespace: builds\nservice: {backend: tekton}\n"
            },
        )
        args = [
            "-v", f"{fleet}:/etc/ajour/fleet:ro", "-v", f"{config}:/etc/ajour/config:ro",
            "-v", f"{kube_dir}:/etc/ajour/kube:ro", "-e", "KUBECONFIG=/etc/ajour/kube/config",
            "-v", f"{_state_volume(tmp_path / 'state')}:/var/lib/ajour",
            "-e", f'AJOUR_SERVICE__TOKENS=["{TOKEN}"]',
            refs["build-service"], "serve", "--fleet=/etc/ajour/fleet",
            "--config=/etc/ajour/config/ajour.yaml", "--host=127.0.0.1", f"--port={port}",
        ]  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        with _run(state, "ajour-test-build-service", args):
            _wait_healthy(state, "ajour-test-build-service", url)
            code, body = _get(url + "/readyz")
            assert code == 200, body
            assert json.loads(body)["checks"]["backend"] == "tekton: ok"
            assert _get(url + "/api/v1/builds")[0] == 401
            trigger = urllib.request.Request(
                url + "/api/v1/applications/app1/trigger",
                data=b"{}",
                method="POST",
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            with urllib.request.urlopen(trigger, timeout=30) as answer:
                assert answer.status == 202, answer.read()
            assert kube.requests("create", PIPELINERUNS) == 1
            assert (tmp_path / "state" / "service" / "builds.db").is_file(), "records on the volume"
