"""The ajour-build command line: exit codes, messages, JSON, no partial output."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ajour_build.cli import main
from tests.conftest import APP, CONFIG_YAML, EXAMPLES

Write = Callable[[str, str], Path]


def test_validate_summarises_a_valid_fleet(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", str(EXAMPLES / "fleet")])
    assert result.exit_code == 0, result.output
    assert "valid: 4 applications, 6 devices (2 with their own firmware)" in result.output
    assert "4 distinct builds, all allowed" in result.output


def test_validate_json(runner: CliRunner) -> None:
    result = runner.invoke(main, ["validate", "--json", str(EXAMPLES / "fleet")])
    data = json.loads(result.output)
    assert data["valid"] is True and data["builds"] == 4
    assert data["firmwareSources"] == {"container": 8, "file": 1, "hawkbit": 1}


def test_validate_reports_problems_with_place_and_exit_1(runner: CliRunner, write: Write) -> None:
    path = write(
        "a.yaml", APP.format(name="app1").replace("rev: main", "rev: main\n            revv: x")
    )
    result = runner.invoke(main, ["validate", str(path)])
    assert result.exit_code == 1
    assert result.output.startswith("error: 1 problem found:")
    assert (
        f"{path}:15:13: spec.firmware.container.build.source.git.revv: unknown field 'revv'"
        in result.output
    )
    assert "hint: did you mean 'rev'?" in result.output
    as_json = runner.invoke(main, ["validate", "--json", str(path)])
    assert as_json.exit_code == 1
    (problem,) = json.loads(as_json.output)["problems"]
    assert problem["line"] == 15 and problem["path"].endswith("revv")


def test_render_writes_one_file_per_build(runner: CliRunner, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(main, ["render", str(EXAMPLES / "fleet"), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    files = sorted(p.name for p in out.glob("*.yaml"))
    assert files == sorted(f"{b['name']}.yaml" for b in report["builds"])
    assert len(files) == 4
    for path in out.glob("*.yaml"):
        (doc,) = list(yaml.safe_load_all(path.read_text()))
        assert doc["kind"] == "PipelineRun"


def test_render_removes_only_its_own_stale_files(
    runner: CliRunner, write: Write, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep-me.yaml").write_text("mine: true\n")
    config = write("ajour.yaml", CONFIG_YAML)
    write("a.yaml", APP.format(name="app1"))
    app2 = write("b.yaml", APP.format(name="app2"))
    assert runner.invoke(main, ["render", str(config.parent), "-o", str(out)]).exit_code == 0
    assert len(list(out.glob("ajour-*.yaml"))) == 2
    app2.unlink()
    assert runner.invoke(main, ["render", str(config.parent), "-o", str(out)]).exit_code == 0
    assert [p.name.startswith("ajour-app1-") for p in out.glob("ajour-*.yaml")] == [True]
    assert (out / "keep-me.yaml").read_text() == "mine: true\n"


def test_refused_application_fails_without_partial_output(
    runner: CliRunner, write: Write, tmp_path: Path
) -> None:
    write("ajour.yaml", CONFIG_YAML)
    write("a.yaml", APP.format(name="app1"))
    path = write("z.yaml", APP.format(name="rogue"))
    out = tmp_path / "out"
    result = runner.invoke(main, ["render", str(path.parent), "-o", str(out)])
    assert result.exit_code == 1
    assert (
        "error: build refused: application 'rogue' is not on the build allowlist" in result.output
    )
    assert "allowed_applications" in result.output
    assert not out.exists()


def test_bad_input_leaves_no_output(runner: CliRunner, write: Write, tmp_path: Path) -> None:
    write("ajour.yaml", CONFIG_YAML)
    path = write("a.yaml", APP.format(name="app1").replace("path: out/fw.bin", "path: ../x"))
    out = tmp_path / "out"
    result = runner.invoke(main, ["render", str(path.parent), "-o", str(out)])
    assert result.exit_code == 1 and "contains '..'" in result.output
    assert not out.exists()


def test_render_needs_a_config(
    runner: CliRunner, write: Write, tmp_path: Path, monkeypatch: object
) -> None:
    path = write("a.yaml", APP.format(name="app1"))
    result = runner.invoke(main, ["render", str(path), "--stdout"], env={"AJOUR_CONFIG": ""})
    assert result.exit_code == 1
    assert "no installation config found" in result.output


def test_stdout_is_pure_yaml(runner: CliRunner) -> None:
    result = runner.invoke(main, ["render", str(EXAMPLES / "fleet"), "--stdout"])
    assert result.exit_code == 0
    docs = list(yaml.safe_load_all(result.stdout))
    assert [d["kind"] for d in docs] == ["PipelineRun"] * 4


def test_debug_shows_the_traceback(write: Write) -> None:
    path = write("a.yaml", "metadata: {name: Bad}\n")
    cmd = [sys.executable, "-m", "ajour_build.cli"]
    plain = subprocess.run(
        [*cmd, "validate", str(path)], capture_output=True, text=True, check=False
    )
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.startswith("error: ")
    debug = subprocess.run(
        [*cmd, "--debug", "validate", str(path)], capture_output=True, text=True, check=False
    )
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "SpecError" in debug.stderr


def test_delivery_targets_resolve_device_overrides(runner: CliRunner) -> None:
    from delivery.cli import main as delivery_main

    result = runner.invoke(delivery_main, ["targets", "--fleet", str(EXAMPLES / "fleet")])
    assert result.exit_code == 0, result.output
    rows = {
        (r["application"], r["device"]): r["firmware"]
        for r in map(json.loads, result.output.splitlines())
    }
    assert rows[("sensor-fleet", "sensor-legacy")] == {
        "hawkbit": {"controller": "sensor-legacy-ctrl"}
    }
    assert rows[("blinky", "blinky-1")]["container"]["image"] == "blinky:latest"
    assert rows[("blinky", "blinky-canary")]["container"]["image"] == "blinky/canary:latest"


BAD_INPUT = {
    "malformed YAML": ("a.yaml", "kind: Application\nmetadata: {name: app1\n", "malformed YAML"),
    "unknown field": (
        "a.yaml",
        APP.format(name="app1").replace("artifact:", "artifcat:"),
        "unknown field 'artifcat'",
    ),
    "two branches": (
        "a.yaml",
        "metadata: {name: app1}\nspec:\n  firmware:\n"
        "    file: {name: a}\n    hawkbit: {controller: b}\n",
        "exactly one of",
    ),
    "missing application": (
        "a.yaml",
        "metadata: {name: d1, application: ghost}\n",
        "names application 'ghost'",
    ),
    "duplicate names": (
        "a.yaml",
        APP.format(name="app1") + "---\n" + APP.format(name="app1"),
        "defined twice",
    ),
    "hostile git URI": (
        "a.yaml",
        APP.format(name="app1").replace("https://git.example.com/org/fw.git", "'ext::sh -c id'"),
        "remote helper",
    ),
    "dotdot artifact": (
        "a.yaml",
        APP.format(name="app1").replace("out/fw.bin", "../fw.bin"),
        "contains '..'",
    ),
    "1 MB args": (
        "a.yaml",
        APP.format(name="app1").replace(
            "        artifact:",
            "        args: [" + ", ".join(["x" * 1000] * 1000) + "]\n        artifact:",
        ),
        "the limits are 256 items",
    ),
    "not allowed": (
        "a.yaml",
        APP.format(name="intruder"),
        "'intruder' is not on the build allowlist",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_exit_1_precise_error_no_output(
    case: str, runner: CliRunner, write: Write, tmp_path: Path
) -> None:
    name, text, expected = BAD_INPUT[case]
    write("ajour.yaml", CONFIG_YAML)
    path = write(name, text)
    out = tmp_path / "out"
    result = runner.invoke(main, ["render", str(path.parent), "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ")
    assert expected in result.output
    assert not out.exists()
