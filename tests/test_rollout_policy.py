"""The pure rollout logic: the policy spec, wave assignment, counting and evaluation."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ajour_build.core.errors import SpecError
from ajour_build.core.fleet import load_fleet
from ajour_build.core.rollout import model
from ajour_build.core.rollout.assignment import BUCKETS, bucket, wave_of
from ajour_build.core.rollout.model import DeviceRecord, Outcome, State, WaveCounts
from ajour_build.core.spec.rollout import Criterion, Ramp, RolloutPolicy, parse_seconds

names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
shares = st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True).map(sorted)


def policy_of(percents: list[int], **extra: object) -> RolloutPolicy:
    return RolloutPolicy.model_validate({"waves": [{"percent": p} for p in percents], **extra})


@given(names, names)
def test_bucket_is_sha256_of_app_and_device(app: str, device: str) -> None:
    digest = hashlib.sha256(f"{app}/{device}".encode()).digest()
    assert bucket(app, device) == int.from_bytes(digest[:8], "big") % BUCKETS
    assert 0 <= bucket(app, device) < BUCKETS


@given(shares, names, names)
def test_percent_waves_follow_the_bucket(percents: list[int], app: str, device: str) -> None:
    policy = policy_of(percents)
    wave = wave_of(policy, app, device)
    share = bucket(app, device)
    expected = next((i for i, p in enumerate(percents) if share < p * 100), len(percents))
    assert wave == expected
    # sticky: growing the last share never moves a device to an earlier wave
    if percents[-1] < 100:
        grown = policy_of([*percents[:-1], 100])
        assert wave_of(grown, app, device) == min(wave, len(percents) - 1)


def test_the_shares_are_close_to_the_percents() -> None:
    policy = policy_of([5, 25, 100])
    waves = [wave_of(policy, "app", f"device-{i}") for i in range(10_000)]
    assert 400 <= waves.count(0) <= 600
    assert 1800 <= waves.count(1) <= 2200


@given(names, st.booleans(), st.booleans())
def test_selector_waves_first_and_the_cohort(device: str, canary: bool, in_eu: bool) -> None:
    policy = RolloutPolicy.model_validate(
        {
            "cohort": {"matchLabels": {"region": "eu"}},
            "waves": [{"selector": {"matchLabels": {"canary": "true"}}}, {"percent": 100}],
        }
    )
    labels = {"canary": "true"} if canary else {}
    if in_eu:
        labels["region"] = "eu"
    wave = wave_of(policy, "app", device, labels)
    assert wave == (None if not in_eu else 0 if canary else 1)


@given(st.integers(1, 100), st.integers(2, 100))
def test_a_ramp_grows_by_its_factor_to_100(start: int, factor: int) -> None:
    percents = [w.percent or 0 for w in Ramp(start=start, factor=factor).waves()]
    assert percents[-1] == 100 and percents[0] == min(start, 100)
    assert all(b == a * factor for a, b in itertools.pairwise(percents[:-1]))
    assert percents == sorted(set(percents))
    assert [w.percent for w in RolloutPolicy.model_validate({"ramp": {}}).waves] == [1, 10, 100]


@given(
    st.dictionaries(st.sampled_from(list(Outcome)[:4]), st.integers(0, 50), min_size=0, max_size=4),
    st.sampled_from(["reverted", "timed_out", "failed_download", "failed"]),
    st.floats(0, 1),
    st.integers(1, 60),
)
def test_a_criterion_trips_exactly_at_its_threshold(
    counts: dict[Outcome, int], outcome: str, threshold: float, min_finished: int
) -> None:
    criterion = Criterion.model_validate(
        {"outcome": outcome, "threshold": threshold, "minFinished": min_finished}
    )
    wave = WaveCounts(counts)
    finished = sum(n for o, n in counts.items() if o is not Outcome.SWAPPED)
    bad = sum(
        n
        for o, n in counts.items()
        if o.value == outcome
        or (outcome == "failed" and o in (Outcome.REVERTED, Outcome.FAILED_DOWNLOAD))
    )
    expected = finished >= min_finished and finished > 0 and bad >= threshold * finished
    assert model.tripped(criterion, wave) is expected


@given(st.floats(0, 100), st.integers(0, 10_000), st.sampled_from(list(State)))
def test_evaluate_never_advances_before_the_dwell(elapsed: float, ms: int, state: State) -> None:
    policy = RolloutPolicy.model_validate(
        {"waves": [{"percent": 10, "dwell": f"{ms}ms"}, {"percent": 100}]}
    )
    dwell = policy.waves[0].dwell_seconds
    assert dwell == pytest.approx(ms / 1000)
    rollout = model.Rollout("app", 2, "1", "2", "{}", 0.0, state=state, wave_started=(0.0,))
    after = model.evaluate(rollout, policy, {}, elapsed)
    if state is not State.RUNNING or elapsed < dwell:
        assert after is None
    else:
        assert after is not None and after.wave == 1 and after.revision == 1


def test_manual_approval_waits_for_promote() -> None:
    policy = RolloutPolicy.model_validate(
        {"waves": [{"percent": 10}, {"percent": 100, "approval": "manual"}]}
    )
    rollout = model.start("app", 2, "1", "2", policy, 0.0)
    assert model.evaluate(rollout, policy, {}, 1e6) is None
    promoted = model.promote(rollout, policy, 5.0)
    assert (promoted.wave, promoted.wave_started) == (1, (0.0, 5.0))
    done = model.evaluate(promoted, policy, {}, 5.0)
    assert done is not None and done.state is State.COMPLETED


def test_tally_counts_late_swaps_as_timed_out_and_skips_before_a_resume() -> None:
    records = [
        DeviceRecord(Outcome.SWAPPED, 0, at=10.0),
        DeviceRecord(Outcome.REVERTED, 0, at=5.0),
        DeviceRecord(Outcome.CONFIRMED, 1, at=20.0),
        DeviceRecord(Outcome.RETRIED, 1, at=21.0),
    ]
    counts = model.tally(records, now=100.0, confirm_seconds=60.0)
    assert counts[0].of("timed_out") == 1 and counts[0].of("failed") == 2
    assert counts[1].finished == 1
    assert model.tally(records, now=30.0, confirm_seconds=60.0, since=8.0)[0].finished == 0


@pytest.mark.parametrize(
    ("rollout_yaml", "line", "message"),
    [
        ("{waves: [{percent: 50}, {percent: 10}]}", 5, "not more than the 50 before it"),
        ("{waves: [{percent: 50, selector: {matchLabels: {a: b}}}]}", 5, "exactly one of"),
        ("{waves: [{percent: 100}], criteria: [{outcome: reverted, threshold: 2}]}", 5,
         "less than or equal to 1"),
        ("{waves: [{percent: 100, dwell: soon}]}", 5, "'soon' is not a duration"),
        ("{ramp: {}, waves: [{percent: 100}]}", 5, "exactly one of waves"),
    ],
)  # fmt: skip
def test_policy_mistakes_are_located(
    tmp_path: Path, rollout_yaml: str, line: int, message: str
) -> None:
    (tmp_path / "f.yaml").write_text(
        "kind: Application\nmetadata: {name: app}\nspec:\n"
        "  firmware: {container: {image: fw/app:latest}}\n"
        f"  rollout: {rollout_yaml}\n"
    )
    with pytest.raises(SpecError) as caught:
        load_fleet([tmp_path])
    (problem,) = caught.value.problems
    assert problem.line == line and message in problem.message
    assert problem.path is not None and problem.path.startswith("spec.rollout")


def test_a_rollout_on_a_device_is_refused_and_labels_are_kept(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(
        "kind: Application\nmetadata: {name: app}\n"
        "spec: {firmware: {container: {image: fw/app:latest}},"
        " rollout: {ramp: {start: 5, factor: 4, dwell: 10m}}}\n"
        "---\nmetadata: {name: d1, application: app, labels: {canary: 'true'}}\n"
        "---\nmetadata: {name: d2, application: app}\n"
    )
    fleet = load_fleet([tmp_path])
    policy = fleet.applications["app"].rollout
    assert policy is not None and [w.percent for w in policy.waves] == [5, 20, 80, 100]
    assert policy.waves[0].dwell_seconds == 600
    assert fleet.labels == {("app", "d1"): {"canary": "true"}}
    (tmp_path / "g.yaml").write_text(
        "metadata: {name: d3, application: app}\nspec: {rollout: {ramp: {}}}\n"
    )
    with pytest.raises(SpecError, match=r"spec\.rollout belongs on the Application"):
        load_fleet([tmp_path])
    (tmp_path / "g.yaml").unlink()
    (tmp_path / "f.yaml").write_text(
        "kind: Application\nmetadata: {name: app}\n"
        "spec: {firmware: {file: {name: fw}}, rollout: {ramp: {}}}\n"
    )
    with pytest.raises(SpecError, match=r"spec\.rollout needs container firmware"):
        load_fleet([tmp_path])


def test_durations() -> None:
    assert parse_seconds("200ms") == pytest.approx(0.2)
    assert parse_seconds("1h30m") == 5400 and parse_seconds("0s") == 0
    with pytest.raises(ValueError, match="30-day limit"):
        parse_seconds("800h")


def test_operations_refuse_what_the_state_does_not_allow() -> None:
    policy = policy_of([100])
    rollout = model.start("app", 2, "1", "2", policy, 0.0)
    aborted = model.abort(rollout)
    with pytest.raises(model.RolloutError, match="cannot pause rollout 2 of 'app': it is aborted"):
        model.pause(aborted)
    assert model.rollback(aborted).state is State.ROLLED_BACK
    record = DeviceRecord(Outcome.CONFIRMED, 0, 1.0)
    assert model.offers_new(aborted, 0, record) and not model.offers_new(aborted, 0, None)
    assert not model.offers_new(model.rollback(aborted), 0, record)
    assert not model.offers_new(rollout, 0, DeviceRecord(Outcome.REVERTED, 0, 1.0))


outcome_counts = st.dictionaries(
    st.sampled_from([Outcome.CONFIRMED, Outcome.REVERTED, Outcome.FAILED_DOWNLOAD]),
    st.integers(0, 30),
)


@given(st.dictionaries(st.integers(0, 3), outcome_counts), st.integers(0, 3))
def test_a_running_rollout_pauses_exactly_when_an_open_wave_trips(
    per_wave: dict[int, dict[Outcome, int]], current: int
) -> None:
    policy = RolloutPolicy.model_validate(
        {
            "waves": [{"percent": p, "dwell": "1h"} for p in (1, 10, 50, 100)],
            "criteria": [{"outcome": "reverted", "threshold": 0.2, "minFinished": 5}],
        }
    )
    rollout = model.Rollout(
        "app", 2, "1", "2", "{}", 0.0, wave=current, wave_started=(0.0,) * (current + 1)
    )
    counts = {wave: WaveCounts(c) for wave, c in per_wave.items()}
    after = model.evaluate(rollout, policy, counts, 1.0)
    trips = [
        w
        for w in range(current + 1)
        if model.tripped(policy.criteria[0], counts.get(w, WaveCounts()))
    ]
    if trips:
        assert after is not None and after.state is State.PAUSED
        assert after.reason.startswith(f"wave {trips[0] + 1}: ")
    else:
        assert after is None  # the dwell (1h) has not passed


@given(
    st.sampled_from(list(State)),
    st.integers(0, 4),
    st.integers(0, 4),
    st.sampled_from([None, *[o for o in Outcome if o is not Outcome.TIMED_OUT]]),
)
def test_who_is_offered_the_new_version(
    state: State, wave: int, current: int, outcome: Outcome | None
) -> None:
    rollout = model.Rollout("app", 2, "1", "2", "{}", 0.0, state=state, wave=current)
    record = None if outcome is None else DeviceRecord(outcome, wave, 1.0)
    offered = model.offers_new(rollout, wave, record)
    if outcome in (Outcome.REVERTED, Outcome.FAILED_DOWNLOAD):
        assert not offered  # no re-download loop
    elif state in (State.ROLLED_BACK, State.SUPERSEDED):
        assert not offered
    elif state is State.COMPLETED:
        assert offered
    elif state is State.ABORTED:
        assert offered is (outcome in (Outcome.SWAPPED, Outcome.CONFIRMED))
    else:
        assert offered is (wave <= current)
