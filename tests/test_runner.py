"""The local runner, for real: git repos, builder images in podman, QEMU, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ajour_build.builders import podman
from ajour_build.builders.catalog import Builder, load_catalog
from ajour_build.config import load_config
from ajour_build.core.errors import BuildError, SourceError
from ajour_build.core.fleet import load_fleet
from ajour_build.plan import PlannedBuild, plan_builds
from ajour_build.runner.container import ContainerEngine
from ajour_build.runner.host import HostEngine
from ajour_build.runner.job import Engine
from ajour_build.runner.local_runner import LocalRunner
from ajour_build.runner.state_dir import StateDir
from tests.conftest import EXAMPLES, REPO
from tests.firmware import ensure_builder_images, fake_builder, make_repo, run_qemu

FLEET = """\
kind: Application
metadata: {{name: blinky}}
spec:
  firmware:
    container:
      image: blinky:latest
      build:
        image: {image}
        source: {{git: {{uri: "{uri}", rev: "{rev}"}}}}
        args: {args}
        artifact: {{path: "{artifact}"}}
        timeout: 5m
"""


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return ensure_builder_images(tmp_path_factory.mktemp("podman"), ("arm-gcc", "rust"))


@pytest.fixture(scope="session")
def container_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ContainerEngine]:
    state = tmp_path_factory.mktemp("podman-api")
    with podman.api_service(state, podman.environment(state)) as url:
        yield ContainerEngine(url)


@pytest.fixture
def blinky_repo(tmp_path: Path) -> Path:
    path = tmp_path / "blinky.git"
    make_repo(path, EXAMPLES / "firmware" / "c-blinky")
    return path


def planned(
    tmp_path: Path,
    image: str,
    uri: str,
    rev: str = "main",
    args: str = '["--board", "mps2-an385"]',
    artifact: str = "build/blinky.bin",
) -> PlannedBuild:
    fleet_dir = tmp_path / "fleet"
    fleet_dir.mkdir(exist_ok=True)
    (fleet_dir / "app.yaml").write_text(
        FLEET.format(image=image, uri=uri, rev=rev, args=args, artifact=artifact)
    )
    env = {"AJOUR_ALLOWED_APPLICATIONS": '["blinky"]', "AJOUR_SOURCES__ALLOW_LOCAL": "true"}
    config = load_config(None, env=env)
    (build,) = plan_builds(load_fleet([fleet_dir]), config).require_allowed().builds
    return build


def runner(
    tmp_path: Path, engine: Engine, catalog: list[Builder] | None = None, use_cache: bool = True
) -> LocalRunner:
    cat = load_catalog(REPO / "builder-images") if catalog is None else catalog
    return LocalRunner(StateDir(tmp_path / "state"), engine, cat, use_cache)


def test_container_build_stamps_the_version_and_runs_in_qemu(
    tmp_path: Path, images: dict[str, str], container_engine: ContainerEngine, blinky_repo: Path
) -> None:
    build = planned(tmp_path, "arm-gcc", f"file://{blinky_repo}")
    local = runner(tmp_path, container_engine)
    record = local.run(build, version="3.1.4")
    assert record.state == "succeeded" and not record.cached
    assert record.builder is not None and record.builder.runner == "container"
    assert record.builder.image == images["arm-gcc"]
    assert record.commit == git_head(blinky_repo)
    artifacts = local.state.build_dir(record.id) / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == ["blinky.bin", "blinky.elf"]
    assert (
        record.artifact is not None
        and record.artifact.size == (artifacts / "blinky.bin").stat().st_size
    )
    code, output = run_qemu(artifacts / "blinky.elf")
    assert code == 0, output
    assert "AJOUR_FIRMWARE_VERSION=3.1.4" in output.splitlines()

    again = local.run(build, version="3.1.4")
    assert again.cached and again.artifact == record.artifact
    again_log = (local.state.build_dir(again.id) / "build.log").read_text()
    assert again_log.count("cached:") == 1
    # no build ran (no container, no compiler): said by the log, not by a wall clock
    assert (
        "builder" not in again_log
        and "builder" in (local.state.build_dir(record.id) / "build.log").read_text()
    )

    forced = runner(tmp_path, container_engine, use_cache=False).run(build, version="3.1.4")
    assert not forced.cached and forced.state == "succeeded"
    other = local.run(build, version="3.1.5")
    assert not other.cached, "a different version must not hit the cache"
    assert not list((tmp_path / "state" / "staging").iterdir())


def git_head(repo: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_version_defaults_to_the_commit_and_host_mode_matches(
    tmp_path: Path, blinky_repo: Path
) -> None:
    build = planned(tmp_path, "arm-gcc", f"file://{blinky_repo}")
    record = runner(tmp_path, HostEngine()).run(build)
    assert record.version == record.commit == git_head(blinky_repo)
    elf = tmp_path / "state" / "builds" / record.id / "artifacts" / "blinky.elf"
    code, output = run_qemu(elf)
    assert code == 0 and f"AJOUR_FIRMWARE_VERSION={record.commit}" in output


def test_unknown_revision(tmp_path: Path, blinky_repo: Path) -> None:
    build = planned(tmp_path, "arm-gcc", f"file://{blinky_repo}", rev="no-such-branch")
    with pytest.raises(
        SourceError, match=r"revision .no-such-branch. not found .*\(branches: main\)"
    ):
        runner(tmp_path, HostEngine()).run(build)
    (record,) = StateDir(tmp_path / "state").records()
    assert record.state == "failed" and "no-such-branch" in (record.failure or "")


def test_unreachable_repository(tmp_path: Path) -> None:
    build = planned(tmp_path, "arm-gcc", f"file://{tmp_path}/missing.git")
    with pytest.raises(SourceError, match=r"cannot fetch file://.*missing\.git"):
        runner(tmp_path, HostEngine()).run(build)


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('echo "compiling"; echo "error: boom" >&2; exit 2\n', "the builder exited with code 2"),
        ('echo "did nothing"\n', "left no artifact at 'out/fw.bin'"),
        ("mkdir -p out; : > out/fw.bin\n", "is empty"),
        ("mkdir -p out; ln -s /etc/passwd out/fw.bin\n", "outside the workspace through a symlink"),
        (
            "mkdir -p out; ln -s ../../../../../../../../etc out/d; ln -sf d/hostname out/fw.bin\n",
            "outside the workspace",
        ),
    ],
    ids=["exit-2", "no-artifact", "empty", "symlink-escape", "symlink-dir"],
)
def test_builder_failures_are_explained_with_the_log_tail(
    tmp_path: Path, blinky_repo: Path, script: str, expected: str
) -> None:
    catalog_dir = tmp_path / "catalog"
    fake_builder(catalog_dir, "bad", script)
    build = planned(tmp_path, "bad", f"file://{blinky_repo}", args="[]", artifact="out/fw.bin")
    local = runner(tmp_path, HostEngine(), load_catalog(catalog_dir))
    with pytest.raises(BuildError) as info:
        local.run(build)
    assert expected in str(info.value)
    (record,) = local.state.records()
    assert record.state == "failed" and expected in (record.failure or "")
    if "exit" in script:
        assert info.value.log_tail[-2:] == ["compiling", "error: boom"]
        assert "error: boom" in str(info.value)
    assert not list((tmp_path / "state" / "staging").iterdir())
    assert not list((tmp_path / "state" / "cache").iterdir())


def test_missing_builder_image(
    tmp_path: Path, blinky_repo: Path, container_engine: ContainerEngine
) -> None:
    build = planned(tmp_path, "localhost/ajour/no-such-builder:9", f"file://{blinky_repo}")
    with pytest.raises(
        BuildError, match="builder image 'localhost/ajour/no-such-builder:9' does not exist"
    ):
        runner(tmp_path, container_engine).run(build)


def test_ctrl_c_cancels_cleanly(tmp_path: Path, blinky_repo: Path) -> None:
    catalog_dir = tmp_path / "catalog"
    fake_builder(catalog_dir, "slow", 'echo "started"; sleep 60; echo never\n')
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "app.yaml").write_text(
        FLEET.format(
            image="slow", uri=f"file://{blinky_repo}", rev="main", args="[]", artifact="fw.bin"
        )
    )
    (tmp_path / "fleet" / "ajour.yaml").write_text(
        "allowed_applications: [blinky]\nsources: {allow_local: true}\n"
    )
    cmd = [
        sys.executable,
        "-m",
        "ajour_build.cli",
        "build",
        str(tmp_path / "fleet"),
        "--app",
        "blinky",
        "--runner",
        "host",
        "--builders",
        str(catalog_dir),
        "--state-dir",
        str(tmp_path / "state"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and log is None:
        found = list((tmp_path / "state" / "staging").glob("*/build.log"))
        if found and "started" in found[0].read_text():
            log = found[0]
        time.sleep(0.05)
    assert log is not None, "the build never started"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, out + err
    assert "error: build cancelled (Ctrl-C)" in err
    (record,) = StateDir(tmp_path / "state").records()
    assert record.state == "cancelled" and record.log_tail[-1:] == ("started",)
    assert not list((tmp_path / "state" / "staging").iterdir())
    leftover = subprocess.run(
        ["pgrep", "-f", "sleep 60"], capture_output=True, text=True, check=False
    )
    assert str(os.getpid()) not in leftover.stdout


def test_rust_example_in_its_builder_image(
    tmp_path: Path, images: dict[str, str], container_engine: ContainerEngine
) -> None:
    repo = tmp_path / "rust-hello.git"
    make_repo(repo, EXAMPLES / "firmware" / "rust-hello")
    # no args in the spec: the builder's default_args (--release) apply
    build = planned(tmp_path, "rust", f"file://{repo}", args="[]", artifact="target/rust-hello.bin")
    local = runner(tmp_path, container_engine)
    record = local.run(build, version="0.9.1-rc.1")
    assert record.builder is not None and record.builder.image == images["rust"]
    artifacts = local.state.build_dir(record.id) / "artifacts"
    assert {p.name for p in artifacts.iterdir()} == {"rust-hello.bin", "rust-hello.elf"}
    code, output = run_qemu(artifacts / "rust-hello.elf")
    assert code == 0, output
    assert "AJOUR_FIRMWARE_VERSION=0.9.1-rc.1" in output.splitlines()


def test_builds_get_no_network(
    tmp_path: Path, images: dict[str, str], container_engine: ContainerEngine, blinky_repo: Path
) -> None:
    """A builder sees only the loopback interface: no bridge, no host network."""
    folder = tmp_path / "catalog" / "netprobe"
    folder.mkdir(parents=True)
    (folder / "ajour-builder").write_text(
        '#!/bin/sh\nset -eu\nls /sys/class/net > "$AJOUR_ARTIFACT_PATH"\n'
    )
    (folder / "ajour-builder").chmod(0o755)
    (folder / "Containerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY --chmod=0755 ajour-builder /usr/local/bin/\n"
        'USER 10001\nENTRYPOINT ["/usr/local/bin/ajour-builder"]\n'
    )
    (folder / "builder.yaml").write_text(
        "name: netprobe\ndescription: t\nversion: '1'\nimage: localhost/ajour/test-netprobe\n"
    )
    env = podman.environment(tmp_path / "podman")
    subprocess.run(
        [
            "podman",
            "build",
            "--pull=never",
            "--network=none",
            "--build-arg",
            "BASE_IMAGE=localhost/debian:bookworm",
            "-t",
            "localhost/ajour/test-netprobe:1",
            str(folder),
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    build = planned(tmp_path, "netprobe", f"file://{blinky_repo}", args="[]", artifact="net.txt")
    local = runner(tmp_path, container_engine, load_catalog(tmp_path / "catalog"))
    record = local.run(build)
    interfaces = (local.state.build_dir(record.id) / "artifacts" / "net.txt").read_text().split()
    assert interfaces == ["lo"]
