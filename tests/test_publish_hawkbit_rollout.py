"""spec.rollout as a hawkBit rollout: the mapping, and publishing it to a FAKE hawkBit that
checks every request against hawkBit's OpenAPI spec and fills groups by hawkBit's rules."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from ajour_build.cli import main
from ajour_build.core.errors import PublishError
from ajour_build.core.spec.rollout import RolloutPolicy, Selector
from ajour_build.publish.destination import release
from ajour_build.publish.hawkbit import HawkbitPublisher
from ajour_build.publish.hawkbit_rollout import (
    plan,
    remaining_percents,
    rollout_name,
    selector_fiql,
)
from ajour_build.publish.publisher import FirmwareArtifact
from tests.conftest import EXAMPLES, REPO
from tests.fiql import parse
from tests.firmware import make_repo
from tests.hawkbit_fake import HawkbitFake

ROLLOUTS = "/rest/v1/rollouts"
START = "/rest/v1/rollouts/{rolloutId}/start"
PASSWORD = "fake-admin-password"
EU = {"matchLabels": {"region": "eu"}}
CANARY = {"matchLabels": {"canary": "true"}}


def policy(**fields: Any) -> RolloutPolicy:
    return RolloutPolicy.model_validate({"cohort": EU, **fields})


def groups_of(p: RolloutPolicy) -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = plan(p, "sensor", "1.2.3").body["groups"]
    return groups


# -- the mapping -------------------------------------------------------------------------------


def test_constant_percent_waves_become_shares_of_the_remaining_targets() -> None:
    p = policy(waves=[{"percent": 10, "dwell": "1h"}, {"percent": 50}, {"percent": 100}])
    body = plan(p, "sensor", "1.2.3").body
    assert body["targetFilterQuery"] == 'metadata.region=="eu"'
    assert [g["name"] for g in body["groups"]] == ["wave-1", "wave-2", "wave-3"]
    assert [g["targetPercentage"] for g in body["groups"]] == [10.0, 44.4444, 100.0]
    assert all("targetFilterQuery" not in g for g in body["groups"])
    # a dwell cannot be expressed: the wave then waits for all its devices, else for none
    assert [g["successCondition"]["expression"] for g in body["groups"]] == ["100", "0", "0"]
    assert {g["successAction"]["action"] for g in body["groups"]} == {"NEXTGROUP"}
    assert (body["type"], body["confirmationRequired"]) == ("forced", False)
    assert "errorCondition" not in body and "amountGroups" not in body


def test_selector_waves_filter_their_group_and_take_all_of_it() -> None:
    p = policy(waves=[{"selector": CANARY}, {"percent": 20}, {"percent": 100}])
    groups = groups_of(p)
    assert groups[0]["targetFilterQuery"] == 'metadata.canary=="true"'
    assert groups[0]["targetPercentage"] == 100.0
    assert [g["targetPercentage"] for g in groups[1:]] == [20.0, 100.0]


def test_waves_short_of_100_percent_get_a_rest_group() -> None:
    assert [g["name"] for g in groups_of(policy(waves=[{"selector": CANARY}]))] == [
        "wave-1",
        "rest",
    ]
    groups = groups_of(policy(waves=[{"percent": 5}, {"percent": 30}]))
    assert [(g["name"], g["targetPercentage"]) for g in groups] == [
        ("wave-1", 5.0),
        ("wave-2", 26.3158),
        ("rest", 100.0),
    ]


def test_a_ramp_is_expanded_into_its_waves() -> None:
    groups = groups_of(policy(ramp={"start": 1, "factor": 10, "dwell": "10m"}))
    assert [g["targetPercentage"] for g in groups] == [1.0, 9.0909, 100.0]
    assert [g["successCondition"]["expression"] for g in groups] == ["100"] * 3


def test_criteria_become_one_error_threshold_that_pauses() -> None:
    criteria = [
        {"outcome": "failed", "threshold": 0.25, "minFinished": 5},
        {"outcome": "reverted", "threshold": 0.1, "minFinished": 10},
    ]
    body = plan(policy(waves=[{"percent": 100}], criteria=criteria), "sensor", "1").body
    # hawkBit pauses above 9 % of the group's targets: never later than Ajour's >= 10 %
    assert body["errorCondition"] == {"condition": "THRESHOLD", "expression": "9"}
    assert body["errorAction"] == {"action": "PAUSE"}
    [group] = body["groups"]
    assert (group["errorCondition"], group["errorAction"]) == (
        body["errorCondition"],
        body["errorAction"],
    )
    zero = policy(waves=[{"percent": 100}], criteria=[{"outcome": "failed", "threshold": 0}])
    assert plan(zero, "s", "1").body["errorCondition"]["expression"] == "0"


@pytest.mark.parametrize(
    "value", ['say "hi"', "back\\slash", "a;b,c(d)=e!f~g<h>i", "  spaced  ", "", "ünï"]
)
def test_label_values_are_quoted_so_hawkbit_reads_them_back_exactly(value: str) -> None:
    selector = Selector.model_validate({"matchLabels": {"tier": value}})
    matches = parse(selector_fiql(selector, "here"))  # the fake reads RSQL as hawkBit does
    assert matches(("dev", {"tier": value}))
    assert not matches(("dev", {"tier": value + "x"}))
    assert not matches(("dev", {}))


def test_rollout_names_are_dns_labels_unique_per_version() -> None:
    name = rollout_name("sensor", "1.2.3+build.7")
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", name)
    assert name.startswith("sensor-1-2-3-build-7-")
    assert rollout_name("sensor", "1.2.3+build.7") == name
    assert rollout_name("sensor", "1.0") != rollout_name("sensor", "1-0")
    long = rollout_name("a" * 63, "v" * 64)
    assert len(long) <= 63 and re.fullmatch(r"[a-z0-9-]+", long)


REFUSED = [
    ({"cohort": None}, "spec.rollout: has no cohort"),
    ({"cohort": {"matchLabels": {"ajour.dev/tier": "a"}}}, "label key 'ajour.dev/tier'"),
    ({"cohort": {"matchLabels": {"tier": "gold*"}}}, "holds '*'"),
    (
        {"waves": [{"percent": 10}, {"percent": 100, "approval": "manual"}]},
        r"waves\[1\]: approval: manual on wave 2 cannot be expressed",
    ),
    (
        {"waves": [{"percent": 10}, {"selector": CANARY}, {"percent": 100}]},
        r"waves\[1\]: a selector wave after a percent wave",
    ),
    (
        {"waves": [{"percent": 100}], "criteria": [{"outcome": "timed_out", "threshold": 0.1}]},
        r"criteria\[0\]: outcome timed_out cannot be expressed",
    ),
]


@pytest.mark.parametrize(("fields", "reason"), REFUSED)
def test_what_hawkbit_cannot_express_is_refused_precisely(
    fields: dict[str, Any], reason: str
) -> None:
    p = RolloutPolicy.model_validate({"cohort": EU, "waves": [{"percent": 100}], **fields})
    with pytest.raises(PublishError, match=reason):
        plan(p, "sensor", "1.0")


@given(st.lists(st.integers(1, 100), min_size=1, max_size=12, unique=True).map(sorted))
def test_remaining_percents_reproduce_the_cumulative_shares(cumulative: list[int]) -> None:
    shares = remaining_percents(cumulative)
    assert all(1 <= share <= 100 for share in shares)  # hawkBit's bounds
    assert (shares[-1] == 100) == (cumulative[-1] == 100)
    taken, left = 0.0, 100.0
    for share, expected in zip(shares, cumulative, strict=True):
        step = left * share / 100  # hawkBit: a share of what earlier groups left
        taken, left = taken + step, left - step
        assert math.isclose(taken, expected, abs_tol=1e-3)


@given(
    st.lists(st.integers(1, 100), min_size=1, max_size=8, unique=True).map(sorted),
    st.integers(1, 5000),
)
def test_remaining_percents_with_hawkbits_rounding_stay_near_the_shares(
    cumulative: list[int], targets: int
) -> None:
    taken, left = 0, targets
    for k, share in enumerate(remaining_percents(cumulative), start=1):
        step = math.floor(share / 100 * left + 0.5)  # Java's Math.round
        taken, left = taken + step, left - step
        assert abs(taken - cumulative[k - 1] * targets / 100) <= 0.5 * k + 1e-6
    if cumulative[-1] == 100:
        assert left == 0


# -- publishing to the fake --------------------------------------------------------------------

DEVICES = {
    "eu-canary-1": {"region": "eu", "canary": "true"},
    "eu-canary-2": {"region": "eu", "canary": "true"},
    **{f"eu-{i:02}": {"region": "eu"} for i in range(18)},
    **{f"us-{i:02}": {"region": "us", "canary": "true"} for i in range(5)},
}


@pytest.fixture
def fake() -> Iterator[HawkbitFake]:
    with HawkbitFake(password=PASSWORD) as server:
        for name, labels in DEVICES.items():
            server.add_target(name, labels)
        yield server
        assert server.crashes == [], "the fake itself crashed"


@pytest.fixture
def firmware(tmp_path: Path) -> Path:
    path = tmp_path / "sensor.bin"
    path.write_bytes(b"\x7fELF firmware" * 100)
    return path


def publisher(fake: HawkbitFake, p: RolloutPolicy, app: str = "sensor") -> HawkbitPublisher:
    options: dict[str, Any] = {"backoff": 0.001, "poll_interval": 0.001, "timeout": 5}
    url = fake.url("sensor-fw")
    return HawkbitPublisher.from_url(url, fake.env, application=app, policy=p, **options)


STAGED = {
    "waves": [{"selector": CANARY, "dwell": "10m"}, {"percent": 50}, {"percent": 100}],
    "criteria": [{"outcome": "reverted", "threshold": 0.2, "minFinished": 3}],
}


def test_publish_creates_and_starts_the_mapped_rollout(fake: HawkbitFake, firmware: Path) -> None:
    p = policy(**STAGED)
    out = release(FirmwareArtifact(firmware, "1.2.3"), fake.url("sensor-fw"), fake.env,
                  application="sensor", policy=p)  # fmt: skip
    assert fake.spec_violations == [] and fake.unimplemented == []
    [rollout] = fake.state.rollouts.values()
    [ds] = fake.state.distribution_sets.values()
    assert out.published.reference.endswith(f"/distributionsets/{ds['id']}")
    assert rollout["name"] == rollout_name("sensor", "1.2.3")
    assert (rollout["distributionSetId"], rollout["status"]) == (ds["id"], "starting")
    assert rollout["totalTargets"] == 20  # the cohort: every eu device, no us device
    members = [fake.state.members[g["id"]] for g in fake.state.groups[rollout["id"]]]
    assert members[0] == ["eu-canary-1", "eu-canary-2"]  # the canaries, not the us ones
    assert len(members[1]) == 9 and len(members[2]) == 9  # 50 % of the other 18, then the rest
    everyone = sorted(m for group in members for m in group)
    assert everyone == sorted(d for d in DEVICES if d.startswith("eu"))
    group = fake.state.groups[rollout["id"]][1]
    assert group["errorCondition"] == {"condition": "THRESHOLD", "expression": "19"}
    assert fake.count("POST", ROLLOUTS) == 1 and fake.count("POST", START) == 1


def test_a_manual_first_wave_creates_the_rollout_without_starting_it(
    fake: HawkbitFake, firmware: Path
) -> None:
    p = policy(waves=[{"selector": CANARY, "approval": "manual"}, {"percent": 100}])
    publisher(fake, p).publish(FirmwareArtifact(firmware, "1.0"))
    [rollout] = fake.state.rollouts.values()
    assert rollout["status"] == "ready"  # created and filled; the operator starts it
    assert fake.count("POST", START) == 0
    assert fake.spec_violations == []


def test_republishing_a_version_is_idempotent(fake: HawkbitFake, firmware: Path) -> None:
    p = policy(**STAGED)
    first = publisher(fake, p).publish(FirmwareArtifact(firmware, "1.0"))
    before = fake.snapshot()
    assert publisher(fake, p).publish(FirmwareArtifact(firmware, "1.0")) == first
    assert fake.snapshot() == before  # no second rollout, nothing started again
    assert fake.count("POST", ROLLOUTS) == 1 and fake.count("POST", START) == 1
    publisher(fake, p).publish(FirmwareArtifact(firmware, "1.1"))  # a new version: a new one
    assert len(fake.state.rollouts) == 2 and fake.count("POST", START) == 2
    assert fake.spec_violations == []


def test_a_changed_policy_for_a_published_version_is_refused(
    fake: HawkbitFake, firmware: Path
) -> None:
    publisher(fake, policy(**STAGED)).publish(FirmwareArtifact(firmware, "1.0"))
    other = RolloutPolicy.model_validate({**STAGED, "cohort": {"matchLabels": {"region": "us"}}})
    with pytest.raises(PublishError, match="already exists with the target filter") as info:
        publisher(fake, other).publish(FirmwareArtifact(firmware, "1.0"))
    assert "bump the version" in str(info.value)
    assert fake.count("POST", ROLLOUTS) == 1


def test_an_unmappable_policy_fails_before_any_request(fake: HawkbitFake, firmware: Path) -> None:
    p = policy(waves=[{"percent": 10}, {"percent": 100, "approval": "manual"}])
    with pytest.raises(PublishError, match="approval: manual on wave 2"):
        publisher(fake, p).publish(FirmwareArtifact(firmware, "1.0"))
    assert fake.requests == [] and fake.state.modules == {}


def test_hawkbits_refusal_is_reported_with_its_message(fake: HawkbitFake, firmware: Path) -> None:
    p = RolloutPolicy.model_validate({**STAGED, "cohort": {"matchLabels": {"region": "mars"}}})
    with pytest.raises(PublishError) as info:
        publisher(fake, p).publish(FirmwareArtifact(firmware, "1.0"))
    message = str(info.value)
    assert f"POST {fake.base_url}{ROLLOUTS}: expected HTTP 201; got HTTP 400" in message
    assert (
        "hawkBit says: Rollout does not match any existing targets"
        " (hawkbit.server.error.repo.constraintViolation)"
    ) in message
    assert fake.count("POST", ROLLOUTS) == 1 and fake.spec_violations == []


def test_rollout_gets_are_retried_and_posts_are_not(fake: HawkbitFake, firmware: Path) -> None:
    fake.fail_next(ROLLOUTS, 503, "busy", method="GET", times=2)
    publisher(fake, policy(**STAGED)).publish(FirmwareArtifact(firmware, "1.0"))
    assert fake.count("GET", ROLLOUTS) == 3 and fake.count("POST", START) == 1
    fake.fail_next(ROLLOUTS, 503, '{"message": "try later"}', method="POST")
    with pytest.raises(PublishError, match="got HTTP 503") as info:
        publisher(fake, policy(**STAGED)).publish(FirmwareArtifact(firmware, "2.0"))
    assert "hawkBit says: try later" in str(info.value)
    assert fake.count("POST", ROLLOUTS) == 2  # one each publish: the failed one not retried


def test_a_policy_and_a_url_rollout_do_not_mix(fake: HawkbitFake) -> None:
    url = fake.url("sensor-fw", rollout="canary", filter="controllerId==dev-*")
    with pytest.raises(PublishError, match="replaces rollout=/filter="):
        HawkbitPublisher.from_url(url, fake.env, application="sensor", policy=policy(**STAGED))


APP = """\
kind: Application
metadata: {{name: blinky}}
spec:
  rollout:
    cohort: {{matchLabels: {{region: eu}}}}
    waves: [{{selector: {{matchLabels: {{canary: "true"}}}}}}, {{percent: 100}}]
  firmware:
    container:
      image: fw/blinky:latest
      build:
        image: arm-gcc
        source: {{git: {{uri: "file://{repo}", rev: main}}}}
        args: ["--board", "mps2-an385"]
        artifact: {{path: build/blinky.bin}}
