"""The builder catalog, its CLI, and the tools image."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ajour_build.builders import podman
from ajour_build.builders.catalog import load_catalog
from ajour_build.cli import main
from ajour_build.core.errors import CatalogError, SpecError
from tests.conftest import EXAMPLES, REPO
from tests.firmware import BASE_IMAGE, ensure_builder_images, fake_builder, make_repo


def test_catalog_lists_the_shipped_builders(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["builders", "list", "--json", "--builders", str(REPO / "builder-images")]
    )
    assert result.exit_code == 0, result.output
    builders = {b["name"]: b for b in json.loads(result.output)}
    assert {"arm-gcc", "rust", "zephyr"} <= set(builders)
    assert builders["arm-gcc"]["ref"] == "localhost/ajour/builder-arm-gcc:0.2.0"
    assert all(b["network"] is False for b in builders.values())
    for builder in load_catalog(REPO / "builder-images"):
        text = builder.containerfile.read_text()
        assert "ARG BASE_IMAGE" in text and "FROM ${BASE_IMAGE}" in text
        assert "USER 10001" in text or "USER ${" in text, f"{builder.name} must run as non-root"


def test_catalog_errors_are_located(tmp_path: Path) -> None:
    fake_builder(tmp_path, "ok", "true\n")
    bad = fake_builder(tmp_path, "bad", "true\n")
    (bad / "builder.yaml").write_text(
        "name: other\ndescription: x\nversion: '1'\nimage: Bad/Ref\nnetwrk: true\n"
    )
    (bad / "ajour-builder").chmod(0o644)
    with pytest.raises(SpecError) as info:
        load_catalog(tmp_path)
    text = str(info.value)
    assert "unknown field 'netwrk'" in text and "did you mean 'network'?" in text
    assert "not a valid image reference" in text


def _not_a_catalog(tmp_path: Path, kind: str) -> tuple[Path, str]:
    """A --builders value that is no builder catalog, and what the error says it got."""
    if kind == "missing":
        return tmp_path / "nope", "it does not exist"
    if kind == "file":
        (tmp_path / "file").write_text("x\n")
        return tmp_path / "file", "it is a file"
    if kind == "empty":
        (tmp_path / "empty" / "notes").mkdir(parents=True)
        return tmp_path / "empty", "no folder in it holds a builder.yaml"
    one = fake_builder(tmp_path / "catalog", "ok", "true\n")
    return one, f"it is the folder of one builder (give its parent, '{one.parent}')"


COMMANDS = {
    "build": ["build", "FLEET", "--app", "fw", "--runner", "host"],
    "serve": ["serve", "--fleet", "FLEET", "--insecure-no-auth", "--port", "0"],
    "builders list": ["builders", "list", "--json"],
    "builders build": ["builders", "build", "ok"],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", ["missing", "file", "empty", "one builder"])
@pytest.mark.parametrize("source", ["option", "env"])
def test_a_wrong_builder_catalog_is_a_usage_error(
    tmp_path: Path, command: str, kind: str, source: str
) -> None:
    """Every command that takes --builders (or AJOUR_BUILDERS_DIR) refuses a folder that is
    no catalog, before doing anything: it used to build without any builder."""
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "ajour.yaml").write_text("allowed_applications: [fw]\n")
    value, got = _not_a_catalog(tmp_path, kind)
    args = [str(fleet) if a == "FLEET" else a for a in COMMANDS[command]]
    if source == "option":
        result = CliRunner().invoke(main, [*args, "--builders", str(value)])
        where, fix = "'--builders'", "leave --builders out"
    else:
        result = CliRunner(env={"AJOUR_BUILDERS_DIR": str(value)}).invoke(main, args)
        where, fix = "environment variable AJOUR_BUILDERS_DIR", "unset it"
    assert result.exit_code == 2, result.output
    text = " ".join(result.output.split())  # click wraps nothing, rich may: compare words
    assert f"Invalid value for {where}: '{value}': expected a directory of builder" in text
    assert f"each with a builder.yaml (like Ajour's builder-images/), but {got}." in text
    assert f"{fix} to use the catalog shipped with Ajour ({REPO / 'builder-images'})" in text


def test_the_catalog_from_the_environment_is_used(tmp_path: Path) -> None:
    fake_builder(tmp_path / "catalog", "mine", "true\n")
    env = {"AJOUR_BUILDERS_DIR": str(tmp_path / "catalog")}
    result = CliRunner(env=env).invoke(main, ["builders", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert [b["name"] for b in json.loads(result.output)] == ["mine"]
    unset = CliRunner(env={"AJOUR_BUILDERS_DIR": ""}).invoke(main, ["builders", "list", "--json"])
    assert unset.exit_code == 0, unset.output  # empty is unset: the shipped catalog
    assert {"arm-gcc", "rust", "zephyr"} <= {b["name"] for b in json.loads(unset.output)}


def test_load_catalog_refuses_a_folder_without_builders(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"no folder in it holds a builder\.yaml"):
        load_catalog(tmp_path)


def test_unknown_builder_name(runner: CliRunner) -> None:
    result = runner.invoke(
        main, ["builders", "build", "nope", "--builders", str(REPO / "builder-images")]
    )
    assert result.exit_code == 1
    assert "no builder named 'nope' in the catalog (have: arm-gcc" in result.output


def _tools_tag() -> str:
    digest = hashlib.sha256()
    for path in sorted(
        [
            REPO / "Containerfile",
            REPO / "pyproject.toml",
            *REPO.glob("ajour_build/**/*"),
            *REPO.glob("delivery/**/*"),
        ]
    ):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.read_bytes())
    return f"localhost/ajour/tools:test-{digest.hexdigest()[:12]}"


def test_tools_image_runs_the_clone_step(tmp_path: Path) -> None:
    """The ajour tools image, built from this repo's Containerfile, runs the same step code."""
    state = tmp_path / "podman"
    ensure_builder_images(state, ())
    env = podman.environment(state)
    tag = _tools_tag()
    if not podman.image_exists(tag, env):
        build = subprocess.run(
            [str(REPO / "scripts" / "tools-image"), tag, BASE_IMAGE],
            env={**env, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            check=False,
        )
        assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    repo = make_repo(tmp_path / "repo", EXAMPLES / "firmware" / "c-blinky")
    ws = tmp_path / "ws"
    ws.mkdir()
    # the image's user (10001) must own both, or git refuses the repository as "dubious"
    subprocess.run(["chown", "-R", "10001:10001", str(ws), repo.working_dir], check=True)
    run = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network=none",
            "-v",
            f"{repo.working_dir}:/repo:ro",
            "-v",
            f"{ws}:/workspace/output",
            "-e",
            "AJOUR_GIT_URL=file:///repo",
            "-e",
            "AJOUR_GIT_REVISION=main",
            "-e",
            "AJOUR_CHECKOUT_DIR=/workspace/output/source",
            "-e",
            "AJOUR_RESULT_COMMIT=/workspace/output/commit",
            tag,
            "ajour-build",
            "step",
            "clone",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (ws / "commit").read_text() == repo.head.commit.hexsha
    assert (ws / "source" / "Makefile").is_file()


def test_base_image_gets_updates_and_security_sources(tmp_path: Path) -> None:
    from ajour_build.builders.image import _sources

    (tmp_path / "etc" / "apt").mkdir(parents=True)
    _sources(tmp_path, "bookworm", "http://deb.debian.org/debian")
    assert (tmp_path / "etc" / "apt" / "sources.list").read_text().splitlines() == [
        "deb http://deb.debian.org/debian bookworm main",
        "deb http://deb.debian.org/debian bookworm-updates main",
        "deb http://deb.debian.org/debian-security bookworm-security main",
    ]
    source = (REPO / "ajour_build" / "builders" / "image.py").read_text()
    assert "_sources(root, suite, mirror)" in source, "ensure_base_image must call _sources"


def test_the_builder_readme_lists_every_builder_with_its_toolchain_and_an_example() -> None:
    import yaml

    readme = (REPO / "builder-images" / "README.md").read_text()
    table = {
        row.split("|")[1].strip(): row for row in readme.splitlines() if row.startswith("| [`")
    }
    examples = [
        doc["build"]
        for block in readme.split("```yaml\n")[1:]
        for doc in yaml.safe_load_all(block.split("```")[0])
        if isinstance(doc, dict) and "build" in doc and "source" in doc["build"]
    ]
    for builder in load_catalog(REPO / "builder-images"):
        name = builder.spec.name
        row = table.get(f"[`{name}`]({name}/README.md)")
        assert row is not None, f"builder-images/README.md does not list {name}"
        for tool in builder.spec.toolchains[:1]:
            assert tool.version in row, f"{name}: its toolchain {tool} is not in the table"
        assert [e for e in examples if e["image"] == name], f"{name} has no example spec"
