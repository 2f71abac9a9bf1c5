"""Tenancy: an allowed application publishes only into its own namespace and reads no
repository of the build host unless the installation allows local sources.

Every way a build can start is checked with the real CLI (validate, render, build) on
real git repositories; the service's trigger and webhook are in test_service_tenancy.py.
"""

from __future__ import annotations

from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from ajour_build.config import load_config
from ajour_build.core.errors import SpecError
from ajour_build.core.fleet import load_fleet
from ajour_build.plan import plan_builds
from ajour_build.tenancy import Tenancy

FLEET = """\
kind: Application
metadata: {{name: fw}}
spec:
  firmware:
    container:
      image: fw:latest
      build:
        image: fake
        source: {{git: {{uri: "{uri}", rev: main}}}}
        artifact: {{path: fw.bin}}
---
metadata: {{name: d1, application: fw}}
---
metadata: {{name: evil, application: fw}}
spec:
  firmware:
    container:
      image: {device_image}
      build:
        image: fake
        source: {{git: {{uri: "{device_uri}", rev: main}}}}
        artifact: {{path: {artifact}}}
---
kind: Application
metadata: {{name: rogue}}
spec:
  firmware:
    container: {{image: "rogue:latest"}}
"""
REMOTE = "https://git.example.com/acme/fw.git"


def fleet(
    tmp: Path,
    device_image: str = "rogue:latest",
    uri: str = REMOTE,
    device_uri: str = REMOTE,
    config: str = "",
    artifact: str = "fw.bin",
) -> Path:
    root = tmp / "fleet"
    root.mkdir(exist_ok=True)
    text = FLEET.format(
        uri=uri, device_image=device_image, device_uri=device_uri, artifact=artifact
    )
    (root / "fleet.yaml").write_text(text)
    (root / "ajour.yaml").write_text(
        "allowed_applications: [fw]\nbuilders: {fake: {image: localhost/fake:1}}\n" + config
    )
    return root


def secret_repo(path: Path) -> Path:
    """Another tenant's repository on the build host, holding a secret."""
    repo = git.Repo.init(path, initial_branch="main")
    (path / "secret.txt").write_text("the other tenant's signing key\n")
    repo.index.add(["secret.txt"])
    repo.index.commit("secret", author=git.Actor("x", "x@ajour.invalid"))
    repo.close()
    return path


# -- publishing --------------------------------------------------------------------------


def test_validate_refuses_a_device_that_publishes_into_another_apps_image(
    runner: CliRunner, tmp_path: Path
) -> None:
    result = runner.invoke(main, ["validate", str(fleet(tmp_path))])
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "'fw/evil'" in out and "'rogue:latest'" in out and "repository 'rogue'" in out
    assert "publish_repositories.fw" in out  # the setting that would allow it
    assert "'fw/d1'" not in out  # the app and its other device stay inside fw/


