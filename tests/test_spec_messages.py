"""What a newcomer's first mistakes in a fleet spec are told: the place, what was expected,
what was written, and how to fix it; one mistake gives one problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from ajour_build.core.errors import Problem, SpecError
from ajour_build.core.fleet import load_fleet
from tests.conftest import APP, CONFIG_YAML

Write = Callable[[str, str], Path]
DEVICE = "---\nkind: Device\nmetadata:\n  name: app1-dev\n  application: app1\n"


def _problems(path: Path) -> list[Problem]:
    with pytest.raises(SpecError) as info:
        load_fleet([path])
    return info.value.problems


def test_a_typo_in_an_application_does_not_orphan_its_devices(write: Write) -> None:
    text = APP.format(name="app1").replace("artifact:", "artifcat:") + DEVICE
    (problem,) = _problems(write("a.yaml", text))
    assert (problem.path, problem.line) == ("spec.firmware.container.build.artifcat", 15)
    assert problem.hint == "did you mean 'artifact'?"


def test_a_key_at_the_wrong_level_says_where_it_belongs(write: Write) -> None:
    text = APP.format(name="app1").replace("            rev: main", "          rev: main")
    (problem,) = _problems(write("a.yaml", text))
    assert problem.path == "spec.firmware.container.build.source.rev"
    assert problem.message == "unknown field 'rev' at this level"
    assert problem.hint == (
        "'rev' belongs under spec.firmware.container.build.source.git; move it there"
    )


def test_a_list_written_as_text_is_asked_for_as_a_list(write: Write) -> None:
    text = APP.format(name="app1").replace(
        "        artifact:", "        args: --board mps2\n        artifact:"
    )
    (problem,) = _problems(write("a.yaml", text))
    assert problem.path == "spec.firmware.container.build.args"
    assert problem.message == "expected a list, got the text '--board mps2'"
    assert problem.hint == 'write a YAML list, for example ["--board", "mps2"]'
    assert "tuple" not in problem.render() and "Input should" not in problem.render()


def test_an_env_value_of_the_wrong_type_names_both_shapes(write: Write) -> None:
    text = APP.format(name="app1").replace(
        "        artifact:",
        "        env:\n          - name: A\n            value: {x: 1}\n        artifact:",
    )
    (problem,) = _problems(write("a.yaml", text))
    assert problem.path == "spec.firmware.container.build.env[0].value"
    assert problem.message == "expected text or a list, got a mapping"


def test_a_bad_name_is_reported_at_its_line(write: Write) -> None:
    bad_app = write("a.yaml", "kind: Application\nmetadata:\n  name: Thermo_X\n")
    (problem,) = _problems(bad_app)
    assert (problem.path, problem.line, problem.column) == ("metadata.name", 3, 3)
    bad_dev = "kind: Device\nmetadata:\n  name: d1\n  application: Bad_App\n"
    (problem,) = _problems(write("b.yaml", bad_dev))
    assert (problem.path, problem.line) == ("metadata.application", 4)


def test_a_misspelt_kind_gets_a_suggestion(write: Write) -> None:
    (problem,) = _problems(write("a.yaml", "kind: Aplication\nmetadata:\n  name: app1\n"))
    assert problem.path == "kind"
    assert problem.message == "expected 'Application' or 'Device', got the text 'Aplication'"
    assert problem.hint == "did you mean 'Application'?"


def test_problems_are_sorted_by_file_and_line(write: Write) -> None:
    # b.yaml is read after a.yaml, but its device names an application that is missing
    # (found after every file is read) on line 4, before a.yaml's problem
    write("a.yaml", "kind: Application\nmetadata:\n  name: ok\n---\n" + APP.format(name="X"))
    write("b.yaml", "kind: Device\nmetadata:\n  name: d\n  application: nope\n")
    write("c.yaml", "kind: Device\nmetadata:\n  name: d\n  application: Bad\n")
    problems = _problems(write("0.yaml", "kind: Application\nmetadata:\n  name: first\n").parent)
    places = [(Path(str(p.file)).name, p.line) for p in problems]
    assert places == sorted(places)
    assert [f for f, _ in places] == ["a.yaml", "b.yaml", "c.yaml"]


def test_an_empty_spec_file_is_a_warning_and_an_empty_fleet_an_error(
    write: Write, tmp_path: Path
) -> None:
    write("app.yaml", APP.format(name="app1"))
    write("empty.yaml", "# nothing yet\n")
    fleet = load_fleet([tmp_path / "fleet"])
    (warning,) = fleet.warnings
    assert Path(str(warning.file)).name == "empty.yaml"
    assert warning.message == "the file holds no resources (it is empty or only comments)"
    (problem,) = _problems(tmp_path / "fleet" / "empty.yaml")
    assert problem.message == "the spec files hold no Applications or Devices"


def test_validate_writes_warnings_to_stderr_and_strict_fails_on_them(
    write: Write, tmp_path: Path
) -> None:
    write("app.yaml", APP.format(name="app1"))
    write("empty.yaml", "")
    runner = CliRunner()
    fleet = str(tmp_path / "fleet")
    result = runner.invoke(main, ["validate", fleet])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "empty.yaml" in result.stderr
    assert "warning" not in result.stdout and result.stdout.startswith("valid:")
    strict = runner.invoke(main, ["validate", "--strict", fleet])
    assert strict.exit_code == 1
    assert "(--strict) the file holds no resources" in strict.stderr


def test_spec_and_config_problems_come_in_one_pass(write: Write, tmp_path: Path) -> None:
    write("app.yaml", APP.format(name="app1").replace("artifact:", "artifcat:"))
    write("ajour.yaml", CONFIG_YAML + "namespace2: x\n")
    result = CliRunner().invoke(main, ["validate", str(tmp_path / "fleet")])
    assert result.exit_code == 1
    assert "2 problems found" in result.stderr
    assert "ajour.yaml:7:1: namespace2: unknown field" in result.stderr
    assert "app.yaml:15:9: spec.firmware.container.build.artifcat" in result.stderr


def test_two_builds_into_one_repository_are_refused_at_validate(
    write: Write, tmp_path: Path
) -> None:
    canary = (
        "---\nkind: Device\nmetadata:\n  name: canary\n  application: app1\nspec:\n"
        + APP.split("spec:\n", 1)[1]
        .replace("{name}:latest", "{name}:canary")
        .replace("rev: main", "rev: release")
    ).format(name="app1")
    write("app.yaml", APP.format(name="app1") + canary)
    write("ajour.yaml", CONFIG_YAML)
    runner = CliRunner()
    result = runner.invoke(main, ["validate", str(tmp_path / "fleet")])
    assert result.exit_code == 1
    assert "app.yaml:18: spec.firmware.container.image: app1/canary publishes 'app1:canary'" in (
        result.stderr
    )
    assert "repository 'registry.example.com/fw/app1', where app1 publishes" in result.stderr
    assert "hint: give this build a repository of its own" in result.stderr
    out = tmp_path / "out"
    rendered = runner.invoke(main, ["render", str(tmp_path / "fleet"), "-o", str(out)])
    assert rendered.exit_code == 1 and not out.exists()
    write("app.yaml", APP.format(name="app1") + canary.replace("app1:canary", "app1/canary:1"))
    assert runner.invoke(main, ["validate", str(tmp_path / "fleet")]).exit_code == 0


def test_strict_fails_on_plain_text_passwords_too(write: Write, tmp_path: Path) -> None:
    device = "---\nkind: Device\nmetadata: {name: d1, application: app1}\n"
    write(
        "app.yaml",
        APP.format(name="app1") + device + "spec:\n  credentials:\n"
        "    credentials: [{pass: hunter2}]\n",
    )
    runner = CliRunner()
    fleet = str(tmp_path / "fleet")
    assert runner.invoke(main, ["validate", fleet]).exit_code == 0
    strict = runner.invoke(main, ["validate", "--strict", fleet])
    assert strict.exit_code == 1
    assert "(--strict) 1 device(s) keep plain-text passwords" in strict.stderr
    assert "hunter2" not in strict.output


def test_build_reports_spec_and_config_problems_in_one_pass(write: Write, tmp_path: Path) -> None:
    write("app.yaml", APP.format(name="app1").replace("artifact:", "artifcat:"))
    write("ajour.yaml", CONFIG_YAML + "namespace2: x\n")
    result = CliRunner().invoke(main, ["build", str(tmp_path / "fleet"), "--app", "app1"])
    assert result.exit_code == 1
    assert "2 problems found" in result.stderr
    assert "namespace2" in result.stderr and "artifcat" in result.stderr
