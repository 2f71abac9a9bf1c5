"""The worker reads ajour.yaml's registry and delivery sections, like the build side does."""

from __future__ import annotations

from pathlib import Path

import pytest

from ajour_build.config import load_config
from ajour_build.core.errors import ConfigError, SpecError
from delivery.worker_config import load_settings

CONFIG = """\
registry:
  prefix: registry.example.com/fw
allowed_applications: [app]
delivery:
  http: 127.0.0.1:8081
  store: /var/lib/ajour/devices.db
  poll: {synced: 600}
  app_poll:
    canary: {synced: 60, wait: 10}
"""


def test_sections_come_from_the_fleets_ajour_yaml_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "ajour.yaml").write_text(CONFIG)
    found = load_settings(None, [tmp_path], {"AJOUR_DELIVERY__TTL": "5"})
    assert found.registry.prefix == "registry.example.com/fw"
    assert found.delivery.http == "127.0.0.1:8081"
    assert found.delivery.poll.synced == 600 and found.delivery.poll.wait == 30
    assert found.delivery.app_poll["canary"].wait == 10
    assert found.delivery.ttl == 5.0  # the environment wins over the file
    assert found.source == str(tmp_path / "ajour.yaml")
    # the build side reads the same file, delivery section included
    assert load_config(tmp_path / "ajour.yaml", {}).delivery.store == "/var/lib/ajour/devices.db"


def test_defaults_without_a_file(tmp_path: Path) -> None:
    found = load_settings(None, [tmp_path], {})
    assert found.registry.prefix == "127.0.0.1:5000/ajour" and found.delivery.http == ""


def test_a_typo_in_the_delivery_section_is_reported_where_it_is(tmp_path: Path) -> None:
    (tmp_path / "ajour.yaml").write_text(CONFIG.replace("  store:", "  stroe:"))
    with pytest.raises(SpecError) as refused:
        load_settings(None, [tmp_path], {})
    [problem] = refused.value.problems
    assert problem.line == 6 and "stroe" in problem.message
    assert problem.hint and "store" in problem.hint


def test_bad_values_and_variables_are_refused_precisely(tmp_path: Path) -> None:
    (tmp_path / "ajour.yaml").write_text(CONFIG.replace("127.0.0.1:8081", "8081"))
    with pytest.raises(SpecError) as refused:
        load_settings(None, [tmp_path], {})
    assert "is not HOST:PORT" in str(refused.value.problems[0].message)
    with pytest.raises(ConfigError) as bad_env:
        load_settings(None, [], {"AJOUR_DELIVERY__STATUS_TOKENS": "not-json"})
    assert "lists are JSON" in str(bad_env.value)
