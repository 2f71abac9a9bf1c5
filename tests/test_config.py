"""The installation config: file, environment overrides, located errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from ajour_build.config import load_config
from ajour_build.core.errors import ConfigError, SpecError
from ajour_build.core.installation import find_config
from tests.conftest import CONFIG_YAML


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "ajour.yaml"
    path.write_text(CONFIG_YAML)
    config = load_config(path, env={})
    assert config.registry.prefix == "registry.example.com/fw"
    assert config.allowed_applications == ("app1", "app2")
    assert config.default_timeout == "45m0s"
    env = {
        "AJOUR_NAMESPACE": "other",
        "AJOUR_REGISTRY__PREFIX": "127.0.0.1:5000/x",
        "AJOUR_ALLOWED_APPLICATIONS": '["app3"]',
    }
    config = load_config(path, env=env)
    assert config.namespace == "other"
    assert config.registry.prefix == "127.0.0.1:5000/x"
    assert config.allowed_applications == ("app3",)
    assert config.service_account == "builder"  # untouched keys stay from the file


def test_unknown_key_and_bad_values_are_located(tmp_path: Path) -> None:
    path = tmp_path / "ajour.yaml"
    path.write_text("registry:\n  prefx: x\nnamespace: Not_A_Label\nallowed_applications: [Bad]\n")
    with pytest.raises(SpecError) as info:
        load_config(path, env={})
    found = {p.path: p for p in info.value.problems}
    assert found["registry.prefx"].message == "unknown field 'prefx'"
    assert found["registry.prefx"].hint == "did you mean 'prefix'?"
    assert found["registry.prefx"].line == 2
    assert "DNS-1123 label" in found["namespace"].message and found["namespace"].line == 3
    assert "DNS-1123 label" in found["allowed_applications"].message


def test_registry_prefix_without_scheme(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        load_config(None, env={"AJOUR_REGISTRY__PREFIX": "https://r.example.com"})
    assert "no scheme" in info.value.problems[0].message


def test_malformed_environment_json() -> None:
    with pytest.raises(SpecError) as info:
        load_config(None, env={"AJOUR_ALLOWED_APPLICATIONS": "[oops"})
    (problem,) = info.value.problems
    assert problem.file == "environment variable AJOUR_ALLOWED_APPLICATIONS"
    assert problem.message.endswith("got '[oops', which is not JSON")


def test_environment_list_without_json_says_how_to_write_it() -> None:
    with pytest.raises(SpecError) as info:
        load_config(None, env={"ajour_allowed_applications": "thermo, blinky"})
    (problem,) = info.value.problems
    assert problem.file == "environment variable ajour_allowed_applications"
    assert problem.message == (
        "expected a JSON value (this setting is a list or a mapping),"
        " got 'thermo, blinky', which is not JSON"
    )
    assert problem.hint == (
        """write it as JSON, for example ajour_allowed_applications='["thermo", "blinky"]'"""
    )


def test_a_secret_setting_that_is_not_json_is_not_echoed() -> None:
    for name in ("AJOUR_SERVICE__TOKENS", "AJOUR_SERVICE__WEBHOOKS", "AJOUR_SERVICE"):
        with pytest.raises(SpecError) as info:
            load_config(None, env={name: "{github: s3cret-token"})
        assert "s3cret" not in str(info.value)
        assert name in str(info.value)


def test_a_bad_value_from_the_environment_names_the_variable(tmp_path: Path) -> None:
    path = tmp_path / "ajour.yaml"
    path.write_text("registry:\n  prefix: registry.example.com/fw\nnamespace: ajour\n")
    env = {"AJOUR_REGISTRY__PREFX": "x", "AJOUR_NAMESPACE": "Bad"}
    with pytest.raises(SpecError) as info:
        load_config(path, env=env)
    got = {(p.file, p.path, p.line) for p in info.value.problems}
    assert got == {
        ("environment variable AJOUR_REGISTRY__PREFX", "registry.prefx", None),
        ("environment variable AJOUR_NAMESPACE", "namespace", None),
    }
    path.write_text("namespace: Bad\n")  # the same mistake in the file is the file's
    with pytest.raises(SpecError) as info:
        load_config(path, env={})
    assert [(p.file, p.line) for p in info.value.problems] == [(str(path), 1)]


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml", env={})


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "ajour.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    explicit = tmp_path / "x.yaml"
    assert find_config(explicit, [fleet], {"AJOUR_CONFIG": "e.yaml"}) == explicit
    assert find_config(None, [fleet], {"AJOUR_CONFIG": "e.yaml"}) == Path("e.yaml")
    assert find_config(None, [fleet], {}) == fleet / "ajour.yaml"
    (fleet / "ajour.yaml").unlink()
    assert find_config(None, [fleet], {}) is None
    (tmp_path / "ajour.yaml").write_text("{}\n")
    assert find_config(None, [fleet], {}) == Path("ajour.yaml")
