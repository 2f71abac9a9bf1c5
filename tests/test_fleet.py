"""Fleet-level rules, Drogue compatibility and device overrides."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from ajour_build.core.errors import SpecError
from ajour_build.core.fleet import load_fleet
from tests.conftest import APP, EXAMPLES

Write = Callable[[str, str], Path]


def test_drogue_registry_json_loads_unchanged() -> None:
    fleet = load_fleet([EXAMPLES / "drogue"])
    app = fleet.applications["drogue-app"]
    assert app.firmware is not None and app.firmware.container is not None
    assert app.firmware.container.image_pull_policy == "Always"  # read from Drogue's "oci"
    device = fleet.devices[("drogue-app", "device1")]
    assert device.firmware is None
    assert device.credentials == {"credentials": [{"pass": "hey-rodney"}]}
    # device inherits the application's firmware spec
    assert fleet.effective_firmware("drogue-app", "device1") == app.firmware


def test_drogue_list_responses_load(tmp_path: Path) -> None:
    app = json.loads((EXAMPLES / "drogue" / "application.json").read_text())
    dev = json.loads((EXAMPLES / "drogue" / "device.json").read_text())
    (tmp_path / "list.json").write_text(json.dumps([app]))
    (tmp_path / "items.json").write_text(json.dumps({"items": [dev]}))
    fleet = load_fleet([tmp_path])
    assert list(fleet.applications) == ["drogue-app"]
    assert list(fleet.devices) == [("drogue-app", "device1")]


def test_device_overrides_application_as_a_whole(write: Write) -> None:
    path = write(
        "a.yaml",
        APP.format(name="app1")
        + "---\nkind: Device\nmetadata: {name: d1, application: app1}\n"
        + "spec:\n  firmware:\n    file: {name: special}\n"
        + "---\nkind: Device\nmetadata: {name: d2, application: app1}\n",
    )
    fleet = load_fleet([path])
    own = fleet.effective_firmware("app1", "d1")
    assert own is not None and own.kind == "file" and own.build is None
    inherited = fleet.effective_firmware("app1", "d2")
    assert inherited is not None and inherited.kind == "container"


def test_device_naming_a_missing_application(write: Write) -> None:
    path = write(
        "a.yaml", APP.format(name="app1") + "---\nmetadata: {name: d1, application: ap1}\n"
    )
    with pytest.raises(SpecError) as info:
        load_fleet([path])
    (problem,) = info.value.problems
    assert problem.message == "device 'd1' names application 'ap1', which is not in the fleet"
    assert problem.hint == "did you mean 'app1'?"
    assert problem.line == 18


def test_duplicate_names_across_files(write: Write) -> None:
    first = write("a.yaml", APP.format(name="app1"))
    second = write(
        "b.yaml",
        APP.format(name="app1") + "---\nmetadata: {name: d, application: app1}\n" * 2,
    )
    with pytest.raises(SpecError) as info:
        load_fleet([first.parent])
    messages = [p.render() for p in info.value.problems]
    assert len(messages) == 2
    assert f"application 'app1' is defined twice (first at {first}:1)" in messages[0]
    assert str(second) in messages[0]
    assert "device 'd' of application 'app1' is defined twice" in messages[1]


def test_all_problems_of_all_files_are_reported(write: Write) -> None:
    write("a.yaml", "metadata: {name: Bad}\n")
    write("b.yaml", "a: [\n")
    write("c.json", "{")
    with pytest.raises(SpecError) as info:
        load_fleet([write("d.yaml", APP.format(name="app1")).parent])
    files = sorted(Path(p.file or "").name for p in info.value.problems)
    assert files == ["a.yaml", "b.yaml", "c.json"]


def test_typo_in_spec_section_is_a_warning(write: Write) -> None:
    fleet = load_fleet([write("a.yaml", "metadata: {name: app1}\nspec:\n  firmwre: {}\n")])
    (warning,) = fleet.warnings
    assert warning.path == "spec.firmwre" and warning.hint == "did you mean 'firmware'?"


def test_config_file_in_fleet_dir_is_not_a_resource(write: Write) -> None:
    write("ajour.yaml", "allowed_applications: [app1]\n")
    fleet = load_fleet([write("a.yaml", APP.format(name="app1")).parent])
    assert list(fleet.applications) == ["app1"]


def test_missing_path_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_fleet([tmp_path / "nope"])
    assert info.value.problems[0].message == "no such file or directory"
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError) as info:
        load_fleet([tmp_path / "empty"])
    assert "no .yaml, .yml or .json spec files found" in info.value.problems[0].message
