"""Starting a rollout by hand: ``POST /v1/rollouts/<app>/start``, ``ajour-delivery rollout
start``, the store's ``start`` on SQLite and PostgreSQL, and what a worker does afterwards
with the version its moving tag points at (a hand-started rollout is not superseded by a
version rolled out before; a version never rolled out before still starts a new one).

Real OCI layouts (and a real registry for the message naming its repository), real SQLite
files and a real PostgreSQL server (``rollout_db``), real HTTP on loopback; devices are
driven through ``Worker.handle`` on a test clock (tests/test_rollout_api.py's rig).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ajour_build.core.fleet import load_fleet
from ajour_build.core.rollout.model import Rollout, RolloutError, State
from ajour_build.core.rollout.report import OPERATOR_TOKEN_ENV
from ajour_build.core.spec.rollout import RolloutPolicy
from ajour_build.core.wire import STATUS_TOKEN_ENV
from delivery.errors import DeliveryError
from delivery.rollout_store import SqliteRolloutStore
from delivery.rollouts import Rollouts
from delivery.targets import NotPublished, Targets
from tests.http_wire import STATUS_TOKEN, serving
from tests.postgres import RolloutDb
from tests.test_rollout_api import NAMES, OPERATOR_TOKEN, Rig, call, cli, tokens
from tests.test_rollout_store_pg import race
from tests.test_sources import publish

POLICY = RolloutPolicy.model_validate({"waves": [{"percent": 100}]})


def test_the_store_starts_one_rollout_and_refuses_what_the_state_forbids(
    rollout_db: RolloutDb,
) -> None:
    stores = [rollout_db.open() for _ in range(6)]
    store = stores[0]
    with pytest.raises(RolloutError, match="'app' has no rollout yet, so there is no version"):
        store.start("app", "1.1", POLICY, 1.0)
    store.begin("app", "1.0", POLICY, 1.0)
    store.begin("app", "1.1", POLICY, 2.0)
    with pytest.raises(RolloutError) as refused:
        store.start("app", "1.2", POLICY, 3.0)
    assert str(refused.value) == (
        "cannot start a rollout of 'app' to 1.2: rollout 2 (1.0 -> 1.1) is running; abort it"
        ' first, or start with supersede (body {"supersede": true}, --supersede)'
    )
    with pytest.raises(RolloutError, match=r"it started from 1\.0; to offer every device of"):
        store.start("app", "1.0", POLICY, 3.0, supersede=True)
    assert [r.seq for r in store.history("app")] == [1, 2]  # nothing was written

    started = store.start("app", "1.2", POLICY, 3.0, supersede=True)
    assert (started.seq, started.from_version, started.to_version, started.state) == (
        3, "1.0", "1.2", State.RUNNING,
    )  # fmt: skip
    assert (started.wave, started.created, started.reason) == (0, 3.0, "started by an operator")
    old = store.history("app")[1]
    assert (old.state, old.revision) == (State.SUPERSEDED, 1)
    assert old.reason == "superseded by rollout 3 to 1.2, started by an operator"

    # six operators start at once: one rollout; the others see it running and are refused
    current = store.latest("app")
    assert current is not None and store.save(current.changed(state=State.ABORTED))

    def start(i: int) -> object:
        try:
            return stores[i].start("app", "1.3", POLICY, 10.0 + i)
        except RolloutError as exc:
            return exc

    got = race(6, start)
    won = [r for r in got if not isinstance(r, RolloutError)]
    assert len(won) == 1 and all("rollout 4 (1.0 -> 1.3) is running" in str(r)
                                 for r in got if isinstance(r, RolloutError))  # fmt: skip
    assert [(r.seq, r.state) for r in store.history("app")] == [
        (1, State.COMPLETED), (2, State.SUPERSEDED), (3, State.ABORTED), (4, State.RUNNING),
    ]  # fmt: skip
    # a completed rollout: its version is what the devices run already
    latest = store.latest("app")
    assert latest is not None and store.save(latest.changed(state=State.COMPLETED))
    with pytest.raises(RolloutError, match=r"is completed, and its devices are offered 1\.3"):
        store.start("app", "1.3", POLICY, 20.0)


class CountingStore(SqliteRolloutStore):
    """The real store, counting ``begin`` (one write transaction each)."""

    begins = 0

    def begin(self, application: str, version: str, policy: RolloutPolicy, now: float) -> Rollout:
        self.begins += 1
        return super().begin(application, version, policy, now)


def test_start_over_http_re_rolls_a_rolled_back_version_and_pins_a_downgrade(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    store = CountingStore(tmp_path / "counted.db")
    rig.worker.rollouts = Rollouts(store, clock=rig.clock)
    first = sorted(n for n in NAMES if rig.waves[n] == 0)
    second = sorted(n for n in NAMES if rig.waves[n] == 1)

    def versions(names: list[str]) -> set[bytes]:
        return {rig.devices[n].version for n in names}

    def start(body: object) -> tuple[int, Any]:
        return call(transport, "POST", "/v1/rollouts/app/start", OPERATOR_TOKEN, body)

    for name in NAMES:
        rig.settle(name)
    rig.publish_two()
    with serving(rig.worker, tokens()) as transport:
        for name in NAMES:
            rig.settle(name)
        assert (versions(first), versions(second)) == ({b"1.1"}, {b"1.0"})
        status, text = start({"version": "1.1"})
        assert status == 409 and "rollout 2 (1.0 -> 1.1) is running; abort it first" in text
        assert call(transport, "POST", "/v1/rollouts/app/rollback", OPERATOR_TOKEN)[0] == 200
        for name in NAMES:
            rig.settle(name)
        assert versions(NAMES) == {b"1.0"}

        # re-roll the version that was rolled back: wave 1 updates, wave 2 waits
        rig.clock.now += 1
        status, report = start({"version": "1.1"})
        assert status == 200, report
        assert (report["seq"], report["fromVersion"], report["toVersion"], report["state"]) == (
            3, "1.0", "1.1", "running",
        )  # fmt: skip
        assert report["reason"] == "started by an operator"
        assert [w["open"] for w in report["waves"]] == [True, False]
        for name in NAMES:
            rig.settle(name)
        assert (versions(first), versions(second)) == ({b"1.1"}, {b"1.0"})
        rig.clock.now += 1
        assert call(transport, "POST", "/v1/rollouts/app/promote", OPERATOR_TOKEN)[0] == 200
        assert call(transport, "POST", "/v1/rollouts/app/promote", OPERATOR_TOKEN)[0] == 200
        for name in NAMES:
            rig.settle(name)
        assert versions(NAMES) == {b"1.1"}

        # an older version (a downgrade): the devices take it, wave by wave
        rig.clock.now += 1
        status, report = start({"version": "1.0"})
        assert status == 200, report
        assert (report["seq"], report["fromVersion"], report["toVersion"]) == (4, "1.1", "1.0")
        begins = store.begins
        for _ in range(5):  # refreshes, while the moving tag still points at 1.1
            rig.clock.now += 0.6
            for name in NAMES:
                rig.settle(name)
        assert (versions(first), versions(second)) == ({b"1.0"}, {b"1.1"})
        current = store.latest("app")
        assert current is not None and (current.seq, current.to_version) == (4, "1.0")
        assert store.begins == begins, "1.1 was rolled out before: no begin per refresh"
        # completed, it still pins 1.0: going back to 1.1 would undo the downgrade
        assert call(transport, "POST", "/v1/rollouts/app/promote", OPERATOR_TOKEN)[0] == 200
        assert call(transport, "POST", "/v1/rollouts/app/promote", OPERATOR_TOKEN)[0] == 200
        for _ in range(3):
            rig.clock.now += 0.6
            for name in NAMES:
                rig.settle(name)
        assert versions(NAMES) == {b"1.0"}
        assert [r.state for r in store.history("app")][3:] == [State.COMPLETED]

        # a version never rolled out before still starts a new rollout, from where 4 ended
        rig.w.publish("app", "1.2", b"\x03" * 1500)
        rig.clock.now += 1
        rig.settle(first[0])
        history = store.history("app")
        assert [(r.seq, r.state, r.from_version, r.to_version) for r in history[3:]] == [
            (4, State.COMPLETED, "1.1", "1.0"), (5, State.RUNNING, "1.0", "1.2"),
        ]  # fmt: skip
        assert rig.devices[first[0]].version == b"1.2"
    store.close()


@pytest.mark.parametrize(
    ("app", "body", "status", "text"),
    [
        ("app", {"version": "9.9"}, 404,
         "version '9.9' of 'app' is not published: the OCI layout {oci}/fw/app has no tag"
         " '9.9' (publishers tag every artifact with its version; publish it first"),
        ("plain", {"version": "1.0"}, 409,
         "application 'plain' has no spec.rollout, so it has no rollouts to start"),
        ("ghost", {"version": "1.0"}, 404, "application 'ghost' is not in the fleet"),
        ("app", {}, 400, 'start needs the version: send {"version": "<a published version>"}'),
        ("app", {"version": "../1.0"}, 400,
         "version: Value error, '../1.0' is not a version tag: 1 to 128 ASCII letters"),
        ("app", {"version": "1.0", "supersede": "yes"}, 400,
         "supersede: Input should be a valid boolean"),
        ("app", {"version": "1.0", "reason": "x"}, 400,
         '"reason" is only for pause, not for start'),
    ],
)  # fmt: skip
def test_start_refusals_say_what_is_wrong(
    tmp_path: Path, app: str, body: dict[str, object], status: int, text: str
) -> None:
    rig = Rig(tmp_path)
    rig.settle("d0")
    with serving(rig.worker, tokens()) as transport:
        got, said = call(transport, "POST", f"/v1/rollouts/{app}/start", OPERATOR_TOKEN, body)
        assert got == status and text.replace("{oci}", str(tmp_path / "oci")) in said, said
        assert call(transport, "POST", "/v1/rollouts/app/start", STATUS_TOKEN, body)[0] == 403
        for action in ("pause", "retry"):
            got, said = call(transport, "POST", f"/v1/rollouts/app/{action}", OPERATOR_TOKEN,
                             {"version": "1.0", "device": "d0"})  # fmt: skip
            assert got == 400 and f'"version" is only for start, not for {action}' in said
    assert rig.worker.rollouts is not None
    assert [r.seq for r in rig.worker.rollouts.store.history("app")] == [1]


def test_cli_start(tmp_path: Path) -> None:
    rig = Rig(tmp_path)
    for name in NAMES:
        rig.settle(name)
    rig.publish_two()
    rig.settle("d0")
    operate = {OPERATOR_TOKEN_ENV: OPERATOR_TOKEN}
    with serving(rig.worker, tokens()) as transport:
        url = ["--url", transport.url]
        refused = cli(["start", "app", "1.0", *url], tmp_path, **operate)
        assert refused.exit_code == 1 and refused.output == (
            "error: cannot start a rollout of 'app' to 1.0: rollout 2 (1.0 -> 1.1) is running;"
            ' abort it first, or start with supersede (body {"supersede": true}, --supersede)\n'
        )
        missing = cli(["start", "app", "2.0", "--supersede", *url], tmp_path, **operate)
        assert missing.exit_code == 1 and "version '2.0' of 'app' is not published" in (
            missing.output
        )
        rig.clock.now += 1
        started = cli(["start", "app", "1.1", "--supersede", *url], tmp_path, **operate)
        assert started.exit_code == 0, started.output
        assert started.output.splitlines()[:2] == [
            "app: rollout 3 1.0 -> 1.1: running", "reason: started by an operator",
        ]  # fmt: skip
        denied = cli(["start", "app", "1.1", *url], tmp_path, **{STATUS_TOKEN_ENV: STATUS_TOKEN})
        assert denied.exit_code == 1 and "no operator token was sent" in denied.output
    assert rig.worker.rollouts is not None
    states = [r.state for r in rig.worker.rollouts.store.history("app")]
    assert states == [State.COMPLETED, State.SUPERSEDED, State.RUNNING]
    rig.worker.rollouts.store.close()


def test_a_version_missing_from_a_registry_names_the_repository_and_tag(tmp_path: Path) -> None:
    from tests.registry import run_registry

    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(
        "kind: Application\nmetadata: {name: app}\n"
        "spec:\n  firmware: {container: {image: fw/app:latest}}\n"
        "  rollout: {waves: [{percent: 100}]}\n"
        "---\nmetadata: {name: d0, application: app}\n"
    )
    with run_registry(tmp_path / "registry") as registry:
        publish(tmp_path, f"oci://{registry.host}/ajour/fw/app:latest", "1.0", b"\x01" * 900)
        targets = Targets(load_fleet([tmp_path / "fleet"]), f"{registry.host}/ajour", ttl=60)
        assert targets.published("app", "1.0").version == b"1.0"
        with pytest.raises(NotPublished) as missing:
            targets.published("app", "1.1")
    assert str(missing.value) == (
        f"version '1.1' of 'app' is not published: the registry repository"
        f" {registry.host}/ajour/fw/app has no tag '1.1' (publishers tag every artifact with"
        " its version; publish it first, or pick a version that has a tag)"
    )


def test_a_version_is_looked_up_in_container_firmware_only(tmp_path: Path) -> None:
    """(The fleet refuses spec.rollout on other firmware; Targets says so on its own too.)"""
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(
        "kind: Application\nmetadata: {name: app}\nspec: {firmware: {file: {name: app.bin}}}\n"
        "---\nmetadata: {name: d0, application: app}\n"
    )
    targets = Targets(load_fleet([tmp_path / "fleet"]), file_dir=tmp_path)
    with pytest.raises(DeliveryError) as refused:
        targets.published("app", "1.0")
    assert not isinstance(refused.value, NotPublished)
    assert str(refused.value) == (
        "application 'app' has file firmware: a rollout to a chosen version reads it by its"
        " version tag, so it needs container firmware"
    )