"""


def test_ajour_build_publish_to_hawkbit_runs_the_applications_policy(
    fake: HawkbitFake, tmp_path: Path
) -> None:
    repo, fleet = tmp_path / "repo", tmp_path / "fleet"
    make_repo(repo, EXAMPLES / "firmware" / "c-blinky")
    fleet.mkdir()
    (fleet / "app.yaml").write_text(APP.format(repo=repo))
    (fleet / "ajour.yaml").write_text(
        "allowed_applications: [blinky]\nregistry: {prefix: '127.0.0.1:9'}\n"
        "publish_repositories: {blinky: [fw]}\nsources: {allow_local: true}\n"
        "builders: {arm-gcc: {image: localhost/ajour/builder-arm-gcc:0.2.0}}\n"
    )
    args = ["build", str(fleet), "--app", "blinky", "--runner", "host", "--builders",
            str(REPO / "builder-images"), "--state-dir", str(tmp_path / "state"), "--version",
            "2.4.0", "--publish", "--to", fake.url("blinky"), "--json"]  # fmt: skip
    result = CliRunner(env=fake.env).invoke(main, args)
    assert result.exit_code == 0, result.output
    [rollout] = fake.state.rollouts.values()
    assert rollout["name"] == rollout_name("blinky", "2.4.0")
    assert rollout["targetFilterQuery"] == 'metadata.region=="eu"'
    members = [fake.state.members[g["id"]] for g in fake.state.groups[rollout["id"]]]
    assert members[0] == ["eu-canary-1", "eu-canary-2"] and len(members[1]) == 18
    assert fake.count("POST", START) == 1 and fake.spec_violations == []


# -- the fake's rollout checks -------------------------------------------------------------------

BODY = {"name": "r", "distributionSetId": 1, "targetFilterQuery": "controllerId==eu-*"}
GROUP = {"name": "g", "targetPercentage": 100}
SPEC_REFUSED = [
    ({**BODY, "groups": [{**GROUP, "percentage": 5}]}, "'percentage' was unexpected"),
    ({**BODY, "groups": [{**GROUP, "targetPercentage": "5"}]}, "'5' is not of type 'number'"),
    ({**BODY, "amountGroups": 1, "successAction": {"action": "PAUSE"}}, "'PAUSE' is not one of"),
    ({**BODY, "amountGroups": 1, "type": "eventually"}, "'eventually' is not one of"),
    ({**BODY, "amountGroups": 1, "id": 7}, "'id' was unexpected"),
]
HAWKBIT_REFUSED = [
    ({**BODY, "amountGroups": 1, "groups": [GROUP]}, "Either 'amountGroups' or 'groups'"),
    ({**BODY}, "Either 'amountGroups' or 'groups'"),
    ({**BODY, "groups": [{**GROUP, "targetPercentage": 0.5}]}, "between 1 and 100"),
    ({**BODY, "groups": [{**GROUP, "targetPercentage": 50}]}, "don't match all targets"),
    ({**BODY, "targetFilterQuery": "controllerId==(", "amountGroups": 1}, "an argument expected"),
    ({**BODY, "targetFilterQuery": "colour==red", "amountGroups": 1}, "not a target field"),
    ({**BODY, "targetFilterQuery": " ", "amountGroups": 1}, "empty target query filter"),
]


def _post(fake: HawkbitFake, body: dict[str, Any]) -> requests.Response:
    fake.state.distribution_sets[1] = {"id": 1}
    return requests.post(fake.base_url + ROLLOUTS, json=body, auth=("admin", PASSWORD), timeout=5)


@pytest.mark.parametrize(("body", "reason"), SPEC_REFUSED)
def test_the_fake_refuses_rollouts_the_spec_does_not_allow(
    fake: HawkbitFake, body: dict[str, Any], reason: str
) -> None:
    with _post(fake, body) as reply:
        assert reply.status_code == 400 and reason in reply.json()["message"]
    assert len(fake.spec_violations) == 1 and fake.state.rollouts == {}


@pytest.mark.parametrize(("body", "reason"), HAWKBIT_REFUSED)
def test_the_fake_refuses_rollouts_hawkbit_would_refuse(
    fake: HawkbitFake, body: dict[str, Any], reason: str
) -> None:
    with _post(fake, body) as reply:
        assert reply.status_code == 400, reply.text
        assert reason in reply.json()["message"]
    assert fake.spec_violations == [] and fake.state.rollouts == {}
