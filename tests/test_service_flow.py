"""The whole service path with real parts: git push → signed webhook → build of the example
firmware in the arm-gcc builder image (podman) → publish to the docker-registry on
loopback → the record shows the digest the registry serves, and QEMU runs the result.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ajour_build.publish.destination import inspect
from tests.conftest import EXAMPLES, REPO
from tests.firmware import ensure_builder_images, run_qemu
from tests.registry import run_registry
from tests.service import SECRET, TOKEN, Harness, github_push

APP = """\
kind: Application
metadata: {{name: blinky}}
spec:
  firmware:
    container:
      image: blinky:latest
      build:
        image: arm-gcc
        source: {{git: {{uri: "{uri}", rev: main}}}}
        args: ["--board", "mps2-an385"]
        artifact: {{path: build/blinky.bin}}
        timeout: 10m
---
metadata: {{name: dev1, application: blinky}}
"""


@pytest.mark.slow
def test_push_builds_publishes_and_records_the_digest(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    refs = ensure_builder_images(tmp_path_factory.mktemp("podman"), ("arm-gcc",))
    with run_registry(tmp_path / "registry") as registry:
        h = Harness(
            tmp_path,
            f"registry: {{prefix: '{registry.host}/ajour', insecure: true}}\n"
            "allowed_applications: [blinky]\n"
            "sources: {allow_local: true}\n"
            f"builders: {{arm-gcc: {{image: '{refs['arm-gcc']}'}}}}\n"
            f"service: {{tokens: [{TOKEN}], webhooks: {{github: {SECRET}}}}}\n",
            builders=REPO / "builder-images",
        )
        work = Path(h.work.working_tree_dir or ".")
        for item in (EXAMPLES / "firmware" / "c-blinky").iterdir():
            if item.name != "build":
                copy = shutil.copytree if item.is_dir() else shutil.copy2
                copy(item, work / item.name)
        (tmp_path / "fleet").mkdir()
        (tmp_path / "fleet" / "blinky.yaml").write_text(APP.format(uri=h.remote_uri))
        files = {str(p.relative_to(work)): p.read_text() for p in work.rglob("*") if p.is_file()}
        files = {k: v for k, v in files.items() if not k.startswith(".git/")}
        files["VERSION"] = "1.4.0\n"
        before, after = h.commit(files)
        with h.running():
            reply = h.github(github_push(h.remote_uri, "refs/heads/main", before, after))
            assert reply.status_code == 202, reply.text
            (build,) = reply.json()["triggered"]
            assert build["consumers"] == ["blinky", "blinky/dev1"]
            done = h.wait(build["id"], ("succeeded", "failed", "cancelled"), timeout=240)
            with h.client() as c:
                log = c.get(f"/api/v1/builds/{build['id']}/logs").text
        assert done["state"] == "succeeded", f"{done['failure']}\n{log[-3000:]}"
        assert done["git"]["commit"] == after and done["version"] == "1.4.0"
        assert done["publishTo"] == f"oci://{registry.host}/ajour/blinky:latest"
        assert done["digest"].startswith("sha256:") and len(done["digest"]) == 71
        assert done["reference"] == f"{registry.host}/ajour/blinky@{done['digest']}"
        assert "arm-none-eabi-gcc" in log or "arm-none-eabi" in log
        # the registry serves what the record says
        info = inspect(f"oci://{registry.host}/ajour/blinky:latest", os.environ, insecure=True)
        assert info.manifest_digest == done["digest"] and info.version == "1.4.0"
        # and the firmware built from that commit runs
        artifacts = tmp_path / "state" / "builds" / done["backendRef"] / "artifacts"
        code, output = run_qemu(artifacts / "blinky.elf")
        assert code == 0 and "1.4.0" in output, output
