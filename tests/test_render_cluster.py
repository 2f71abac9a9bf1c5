"""What render writes for a cluster: an apply-able directory, runs that follow a branch
(--pin), warnings for what a cluster cannot reach, CEL filters for local sources and the
EventListener's RBAC."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import git
import pytest
import yaml
from click.testing import CliRunner

from ajour_build.cli import main
from tests.conftest import APP, CONFIG_YAML, EXAMPLES
from tests.test_render import shared_validator

Write = Callable[[str, str], Path]
KUBECTL_SUFFIXES = (".json", ".yaml", ".yml")  # what `kubectl apply -f DIR` reads


def _render(*args: str) -> Any:
    result = CliRunner().invoke(main, ["render", *args])
    assert result.exit_code == 0, result.output
    return result


def test_the_output_directory_holds_only_manifests(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    # a directory an earlier release rendered into: its index is cleaned up with its files
    (out / "ajour-old.yaml").write_text("kind: PipelineRun\n")
    (out / ".ajour-render.json").write_text(json.dumps({"files": ["ajour-old.yaml"]}))
    _render(str(EXAMPLES / "fleet"), "-o", str(out))
    read = [p for p in out.rglob("*") if p.is_file() and p.suffix in KUBECTL_SUFFIXES]
    assert len(read) == 4 and not (out / "ajour-old.yaml").exists()
    for path in read:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] == "tekton.dev/v1" and doc["kind"] == "PipelineRun"
    # the record of what was written is still there: the next render removes stale files
    _render(str(EXAMPLES / "fleet"), "-o", str(out), "--app", "blinky")
    assert len([p for p in out.iterdir() if p.suffix == ".yaml"]) == 2


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kubectl_decodes_every_file_of_the_output_directory(tmp_path: Path) -> None:
    """kubectl itself reads the directory; no API server is needed to decode the files (the
    port it is pointed at refuses, so it stops at recognising the kinds)."""
    out = tmp_path / "out"
    _render(str(EXAMPLES / "fleet"), "-o", str(out), "--triggers")
    done = subprocess.run(
        [
            *("kubectl", "apply", "--dry-run=client", "--validate=false", "-f", str(out)),
            *("--server=http://127.0.0.1:9", "--request-timeout=5s"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "unable to recognize" in done.stderr  # it got as far as the server
    assert "unable to decode" not in done.stderr and ".ajour-render" not in done.stderr


def _local_fleet(write: Write, tmp_path: Path, uri: str) -> Path:
    write("app.yaml", APP.format(name="app1").replace("https://git.example.com/org/fw.git", uri))
    write("ajour.yaml", CONFIG_YAML + "sources: {allow_local: true}\n")
    return tmp_path / "fleet"


def test_cel_filters_of_a_local_source_name_only_that_source(write: Write, tmp_path: Path) -> None:
    fleet = _local_fleet(write, tmp_path, "file:///srv/git/fw")
    docs = list(yaml.safe_load_all(_render(str(fleet), "--stdout", "--triggers").stdout))
    (listener,) = [d for d in docs if d["kind"] == "EventListener"]
    for trigger in listener["spec"]["triggers"]:
        cel = trigger["interceptors"][1]["params"][0]["value"]
        spellings = json.loads(cel.split(" in ", 1)[1].split("]", 1)[0] + "]")
        assert spellings == ["file:///srv/git/fw"], cel


def test_render_warns_about_what_a_cluster_cannot_reach(write: Write, tmp_path: Path) -> None:
    result = _render(str(EXAMPLES / "fleet"), "-o", str(tmp_path / "out"))
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 4, result.stderr
    assert warnings[0].startswith("warning: registry.prefix '127.0.0.1:5000/ajour' (")
    assert "is a loopback address" in warnings[0]
    assert "tools_image 'localhost/ajour/tools:0.1.0'" in warnings[1]
    assert "./scripts/tools-image REGISTRY/ajour/tools:0.1.0" in warnings[1]
    assert "builder image 'localhost/ajour/builder-arm-gcc:0.2.0'" in warnings[2]
    assert "warning" not in result.stdout
    as_json = json.loads(
        _render(str(EXAMPLES / "fleet"), "-o", str(tmp_path / "o2"), "--json").stdout
    )
    assert [w.split(" ", 1)[0] for w in as_json["warnings"]] == [
        "registry.prefix",
        "tools_image",
        "builder",
        "builder",
    ]
    # a file:// source is a warning; a registry, tools and builder images a cluster reaches are not
    fleet = _local_fleet(write, tmp_path, "file:///srv/git/fw")
    (fleet / "ajour.yaml").write_text(
        CONFIG_YAML
        + "sources: {allow_local: true}\ntools_image: registry.example.com/ajour/tools:1\n"
    )
    local = _render(str(fleet), "--stdout")
    warnings = [line for line in local.stderr.splitlines() if line.startswith("warning:")]
    assert (
        len(warnings) == 1
        and "clones 'file:///srv/git/fw', a path on this machine" in (warnings[0])
    )


def test_pin_names_each_run_by_the_commit_it_builds(write: Write, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "VERSION").write_text("1.0.0\n")
    repo = git.Repo.init(source, initial_branch="main")
    with repo.config_writer() as cfg:
        cfg.set_value("user", "name", "Ajour Test")
        cfg.set_value("user", "email", "test@ajour.invalid")
    repo.git.add(A=True)
    first = repo.index.commit("one").hexsha
    fleet = _local_fleet(write, tmp_path, source.as_uri())

    def run(*extra: str) -> dict[str, Any]:
        docs = list(yaml.safe_load_all(_render(str(fleet), "--stdout", *extra).stdout))
        (doc,) = docs
        assert [e.message for e in shared_validator("PipelineRun").iter_errors(doc)] == []
        return doc  # type: ignore[no-any-return]

    unpinned = run()
    pinned = run("--pin")
    params = {p["name"]: p["value"] for p in pinned["spec"]["params"]}
    assert params["git-revision"] == first
    assert pinned["metadata"]["annotations"]["ajour.dev/git-commit"] == first
    assert pinned["metadata"]["annotations"]["ajour.dev/git-revision"] == "main"
    assert pinned["metadata"]["name"].endswith("-" + first[:7])
    (source / "VERSION").write_text("1.1.0\n")
    repo.git.add(A=True)
    second = repo.index.commit("two").hexsha
    moved = run("--pin")
    assert moved["metadata"]["name"] == pinned["metadata"]["name"][:-7] + second[:7]
    assert run()["metadata"]["name"] == unpinned["metadata"]["name"]  # by spec only
    note = CliRunner().invoke(main, ["render", str(fleet), "--stdout"]).stderr
    assert "note: each PipelineRun is named by its build spec" in note


def test_triggers_bring_the_event_listener_its_rbac() -> None:
    docs = list(
        yaml.safe_load_all(_render(str(EXAMPLES / "fleet"), "--stdout", "--triggers").stdout)
    )
    (listener,) = [d for d in docs if d["kind"] == "EventListener"]
    account = listener["spec"]["serviceAccountName"]
    (sa,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert sa["metadata"] == {
        "name": account,
        "namespace": "ajour",
        "labels": listener["metadata"]["labels"],
    }
    roles = {d["kind"]: d for d in docs if d["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    assert roles["RoleBinding"]["metadata"]["namespace"] == "ajour"
    assert roles["RoleBinding"]["roleRef"]["name"] == "tekton-triggers-eventlistener-roles"
    assert roles["ClusterRoleBinding"]["roleRef"]["name"] == (
        "tekton-triggers-eventlistener-clusterroles"
    )
    for binding in roles.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": "ajour"}
        ]
    # the builds still run as the installation's service account, not the listener's
    for doc in docs:
        if doc["kind"] == "TriggerTemplate":
            (run,) = doc["spec"]["resourcetemplates"]
            assert run["spec"]["taskRunTemplate"]["serviceAccountName"] == "ajour-build"
