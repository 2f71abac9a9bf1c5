"""Fleet-level rules, Drogue compatibility and device overrides."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ajour_build.core.errors import SpecError
from ajour_build.core.fleet import load_fleet
from ajour_build.core.fleet_collector import Collector
from ajour_build.core.fleet_members import Device, Origin
from ajour_build.core.spec.document import YamlInt
from ajour_build.core.spec.firmware import Firmware
from ajour_build.core.spec.resource import Resource, quick_resource
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


# --------------------------------------------------------------------------- plain resources
# Most resources are validated without building a Resource model (quick_resource); only
# what Resource accepts may pass that way, read the same.


def yaml_int(text: str) -> YamlInt:
    value = YamlInt(int(text))
    value.raw = text
    return value


GOOD_NAMES = st.sampled_from(["app1", "d1", "dev.1", "a" * 63, "x"])
BAD_NAMES = st.sampled_from(
    ["a" * 64, "App1", "-x", "x-", "a..b", "a\n", "", "x\x00", None, 7, True, yaml_int("007")]
)
NAMES = GOOD_NAMES | GOOD_NAMES | BAD_NAMES  # mostly good: the rest must be right too
MAYBE: st.SearchStrategy[Any] = st.sampled_from(
    [None, "x", 1, [], {}, {"a": "b"}, {"a": 1}, {"a": "x\x00"}, {"a": yaml_int("1")}]
)
FIRMWARE = st.sampled_from(
    [None, {}, {"file": {"name": "fw"}}, {"file": {"name": "../x"}}, {"oci": {"image": "a:1"}}]
)
CREDENTIALS = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3) | st.just(yaml_int("010")),
    lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner),
    max_leaves=6,
)
METADATA_EXTRAS = ["uid", "generation", "labels", "annotations", "creation_timestamp", "other"]
SPEC_EXTRAS = ["firmware", "credentials", "alias"]
TOP_EXTRAS = ["apiVersion", "api_version", "kind", "status", "extra"]
TOP_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "apiVersion": st.sampled_from(["ajour.dev/v1alpha1", "v1", None]),
    "api_version": st.sampled_from(["ajour.dev/v1alpha1", "v1"]),
    "kind": st.sampled_from(["Application", "Device", "Other", None, 1]),
}


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """Resources near the plain shape: a few changes at most, so both answers happen."""
    metadata: Any = {"name": draw(NAMES)}
    if draw(st.booleans()):
        metadata["application"] = draw(NAMES)
    for key in draw(st.lists(st.sampled_from(METADATA_EXTRAS), max_size=2)):
        metadata[key] = draw(MAYBE)
    spec: Any = {}
    for key in draw(st.lists(st.sampled_from(SPEC_EXTRAS), max_size=3)):
        spec[key] = draw({"firmware": FIRMWARE, "credentials": CREDENTIALS}.get(key, MAYBE))
    raw: dict[str, Any] = {"metadata": draw(st.just(metadata) | st.just(metadata) | MAYBE)}
    if draw(st.integers(0, 3)):
        raw["spec"] = draw(st.just(spec) | st.just(spec) | MAYBE)
    for key in draw(st.lists(st.sampled_from(TOP_EXTRAS), max_size=2)):
        raw[key] = draw(TOP_VALUES.get(key, MAYBE))
    return raw


@settings(max_examples=1500)
@given(resources())
def test_quick_resource_reads_only_what_resource_accepts_and_the_same(raw: Any) -> None:
    plain = quick_resource(raw)
    if plain is None:
        return  # Resource decides, and names the problem
    kind, name, application, raw_firmware, credentials = plain
    try:  # the firmware section is the caller's to validate, with Firmware
        firmware = None if raw_firmware is None else Firmware.model_validate(raw_firmware)
    except ValidationError:
        with pytest.raises(ValidationError):
            Resource.model_validate(raw)
        return
    res = Resource.model_validate(raw)  # must not raise
    meta = res.metadata
    assert (kind, name, application) == (res.resolved_kind, meta.name, meta.application)
    assert json.dumps(credentials) == json.dumps(res.spec.credentials)
    assert firmware == res.spec.firmware


@pytest.mark.parametrize(
    "raw",
    [
        {"metadata": {"name": "app1"}},
        {"kind": "Device", "metadata": {"name": "d.1", "application": "app1"}, "spec": {}},
        json.loads((EXAMPLES / "drogue" / "device.json").read_text()),
        json.loads((EXAMPLES / "drogue" / "application.json").read_text()),
    ],
)
def test_plain_resources_take_the_quick_path(raw: dict[str, Any]) -> None:
    assert quick_resource(raw) is not None


@pytest.mark.parametrize(
    "credentials",
    [
        {"credentials": [{"pass": 'p"\\é\n'}]},
        {"credentials": [{"pass": "a"}, {"user": {"username": "u", "password": "b"}}]},
        ["odd", 1, 0.5, None, True],
        {"credentials": [{"pass": 1}]},
        {"credentials": [{"pass": "a", "x": 1}]},
        {"credentials": ["pass"]},
        {"credentials": "p"},
        {"credentials": [{"pass": "a"}], "more": 1},
    ],
)
def test_credentials_are_kept_as_json_and_given_back_unchanged(credentials: Any) -> None:
    stored = Collector().credentials(credentials)
    assert stored == json.dumps(credentials, separators=(",", ":"))
    device = Device("app1", "d1", None, stored, "f.yaml", 1)
    assert device.credentials == credentials
    assert device.credentials is not device.credentials  # a copy: nobody can change them
    assert "pass" not in repr(device) and "credentials" not in repr(device)


DEVICES = """\
---
kind: Device
metadata:
  name: d{i}
  application: app1
