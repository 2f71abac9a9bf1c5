"""Run the Tasks' steps from pipelines/ locally, with the env Tekton would give them.

This proves the YAML wiring (params → env/argv, workspaces, results) drives the same code
the local runner uses, not only that the YAML is schema-valid.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ajour_build.builders import podman
from ajour_build.core.artifact.layout_store import LayoutStore
from tests.conftest import EXAMPLES, REPO
from tests.firmware import ensure_builder_images, make_repo, run_qemu

TASKS = REPO / "pipelines" / "tasks"
_VAR = re.compile(r"\$\((params|workspaces|results)\.([A-Za-z0-9_-]+)(?:\.(path|bound))?\)")


def load_task(name: str) -> dict[str, Any]:
    data = yaml.safe_load((TASKS / name / f"{name}.yaml").read_text())
    assert isinstance(data, dict)
    return data


class Tekton:
    """The variable substitution Tekton performs for one TaskRun."""

    def __init__(
        self,
        task: dict[str, Any],
        params: dict[str, Any],
        workspaces: dict[str, str],
        results_dir: Path,
    ) -> None:
        declared = {p["name"]: p for p in task["spec"]["params"]}
        assert set(params) <= set(declared), set(params) - set(declared)
        self.params = {n: params.get(n, p.get("default")) for n, p in declared.items()}
        missing = [n for n, v in self.params.items() if v is None]
        assert not missing, f"required params not given: {missing}"
        self.workspaces = workspaces
        self.results_dir = results_dir

    def _one(self, match: re.Match[str]) -> str:
        kind, name, attr = match.groups()
        if kind == "params":
            value = self.params[name]
            assert isinstance(value, str), f"array param {name} used in a string"
            return value
        if kind == "workspaces":
            bound = name in self.workspaces
            return (
                ("true" if bound else "false") if attr == "bound" else self.workspaces.get(name, "")
            )
        return str(self.results_dir / name)

    def text(self, value: str) -> str:
        return _VAR.sub(self._one, value)

    def argv(self, items: list[str]) -> list[str]:
        out: list[str] = []
        for item in items:
            star = re.fullmatch(r"\$\(params\.([A-Za-z0-9_-]+)\[\*\]\)", item)
            out.extend(self.params[star.group(1)] if star else [self.text(item)])
        return out

    def env(self, step: dict[str, Any]) -> dict[str, str]:
        return {e["name"]: self.text(e["value"]) for e in step.get("env", [])}


def test_clone_task_step(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", EXAMPLES / "firmware" / "c-blinky")
    task = load_task("ajour-git-clone")
    (step,) = task["spec"]["steps"]
    results = tmp_path / "results"
    for version, expected in (("", repo.head.commit.hexsha), ("7.0.1", "7.0.1")):
        ws = tmp_path / f"ws-{version or 'none'}"
        ws.mkdir()
        tekton = Tekton(
            task,
            {"url": f"file://{repo.working_dir}", "revision": "main", "firmware-version": version},
            {"output": str(ws)},
            results,
        )
        argv = tekton.argv(step["command"] + step.get("args", []))
        assert argv == ["ajour-build", "step", "clone"]
        env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **tekton.env(step)}
        subprocess.run(argv, env=env, check=True, capture_output=True)
        assert (results / "commit").read_text() == repo.head.commit.hexsha
        assert (results / "url").read_text() == f"file://{repo.working_dir}"
        assert (results / "version").read_text() == expected
        assert (ws / "source" / "Makefile").is_file()


def test_clone_task_step_refuses_a_hostile_url(tmp_path: Path) -> None:
    task = load_task("ajour-git-clone")
    (step,) = task["spec"]["steps"]
    tekton = Tekton(
        task,
        {"url": "ext::sh -c touch% /tmp/pwned-by-tekton", "revision": "main"},
        {"output": str(tmp_path)},
        tmp_path / "results",
    )
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **tekton.env(step)}
    result = subprocess.run(
        tekton.argv(step["command"]), env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "remote helper" in result.stderr
    assert not Path("/tmp/pwned-by-tekton").exists()


def test_build_task_step_in_the_builder_image(tmp_path: Path) -> None:
    state = tmp_path / "podman"
    refs = ensure_builder_images(state, ("arm-gcc",))
    task = load_task("ajour-firmware-build")
    (step,) = task["spec"]["steps"]
    host_ws = tmp_path / "ws"
    make_repo(host_ws / "source" / "fw", EXAMPLES / "firmware" / "c-blinky")
    tekton = Tekton(
        task,
        {
            "builder-image": refs["arm-gcc"],
            "args": ["--board", "mps2-an385"],
            "project": "fw",
            "artifact-path": "build/blinky.bin",
            "firmware-version": "4.5.6",
            "source-commit": "abc123",
        },
        {"source": "/workspace/source"},
        tmp_path / "results",
    )
    assert "command" not in step, "the build step must run the image's contract entrypoint"
    image = tekton.text(step["image"])
    workdir = tekton.text(step["workingDir"])
    argv = [
        "podman",
        "run",
        "--rm",
        "--network=none",
        "-v",
        f"{host_ws}:/workspace/source",
        "-w",
        workdir,
    ]
    for name, value in tekton.env(step).items():
        argv += ["-e", f"{name}={value}"]
    subprocess.run(["chown", "-R", "10001:10001", str(host_ws)], check=True)
    result = subprocess.run(
        [*argv, image, *tekton.argv(step.get("args", []))],
        env=podman.environment(state),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    code, output = run_qemu(host_ws / "source" / "fw" / "build" / "blinky.elf")
    assert code == 0 and "AJOUR_FIRMWARE_VERSION=4.5.6" in output


def test_image_url_result_step(tmp_path: Path) -> None:
    task = load_task("ajour-builder-image")
    step = next(s for s in task["spec"]["steps"] if s["name"] == "image-url")
    image = "registry.example.com/ajour/builder-arm-gcc:0.1.0"
    tekton = Tekton(
        task,
        {"image": image, "context": "builder-images/arm-gcc"},
        {"source": str(tmp_path)},
        tmp_path / "results",
    )
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **tekton.env(step)}
    subprocess.run(tekton.argv(step["command"]), env=env, check=True, capture_output=True)
    assert (tmp_path / "results" / "IMAGE_URL").read_text() == image


# Steps whose `ajour-build step` command lands with a later issue (named here, not hidden).
PENDING: dict[str, str] = {}


def test_every_step_command_in_pipelines_exists() -> None:
    from click.testing import CliRunner

    from ajour_build.cli import main

    used = set()
    for path in (REPO / "pipelines").rglob("*.yaml"):
        for step in yaml.safe_load(path.read_text()).get("spec", {}).get("steps", []):
            command = step.get("command", [])
            if command[:2] == ["ajour-build", "step"]:
                used.add(command[2])
    assert {"clone", "result", "publish"} <= used
    for name in sorted(used - set(PENDING)):
        result = CliRunner().invoke(main, ["step", name, "--help"])
        assert result.exit_code == 0, f"ajour-build step {name} is missing"


def test_publish_task_step_to_the_real_registry(tmp_path: Path) -> None:
    from ajour_build.publish.destination import inspect
    from tests.registry import run_registry

    task = load_task("ajour-firmware-publish")
    (step,) = task["spec"]["steps"]
    ws = tmp_path / "ws"
    (ws / "source" / "fw" / "build").mkdir(parents=True)
    (ws / "source" / "fw" / "build" / "blinky.bin").write_bytes(b"\x7fELF-not-really" * 8)
    with run_registry(tmp_path / "registry") as registry:
        tekton = Tekton(
            task,
            {
                "publish-to": f"oci://{registry.host}/fw/blinky:latest",
                "project": "fw",
                "artifact-path": "build/blinky.bin",
                "firmware-version": "5.0.1",
                "source-url": "https://git.example.com/fw.git",
                "source-commit": "c0ffee",
                "builder-image": "localhost/ajour/builder-arm-gcc:0.2.0",
                "builder-args": ["--board", "mps2-an385"],
            },
            {"source": str(ws)},
            tmp_path / "results",
        )
        argv = tekton.argv(step["command"] + step.get("args", []))
        assert argv[:4] == ["ajour-build", "step", "publish", "--"]
        env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **tekton.env(step)}
        assert env["AJOUR_DOCKERCONFIG_BOUND"] == "false" and env["DOCKER_CONFIG"] == ""
        result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
        digest = (tmp_path / "results" / "IMAGE_DIGEST").read_text()
        assert (
            tmp_path / "results" / "IMAGE_URL"
        ).read_text() == f"{registry.host}/fw/blinky:5.0.1"
        info = inspect(f"oci://{registry.host}/fw/blinky:latest", {})
        assert info.manifest_digest == digest and info.version == "5.0.1"
        assert info.source.commit == "c0ffee" and info.builder.args == ("--board", "mps2-an385")


def test_publish_task_step_signs_with_the_signing_workspace(tmp_path: Path) -> None:
    from tests.test_publish_signing import ec_key

    task = load_task("ajour-firmware-publish")
    (step,) = task["spec"]["steps"]
    ws, secret = tmp_path / "ws", tmp_path / "signing"
    (ws / "source" / "fw" / "build").mkdir(parents=True)
    (ws / "source" / "fw" / "build" / "blinky.bin").write_bytes(b"\x7fELF-not-really" * 8)
    secret.mkdir()
    ec_key(secret, "sign.key", password="s3cret-pw")
    (secret / "password").write_text("s3cret-pw\n")
    layout = tmp_path / "oci" / "blinky"
    params = {
        "publish-to": f"oci-layout://{layout}:latest",
        "project": "fw",
        "artifact-path": "build/blinky.bin",
        "firmware-version": "5.0.2",
        "source-url": "https://git.example.com/fw.git",
        "source-commit": "c0ffee",
        "builder-image": "localhost/ajour/builder-arm-gcc:0.1.0",
    }
    tekton = Tekton(task, params, {"source": str(ws), "signing": str(secret)}, tmp_path / "results")
    argv = tekton.argv(step["command"] + step.get("args", []))
    env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", **tekton.env(step)}
    env["PYTHONPATH"] = str(REPO)  # this checkout's code, whichever one the venv installed
    assert env["AJOUR_SIGNING_BOUND"] == "true"
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "s3cret-pw" not in result.stdout + result.stderr
    digest = (tmp_path / "results" / "IMAGE_DIGEST").read_text()
    tags = LayoutStore(layout).tags()
    assert {digest.replace(":", "-") + ".sig", digest.replace(":", "-") + ".att"} <= set(tags)