@pytest.mark.parametrize("command", [["render", "-o", "OUT"], ["build", "--app", "fw"]])
def test_render_and_build_refuse_it_too(
    runner: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    state = tmp_path / "state"
    extra = ["--state-dir", str(state), "--runner", "host"] if command[0] == "build" else []
    result = runner.invoke(main, [args[0], str(fleet(tmp_path)), *args[1:], *extra])
    assert result.exit_code == 1, result.output
    assert "publish_repositories.fw" in result.output
    assert not (tmp_path / "out").exists() and not state.exists()  # nothing written


def test_a_grant_in_ajour_yaml_allows_the_repository(runner: CliRunner, tmp_path: Path) -> None:
    root = fleet(tmp_path, config="publish_repositories: {fw: [rogue]}\n")
    result = runner.invoke(main, ["validate", "--json", str(root)])
    assert result.exit_code == 0, result.output
    assert '"builds": 2' in result.output


@pytest.mark.parametrize(
    ("image", "grants", "allowed"),
    [
        ("fw:latest", {}, True),
        ("fw/canary:1", {}, True),
        ("fw/a/b:1", {}, True),
        ("fw-extra:latest", {}, False),  # a prefix of the name is not the namespace
        ("fwx/a:1", {}, False),
        ("rogue:latest", {}, False),
        ("rogue/fw:latest", {}, False),
        ("vendor/fw:1", {"fw": ("vendor",)}, True),
        ("vendor:1", {"fw": ("vendor",)}, True),
        ("vendor2/fw:1", {"fw": ("vendor",)}, False),
        ("shared/fw:1", {"fw": ("shared/fw",)}, True),
        ("shared/other:1", {"fw": ("shared/fw",)}, False),
        ("vendor/fw:1", {"other": ("vendor",)}, False),  # grants are per application
    ],
)
def test_namespace_rule(image: str, grants: dict[str, tuple[str, ...]], allowed: bool) -> None:
    refusal = Tenancy(grants).publish_refusal("fw", image)
    assert (refusal is None) == allowed, refusal


def test_bad_grants_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "ajour.yaml"
    path.write_text("publish_repositories: {fw: ['Rogue:latest']}\n")
    with pytest.raises(SpecError, match=r"publish_repositories.fw: 'Rogue:latest' is not a"):
        load_config(path, env={})
    path.write_text('publish_repositories: {fw: ["rogue\\n"]}\n')
    with pytest.raises(SpecError, match="is not a repository name"):
        load_config(path, env={})


# -- local sources -----------------------------------------------------------------------


def test_a_file_source_is_refused_unless_allowed(runner: CliRunner, tmp_path: Path) -> None:
    secret = secret_repo(tmp_path / "other-tenant")
    uri = f"file://{secret}"
    root = fleet(tmp_path, device_image="fw/probe:1", device_uri=uri, artifact="secret.txt")
    result = runner.invoke(main, ["validate", str(root)])
    assert result.exit_code == 1, result.output
    out = " ".join(result.output.split())
    assert "'fw/evil'" in out and "sources.allow_local: true" in out and str(secret) in out


def test_build_of_a_file_source_clones_nothing(runner: CliRunner, tmp_path: Path) -> None:
    """The probe: a build whose artifact is another repository's secret.txt never runs."""
    secret = secret_repo(tmp_path / "other-tenant")
    root = fleet(
        tmp_path, device_image="fw/probe:1", device_uri=f"file://{secret}", artifact="secret.txt"
    )
    state = tmp_path / "state"
    args = ["build", str(root), "--app", "fw", "--device", "evil", "--runner", "host"]
    result = runner.invoke(main, [*args, "--state-dir", str(state)])
    assert result.exit_code == 1, result.output
    assert "sources.allow_local" in result.output
    assert not state.exists()
    assert list(tmp_path.rglob("secret.txt")) == [secret / "secret.txt"]  # only the original


def test_allow_local_lets_file_sources_through(runner: CliRunner, tmp_path: Path) -> None:
    secret = secret_repo(tmp_path / "repo")
    root = fleet(
        tmp_path,
        device_image="fw/probe:1",
        uri=f"file://{secret}",
        device_uri=f"file://{secret}",
        config="sources: {allow_local: true}\n",
    )
    result = runner.invoke(main, ["validate", str(root)])
    assert result.exit_code == 0, result.output
    env = {"AJOUR_SOURCES__ALLOW_LOCAL": "true"}
    (root / "ajour.yaml").write_text("allowed_applications: [fw]\n")
    assert plan_builds(load_fleet([root]), load_config(root / "ajour.yaml", env)).builds


def test_examples_validate_with_their_grant(runner: CliRunner) -> None:
    from tests.conftest import EXAMPLES

    result = runner.invoke(main, ["validate", str(EXAMPLES / "fleet")])
    assert result.exit_code == 0, result.output
    config = load_config(EXAMPLES / "fleet" / "ajour.yaml", env={})
    assert config.publish_repositories == {"sensor-fleet": ("sensors",)}
    assert config.sources.allow_local is False
