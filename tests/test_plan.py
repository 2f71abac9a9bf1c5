"""BuildSpec planning: dedupe by effective spec, stable names, the allowlist gate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ajour_build.config import load_config
from ajour_build.core.errors import AjourError, NotAllowedError
from ajour_build.core.fleet import load_fleet
from ajour_build.core.spec.firmware import BuildSpec
from ajour_build.plan import build_key, plan_builds
from tests.conftest import APP, CONFIG_YAML, EXAMPLES

Write = Callable[[str, str], Path]


def _config(tmp_path: Path, text: str = CONFIG_YAML) -> Path:
    path = tmp_path / "ajour.yaml"
    path.write_text(text)
    return path


def test_devices_with_identical_specs_share_one_build(write: Write, tmp_path: Path) -> None:
    override = APP.format(name="app1").split("spec:\n", 1)[1]
    docs = [APP.format(name="app1")]
    docs += [f"metadata: {{name: d{i}, application: app1}}\n" for i in range(3)]
    # two devices with their own, identical spec (different from the app's): one more build
    docs += [
        f"metadata: {{name: o{i}, application: app1}}\nspec:\n"
        + override.replace("rev: main", "rev: release")
        for i in range(2)
    ]
    fleet = load_fleet([write("a.yaml", "---\n".join(docs))])
    plan = plan_builds(fleet, load_config(_config(tmp_path), env={}))
    assert len(plan.builds) == 2
    by_rev = {b.build.source.git.rev: b for b in plan.builds}
    assert [str(c) for c in by_rev["main"].consumers] == ["app1", "app1/d0", "app1/d1", "app1/d2"]
    assert [str(c) for c in by_rev["release"].consumers] == ["app1/o0", "app1/o1"]
    assert by_rev["main"].image == "registry.example.com/fw/app1:latest"
    assert by_rev["main"].timeout == "45m0s"  # the config's default_timeout


def test_names_are_stable_and_dns_safe(write: Write, tmp_path: Path) -> None:
    long = "a" * 63
    fleet = load_fleet([write("a.yaml", APP.format(name=long))])
    config = load_config(None, env={"AJOUR_ALLOWED_APPLICATIONS": '["*"]'})
    first = plan_builds(fleet, config).builds[0]
    again = plan_builds(load_fleet([write("a.yaml", APP.format(name=long))]), config).builds[0]
    assert first.name == again.name
    assert len(first.name) <= 63 and first.name == f"ajour-{'a' * 40}-{first.key[:12]}"


def test_allowlist_refusal_names_app_and_setting(write: Write, tmp_path: Path) -> None:
    fleet = load_fleet(
        [write("a.yaml", APP.format(name="app1") + "---\n" + APP.format(name="app9"))]
    )
    config = load_config(_config(tmp_path), env={})
    plan = plan_builds(fleet, config)
    assert [b.application for b in plan.builds] == ["app1"]  # never a build for app9
    (refusal,) = plan.refused
    assert "application 'app9' is not on the build allowlist" in refusal
    assert f"allowed_applications in {tmp_path / 'ajour.yaml'}" in refusal
    with pytest.raises(NotAllowedError):
        plan.require_allowed()


def test_allow_all_is_explicit(write: Write, tmp_path: Path) -> None:
    fleet = load_fleet([write("a.yaml", APP.format(name="app9"))])
    assert plan_builds(fleet, load_config(None, env={})).refused  # empty allowlist: nothing
    config = load_config(None, env={"AJOUR_ALLOWED_APPLICATIONS": '["*"]'})
    assert len(plan_builds(fleet, config).builds) == 1


def test_selecting_one_app_or_device() -> None:
    fleet = load_fleet([EXAMPLES / "fleet"])
    config = load_config(EXAMPLES / "fleet" / "ajour.yaml", env={})
    plan = plan_builds(fleet, config, "blinky", "blinky-canary")
    assert [str(c) for b in plan.builds for c in b.consumers] == ["blinky/blinky-canary"]
    alone = plan_builds(fleet, config, None, "blinky-canary")  # the device names its app
    assert [str(c) for b in alone.builds for c in b.consumers] == ["blinky/blinky-canary"]
    with pytest.raises(AjourError, match="'nope' is not in the fleet"):
        plan_builds(fleet, config, "nope")


def test_builder_aliases_resolve() -> None:
    fleet = load_fleet([EXAMPLES / "fleet"])
    config = load_config(EXAMPLES / "fleet" / "ajour.yaml", env={})
    images = {b.builder_image for b in plan_builds(fleet, config).builds}
    assert images == {"localhost/ajour/builder-arm-gcc:0.2.0", "localhost/ajour/builder-rust:0.1.0"}


_texts = st.text(alphabet="abcxyz-0123456789./", min_size=1, max_size=12)


@given(args=st.lists(_texts, max_size=5), rev=_texts, other=_texts)
def test_build_key_changes_with_every_input(args: list[str], rev: str, other: str) -> None:
    base = {"image": "b:1", "source": {"git": {"uri": "https://h/r", "rev": "main"}}, "args": args}
    build = BuildSpec.model_validate(base)
    key = build_key(build, "b:1", "oci://r/x:1", "1h0m0s")
    assert key == build_key(BuildSpec.model_validate(base), "b:1", "oci://r/x:1", "1h0m0s")
    assert key != build_key(build, "b:2", "oci://r/x:1", "1h0m0s")
    assert key != build_key(build, "b:1", "oci://r/x:2", "1h0m0s")
    assert key != build_key(build, "b:1", "oci://r/x:1", "2h0m0s")
    changed = BuildSpec.model_validate({**base, "args": [*args, other]})
    assert key != build_key(changed, "b:1", "oci://r/x:1", "1h0m0s")
    if (
        rev != "main"
        and ".." not in rev
        and not rev.endswith((".", "/"))
        and not rev.startswith(("/", "-"))
    ):
        moved = BuildSpec.model_validate(
            {**base, "source": {"git": {"uri": "https://h/r", "rev": rev}}}
        )
        assert key != build_key(moved, "b:1", "oci://r/x:1", "1h0m0s")
