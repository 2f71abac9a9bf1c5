"""One version grammar (an OCI tag, matched whole) for the CLI, the clone step and publishers.

The API's side is in test_service_tenancy.py; docs/fleet-spec.md states the grammar.
"""

from __future__ import annotations

import json
from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from ajour_build.core.errors import PublishError, SourceError
from ajour_build.core.version import check_version, is_version, version_problem
from ajour_build.publish.publisher import FirmwareArtifact
from ajour_build.steps.clone import clone

GOOD = ["1.0", "1.2.0", "2.0.0-rc.1", "v1_2", "_x", "A" * 128, "0" * 40, "1.0.0-rc1"]
BAD = [
    ("1.0\n", "contains '\\n'"),
    ("1.0~rc1", "contains '~'"),
    ("1.0.0+build.1", "contains '+'"),
    ("1 0", "contains ' '"),
    ("1.0/x", "contains '/'"),
    ("é1", "contains 'é'"),
    ("-1", "starts with '-'"),
    (".1", "starts with '.'"),
    ("", "it is empty"),
    ("1" * 129, "129 characters"),
]


@pytest.mark.parametrize("version", GOOD)
def test_versions_that_are_oci_tags(version: str) -> None:
    assert is_version(version) and check_version(version) == version
    assert version_problem(version) is None


@pytest.mark.parametrize(("version", "why"), BAD)
def test_versions_that_are_not(version: str, why: str) -> None:
    problem = version_problem(version)
    assert problem is not None and why in problem and "OCI tag" in problem
    with pytest.raises(ValueError, match="OCI tag"):
        check_version(version)


def repo(path: Path, version_file: str | None = None) -> Path:
    """A real git repository with one commit (closed: no git processes outlive it)."""
    r = git.Repo.init(path, initial_branch="main")
    (path / "main.c").write_text("int main(void) { return 0; }\n")
    r.index.add(["main.c"])
    if version_file is not None:
        (path / "VERSION").write_text(version_file)
        r.index.add(["VERSION"])
    r.index.commit("fw", author=git.Actor("x", "x@ajour.invalid"))
    r.close()
    return path


# -- the CLI -----------------------------------------------------------------------------


def test_build_refuses_a_version_with_a_trailing_newline(runner: CliRunner, tmp_path: Path) -> None:
    src = repo(tmp_path / "src")
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "fw.yaml").write_text(
        "kind: Application\nmetadata: {name: fw}\nspec:\n  firmware:\n    container:\n"
        "      image: fw:latest\n      build:\n        image: localhost/b:1\n"
        f"        source: {{git: {{uri: 'file://{src}', rev: main}}}}\n"
    )
    (fleet / "ajour.yaml").write_text("allowed_applications: [fw]\nsources: {allow_local: true}\n")
    state = tmp_path / "state"
    args = ["build", str(fleet), "--app", "fw", "--runner", "host", "--state-dir", str(state)]
    result = runner.invoke(main, [*args, "--version", "1.0\n"])
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--version'" in result.output and "contains '\\n'" in result.output
    assert not state.exists()


@pytest.mark.parametrize(("version", "why"), [("1.0\n", "'\\n'"), ("1.0.0+b1", "'+'")])
def test_publish_refuses_it_and_writes_no_tag(
    runner: CliRunner, tmp_path: Path, version: str, why: str
) -> None:
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"\x7fELF firmware")
    layout = tmp_path / "layout"
    args = ["publish", str(firmware), "--to", f"oci-layout://{layout}:latest"]
    result = runner.invoke(main, [*args, "--version", version])
    assert result.exit_code == 2, result.output
    assert why in result.output and "OCI tag" in result.output
    assert not layout.exists()
    ok = runner.invoke(main, [*args, "--version", "1.0", "--json"])
    assert ok.exit_code == 0, ok.output
    index = json.loads((layout / "index.json").read_text())
    tags = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert tags == ["1.0", "latest"]


def test_the_publisher_checks_it_too(tmp_path: Path) -> None:
    """The Tekton publish step takes its version from the environment, past any CLI check."""
    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(b"fw")
    with pytest.raises(PublishError, match=r"version '1\.0\\n' is not valid: it contains"):
        FirmwareArtifact(firmware, "1.0\n").check()


# -- the clone step ----------------------------------------------------------------------


def test_clone_refuses_a_bad_version_before_fetching(tmp_path: Path) -> None:
    src = repo(tmp_path / "src")
    dest = tmp_path / "checkout"
    with pytest.raises(SourceError, match=r"refusing to fetch: version '1\.0~rc1' is not valid"):
        clone(f"file://{src}", "main", dest, "1.0~rc1")
    assert not dest.exists()


@pytest.mark.parametrize(
    ("text", "stamped"),
    [("1.2.0\n", "1.2.0"), ("1.0~rc1\n", None), ("1.0+git\n", None), ("2.0 beta\n", None)],
)
def test_a_version_file_counts_only_if_it_is_a_version(
    tmp_path: Path, text: str, stamped: str | None
) -> None:
    src = repo(tmp_path / "src", version_file=text)
    checkout = clone(f"file://{src}", "main", tmp_path / "checkout")
    assert checkout.version == (stamped or checkout.commit)
