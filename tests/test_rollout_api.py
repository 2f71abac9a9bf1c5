"""The rollout API and CLI on one worker served over HTTP on loopback: reports, the tokens,
400/404/405/409/413, the rollout notes of /v1/status, and ``ajour-delivery rollout``.

Real OCI layouts, a real SQLite rollout file, real HTTP; the rollout's clock is a test
clock, and devices are driven through ``Worker.handle`` (the flow over HTTP with simulated
devices is tests/test_rollout_api_flow.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ajour_build.core.fleet import load_fleet
from ajour_build.core.rollout.assignment import wave_of
from ajour_build.core.rollout.report import OPERATOR_TOKEN_ENV, RolloutReport
from ajour_build.core.wire import STATUS_TOKEN_ENV
from delivery.cli import main
from delivery.device import SimulatedDevice
from delivery.http import HttpTransport
from delivery.protocol import Write
from delivery.targets import Targets
from tests.http_wire import EVENTS_TOKEN, STATUS_TOKEN, one, request, serving, settings
from tests.registry import free_port
from tests.rollout_worker import RolloutWorker

OPERATOR_TOKEN = "operator-secret-3"
NAMES = [f"d{i}" for i in range(10)]
FLEET = (
    "kind: Application\nmetadata: {name: app}\n"
    "spec:\n  firmware: {container: {image: fw/app:latest}}\n"
    "  rollout:\n"
    "    waves: [{percent: 50, dwell: 1h}, {percent: 100, dwell: 1h, approval: manual}]\n"
    "    confirmDeadline: 10s\n"
    "---\nkind: Application\nmetadata: {name: plain}\n"
    "spec: {firmware: {container: {image: fw/app:latest}}}\n"
    "---\nmetadata: {name: p1, application: plain}\n"
    + "".join(f"---\nmetadata: {{name: {n}, application: app}}\n" for n in NAMES)
)


class Rig:
    """A worker with rollouts on a test clock (tests/rollout_worker.py), not served: each test
    serves it with the tokens it needs."""

    def __init__(self, tmp: Path) -> None:
        self.w = RolloutWorker.build(tmp, FLEET, 7_000.0)
        self.w.publish("app", "1.0", b"\x01" * 1500)
        self.tmp, self.clock, self.worker = tmp, self.w.clock, self.w.worker
        policy = self.worker.targets.fleet.applications["app"].rollout
        assert policy is not None
        self.waves = {n: wave_of(policy, "app", n) for n in NAMES}
        self.devices = {n: SimulatedDevice(b"1.0") for n in NAMES}

    def poll(self, name: str, times: int = 1) -> object:
        command: object = None
        for _ in range(times):
            command = self.w.handle("app", name, self.devices[name])
        return command

    def settle(self, name: str) -> None:
        for _ in range(20):
            self.poll(name)
            if self.devices[name].synced:
                return
        raise AssertionError(f"{name} did not settle")

    def publish_two(self) -> None:
        self.w.publish("app", "1.1", b"\x02" * 1500)
        self.clock.now += 1


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    made = Rig(tmp_path)
    yield made
    assert made.worker.rollouts is not None
    made.worker.rollouts.store.close()


def call(
    transport: HttpTransport, method: str, path: str, token: str | None = None, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    raw = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    got = one(transport, request(method, path, raw, headers))
    try:
        return got.status, json.loads(got.body)
    except ValueError:
        return got.status, got.body.decode()


def tokens(**kwargs: object) -> Any:
    return settings(operator_token=OPERATOR_TOKEN, **kwargs)


def test_reports_waves_downloads_outcomes_history_and_operations(rig: Rig) -> None:
    with serving(rig.worker, tokens()) as transport:
        assert call(transport, "GET", "/v1/rollouts", STATUS_TOKEN) == (200, [])
        for name in NAMES:  # the baseline
            rig.settle(name)
        status, base = call(transport, "GET", "/v1/rollouts/app", STATUS_TOKEN)
        assert status == 200 and (base["seq"], base["state"], base["waves"]) == (1, "completed", [])
        rig.publish_two()
        started = rig.clock.now
        first = sorted(n for n in NAMES if rig.waves[n] == 0)
        second = sorted(n for n in NAMES if rig.waves[n] == 1)
        assert len(first) >= 3 and second, "the fixture needs devices in both waves"
        reverting, stuck, *confirming = first
        rig.devices[reverting].revert = True
        for name in (reverting, *confirming, *second):
            rig.settle(name)
        rig.poll(stuck)  # one Write: it is downloading 1.1, and stops there
        assert rig.devices[stuck].updating == b"1.1"

        status, data = call(transport, "GET", "/v1/rollouts/app", STATUS_TOKEN)
        assert status == 200
        report = RolloutReport.model_validate(data)
        assert (report.seq, report.from_version, report.to_version, report.state) == (
            2, "1.0", "1.1", "running",
        )  # fmt: skip
        one_, two = report.waves
        assert (one_.number, one_.open, one_.opened_at, one_.approval) == (1, True, started, "auto")
        assert (one_.devices, one_.downloading, one_.pending) == (len(first), 1, 0)
        assert one_.outcomes == {
            "swapped": 0, "confirmed": len(confirming), "reverted": 1, "failed_download": 0,
            "timed_out": 0,
        }  # fmt: skip
        assert one_.held_back == [reverting] and report.held_back == [reverting]
        assert (two.number, two.open, two.opened_at, two.approval) == (2, False, None, "manual")
        assert (two.devices, two.pending, sum(two.outcomes.values())) == (len(second),) * 2 + (0,)
        assert all(rig.devices[n].bytes_received == 0 for n in second)

        # every device of the rollout has its note in /v1/status; the plain app's have none
        status, rows = call(transport, "GET", "/v1/status", STATUS_TOKEN)
        detail = {(r["application"], r["device"]): r["detail"] for r in rows}
        assert detail[("app", reverting)] == (
            "rollout 2 wave 1: reverted with 1.1; stays on 1.0 until retried"
        )
        assert detail[("app", stuck)] == "rollout 2 wave 1: downloading"
        assert all(detail[("app", n)] == "rollout 2 wave 1: confirmed" for n in confirming)
        assert all(detail[("app", n)] == "rollout 2 wave 2: wave not open yet" for n in second)
        assert detail[("plain", "p1")] == "no status received yet"
        status, rows = call(transport, "GET", f"/v1/status/app/{reverting}", STATUS_TOKEN)
        assert status == 200 and rows[0]["detail"].startswith("rollout 2 wave 1: reverted")

        status, listed = call(transport, "GET", "/v1/rollouts", STATUS_TOKEN)
        assert status == 200 and [(r["application"], r["seq"]) for r in listed] == [("app", 2)]
        status, history = call(transport, "GET", "/v1/rollouts/app?history=1", STATUS_TOKEN)
        assert status == 200 and [(r["seq"], r["state"]) for r in history] == [
            (2, "running"), (1, "completed"),
        ]  # fmt: skip

        # operations answer the new report
        status, paused = call(transport, "POST", "/v1/rollouts/app/pause", OPERATOR_TOKEN,
                              {"reason": "checking the canaries"})  # fmt: skip
        assert status == 200 and (paused["state"], paused["reason"]) == (
            "paused", "checking the canaries",
        )  # fmt: skip
        status, resumed = call(transport, "POST", "/v1/rollouts/app/resume", OPERATOR_TOKEN)
        assert status == 200 and (resumed["state"], resumed["reason"]) == ("running", "")
        status, retried = call(transport, "POST", "/v1/rollouts/app/retry", OPERATOR_TOKEN,
                               {"device": reverting})  # fmt: skip
        assert status == 200 and retried["heldBack"] == []
        assert retried["waves"][0]["outcomes"]["reverted"] == 0
        rig.devices[reverting].revert = False
        assert isinstance(rig.poll(reverting), Write)  # offered 1.1 again
        rig.clock.now += 1
        status, promoted = call(transport, "POST", "/v1/rollouts/app/promote", OPERATOR_TOKEN, {})
        assert status == 200 and promoted["waves"][1]["open"] is True
        assert promoted["waves"][1]["openedAt"] == rig.clock.now
        for name in second:
            rig.settle(name)
        assert {rig.devices[n].version for n in second} == {b"1.1"}
        status, done = call(transport, "POST", "/v1/rollouts/app/promote", OPERATOR_TOKEN)
        assert (status, done["state"], done["reason"]) == (
            200, "completed", "promoted past the last wave",
        )  # fmt: skip
        status, text = call(transport, "POST", "/v1/rollouts/app/pause", OPERATOR_TOKEN)
        assert (status, text) == (
            409,
            "cannot pause rollout 2 of 'app': it is completed, and pause needs it running\n",
        )
        status, rolled = call(transport, "POST", "/v1/rollouts/app/rollback", OPERATOR_TOKEN)
        assert status == 200 and rolled["state"] == "rolled_back"
        assert not any(w["open"] for w in rolled["waves"])
        for name in NAMES:
            rig.settle(name)
        assert {d.version for d in rig.devices.values()} == {b"1.0"}
        _, rows = call(transport, "GET", "/v1/status/app", STATUS_TOKEN)
        assert {r["detail"] for r in rows if r["device"] in second} == {
            "rollout 2 wave 2: confirmed; rolled back to 1.0"
        }


def test_who_may_read_and_who_may_operate(rig: Rig) -> None:
    rig.settle("d0")
    rig.publish_two()
    rig.settle("d0")
    wrong = ("wrong", EVENTS_TOKEN)
    with serving(rig.worker, tokens()) as transport:
        for token in (None, *wrong, OPERATOR_TOKEN):
            status, text = call(transport, "GET", "/v1/rollouts/app", token)
            assert status == 401 and "Bearer <the status token>" in text, token
        for token in (None, *wrong):
            status, text = call(transport, "POST", "/v1/rollouts/app/pause", token)
            assert status == 401 and "Bearer <the operator token>" in text, token
        status, text = call(transport, "POST", "/v1/rollouts/app/pause", STATUS_TOKEN)
        assert status == 403 and "the status token only reads rollouts" in text
        assert rig.worker.rollouts is not None
        current = rig.worker.rollouts.current("app")
        assert current is not None and current.state.value == "running"  # nothing happened
        assert call(transport, "POST", "/v1/rollouts/app/pause", OPERATOR_TOKEN)[0] == 200
    with serving(rig.worker, settings()) as transport:  # no operator token configured
        for token in (None, "", STATUS_TOKEN, OPERATOR_TOKEN):
            status, text = call(transport, "POST", "/v1/rollouts/app/resume", token)
            assert status in (401, 403), token
        status, text = call(transport, "POST", "/v1/rollouts/app/resume", "x")
        assert "no operator token configured (serve --operator-token or" in text
        assert OPERATOR_TOKEN_ENV in text
    with serving(rig.worker, settings(authenticate=False)) as transport:  # loopback demos
        status, resumed = call(transport, "POST", "/v1/rollouts/app/resume")
        assert status == 200 and resumed["state"] == "running"
        assert call(transport, "GET", "/v1/rollouts")[0] == 200


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "text"),
    [
        ("POST", "/v1/rollouts/app/pause", b"{", 400, "the body is not JSON (Expecting"),
        ("POST", "/v1/rollouts/app/pause", b"[1]", 400, "the body is a JSON list; send"),
        ("POST", "/v1/rollouts/app/pause", b'{"reson": "x"}', 400,
         "the body is not a rollout request: reson: Extra inputs are not permitted"),
        ("POST", "/v1/rollouts/app/pause", b'{"reason": 5}', 400,
         "reason: Input should be a valid string"),
        ("POST", "/v1/rollouts/app/pause", b'{"device": "d1"}', 400,
         '"device" is only for retry, not for pause'),
        ("POST", "/v1/rollouts/app/abort", b'{"reason": "x"}', 400,
         '"reason" is only for pause, not for abort'),
        ("POST", "/v1/rollouts/app/retry", b"{}", 400, 'retry needs the device: send {"device"'),
        ("POST", "/v1/rollouts/app/pause", b'{"reason": "a\\nb"}', 400,
         '"reason" must be one printable line; character 2 is \'\\n\''),
        ("POST", "/v1/rollouts/app/pause", b'{"reason": "' + b"x" * 5000 + b'"}', 413, ""),
        ("POST", "/v1/rollouts/app/retry", b'{"device": "nope"}', 404,
         "device 'nope' is not in application 'app'"),
        ("POST", "/v1/rollouts/ghost/pause", b"", 404, "application 'ghost' is not in the fleet"),
        ("POST", "/v1/rollouts/plain/pause", b"", 404, "application 'plain' has no spec.rollout"),
        ("POST", "/v1/rollouts/app/launch", b"", 404,
         "unknown action 'launch'; the actions are pause, resume, abort, rollback, promote, retry"),
        ("POST", "/v1/rollouts/app/resume", b"", 409,
         "cannot resume rollout 2 of 'app': it is running, and resume needs it paused"),
        ("GET", "/v1/rollouts/ghost", b"", 404, "application 'ghost' is not in the fleet"),
        ("GET", "/v1/rollouts/app?history=yes", b"", 400, "history='yes': use history=1"),
        ("GET", "/v1/rollouts/app/pause", b"", 405, "GET is not allowed here; use POST"),
        ("POST", "/v1/rollouts/app", b"", 405, "POST is not allowed here; use GET"),
        ("GET", "/v1/rollouts/app/pause/x", b"", 404, "not found: /v1/rollouts/app/pause/x"),
    ],
)  # fmt: skip
def test_refusals_say_what_is_wrong(
    rig: Rig, method: str, path: str, body: bytes, status: int, text: str
) -> None:
    rig.settle("d0")
    rig.publish_two()
    rig.settle("d0")
    with serving(rig.worker, tokens()) as transport:
        token = OPERATOR_TOKEN if method == "POST" else STATUS_TOKEN
        got, said = call(transport, method, path, token, body)
        assert got == status and text in said, said
    assert rig.worker.rollouts is not None
    current = rig.worker.rollouts.current("app")
    assert current is not None and (current.state.value, current.revision) == ("running", 0)


def test_an_application_whose_rollout_has_not_started_is_404(rig: Rig) -> None:
    with serving(rig.worker, tokens()) as transport:
        status, text = call(transport, "GET", "/v1/rollouts/app", STATUS_TOKEN)
        assert status == 404 and "application 'app' has no rollout yet" in text
        status, text = call(transport, "POST", "/v1/rollouts/app/pause", OPERATOR_TOKEN)
        assert status == 404 and "has no rollout yet" in text


def cli(args: list[str], tmp: Path, **env: str) -> Any:
    (tmp / "none.yaml").write_text("{}\n")
    return CliRunner().invoke(main, ["rollout", *args], env={"AJOUR_CONFIG": str(tmp / "none.yaml"),
                              **env})  # fmt: skip


def test_cli_shows_and_operates_and_says_what_went_wrong(rig: Rig, tmp_path: Path) -> None:
    for name in NAMES:
        rig.settle(name)
    rig.publish_two()
    reverting = sorted(n for n in NAMES if rig.waves[n] == 0)[0]
    rig.devices[reverting].revert = True
    for name in NAMES:
        rig.settle(name)
    read = {STATUS_TOKEN_ENV: STATUS_TOKEN}
    operate = {OPERATOR_TOKEN_ENV: OPERATOR_TOKEN}
    first = sum(1 for n in NAMES if rig.waves[n] == 0)
    with serving(rig.worker, tokens()) as transport:
        url = ["--url", transport.url]
        shown = cli(["show", "app", *url], tmp_path, **read)
        assert shown.exit_code == 0, shown.output
        lines = shown.output.splitlines()
        assert lines[0] == "app: rollout 2 1.0 -> 1.1: running"
        assert lines[1].split() == [
            "wave",
            "open",
            "approval",
            "devices",
            "pending",
            "downloading",
            "swapped",
            "confirmed",
            "failed",
            "reverted",
        ]
        assert lines[2].split() == ["1", "yes", "auto", str(first), "0", "0", "0",
                                    str(first - 1), "0", "1"]  # fmt: skip
        assert lines[3].split()[:5] == ["2", "no", "manual", str(10 - first), str(10 - first)]
        assert f"held back until retried: {reverting}" in shown.output

        paused = cli(["pause", "app", "--reason", "too many reverts", *url], tmp_path, **operate)
        assert paused.exit_code == 0, paused.output
        assert paused.output.splitlines()[:2] == [
            "app: rollout 2 1.0 -> 1.1: paused", "reason: too many reverts",
        ]  # fmt: skip
        listed = cli(["list", *url], tmp_path, **read)
        assert listed.exit_code == 0 and "paused" in listed.output.splitlines()[1]
        as_json = cli(["show", "app", "--json", *url], tmp_path, **read)
        assert json.loads(as_json.output)["reason"] == "too many reverts"

        again = cli(["pause", "app", *url], tmp_path, **operate)
        assert again.exit_code == 1
        assert again.output == (
            "error: cannot pause rollout 2 of 'app': it is paused, and pause needs it running\n"
        )
        denied = cli(["resume", "app", *url], tmp_path, **read)  # the status token only
        assert denied.exit_code == 1 and "answered HTTP 401" in denied.output
        assert "no operator token was sent; pass --token or set" in denied.output
        assert STATUS_TOKEN not in denied.output
        with_status = cli(["resume", "app", "--token", STATUS_TOKEN, *url], tmp_path)
        assert with_status.exit_code == 1 and "HTTP 403" in with_status.output
        assert "the token was refused" in with_status.output
        missing = cli(["retry", "app", "nope", *url], tmp_path, **operate)
        assert missing.output == "error: device 'nope' is not in application 'app'\n"
        retried = cli(["retry", "app", reverting, *url], tmp_path, **operate)
        assert retried.exit_code == 0 and "held back" not in retried.output
        config = tmp_path / "ajour.yaml"  # the operator token from the installation config
        config.write_text(f"delivery:\n  operator_token: {OPERATOR_TOKEN}\n")
        resumed = cli(["resume", "app", "--config", str(config), *url], tmp_path)
        assert resumed.exit_code == 0 and resumed.output.startswith(
            "app: rollout 2 1.0 -> 1.1: running\n"
        )
    gone = f"http://127.0.0.1:{free_port()}"
    down = cli(["show", "app", "--url", gone], tmp_path, **read)
    assert down.exit_code == 1
    assert down.output.startswith(f"error: cannot reach the delivery worker at {gone}: ")


def test_a_reloaded_fleet_is_assigned_again(rig: Rig) -> None:
    """The wave assignment is kept per fleet: a fleet reload with new devices shows them."""
    rig.settle("d0")
    rig.publish_two()
    rig.settle("d0")
    with serving(rig.worker, tokens()) as transport:
        before = call(transport, "GET", "/v1/rollouts/app", STATUS_TOKEN)[1]
        assert sum(w["devices"] for w in before["waves"]) == len(NAMES)
        again = call(transport, "GET", "/v1/rollouts/app", STATUS_TOKEN)[1]
        assert again == before
        added = "".join(f"---\nmetadata: {{name: n{i}, application: app}}\n" for i in range(5))
        (rig.tmp / "fleet" / "fleet.yaml").write_text(FLEET + added)
        fleet = load_fleet([rig.tmp / "fleet"])
        rig.worker.targets = Targets(fleet, f"oci-layout://{rig.tmp / 'oci'}", ttl=60)
        after = call(transport, "GET", "/v1/rollouts/app", STATUS_TOKEN)[1]
        assert sum(w["devices"] for w in after["waves"]) == len(NAMES) + 5
        _, rows = call(transport, "GET", "/v1/status/app/n0", STATUS_TOKEN)
        assert rows[0]["detail"].startswith("rollout 2 wave ")