spec:
  firmware:
    file:
      name: special
  credentials:
    credentials:
      - pass: "secret-{i}"
"""


def test_many_devices_share_one_firmware_and_keep_their_lines(write: Write) -> None:
    devices = write("devices.yaml", "".join(DEVICES.format(i=i) for i in range(50)))
    write("x-apps.yaml", APP.format(name="app1"))  # after the devices: found all the same
    fleet = load_fleet([devices.parent])
    assert len({id(d.firmware) for d in fleet.devices.values()}) == 1
    assert fleet.devices[("app1", "d7")].credentials == {"credentials": [{"pass": "secret-7"}]}
    assert fleet.devices[("app1", "d7")].origin == Origin(str(devices), 7 * 12 + 2)
    assert [d.name for d in fleet.devices_of("app1")][:3] == ["d0", "d1", "d10"]


def test_problems_in_fast_read_files_keep_their_lines(write: Write) -> None:
    text = "".join(DEVICES.format(i=i) for i in range(3)).replace("d2", "d1")
    text = text.replace("name: special", "nmae: special", 1)
    with pytest.raises(SpecError) as info:
        load_fleet([write("devices.yaml", text)])
    missing_name, typo, no_app, twice = info.value.problems  # by line
    assert (missing_name.path, missing_name.line, missing_name.column) == (
        "spec.firmware.file",
        8,
        5,
    )
    assert (typo.path, typo.line, typo.column) == ("spec.firmware.file.nmae", 9, 7)
    assert twice.message == (
        f"device 'd1' of application 'app1' is defined twice (first at {twice.file}:14)"
    )
    assert twice.line == 26
    assert (no_app.line, no_app.path) == (17, "metadata.application")


def test_a_malformed_file_keeps_the_resources_before_the_error(write: Write) -> None:
    write("a.yaml", APP.format(name="app1") + "---\nkind: Device\nmetadata: [\n")
    write("b.yaml", "kind: Device\nmetadata:\n  name: d1\n  application: app1\n")
    with pytest.raises(SpecError) as info:
        load_fleet([write("c.yaml", APP.format(name="app2")).parent])
    (problem,) = info.value.problems  # the malformed YAML; app1 was read, so d1 is fine
    assert problem.message.startswith("malformed YAML") and str(problem.file).endswith("a.yaml")


def test_problems_before_a_malformed_document_keep_their_lines(write: Write) -> None:
    text = DEVICES.format(i=1).replace("name: special", "nmae: special") + "---\nkind: [\n"
    with pytest.raises(SpecError) as info:
        load_fleet([write("devices.yaml", text)])
    typo = next(p for p in info.value.problems if "nmae" in p.message)
    assert (typo.line, typo.column) == (9, 7)  # found by reading the file again, up to the error
    assert any(p.message.startswith("malformed YAML") for p in info.value.problems)
