"""A staged rollout operated over the API: ``ajour-delivery serve`` (a real process, a real
SQLite rollout file, real time), 200 simulated devices polling it over HTTP, 10 % of them
reverting (``Failures.share``, as ``simulate --fail-rate 0.1 --seed 5``).

The rollout pauses at the first wave whose criterion trips; ``GET /v1/rollouts/app`` and
``ajour-delivery rollout show`` say why; then resume, abort (through the CLI) and rollback
do what docs/rollouts.md says, checked on every device's version.

The criterion's ``minFinished`` is the size of wave 2 (40 devices), so that the criterion
judges the whole wave: under real time, the reason is then exact (a smaller one could trip
on whichever devices happened to finish first).
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from ajour_build.core.rollout.report import OPERATOR_TOKEN_ENV
from ajour_build.core.wire import EVENTS_TOKEN_ENV, STATUS_TOKEN_ENV
from delivery.cli import main
from delivery.errors import DeliveryError
from delivery.simulator import Failures, HttpDeviceLink, run_device
from tests.conftest import REPO
from tests.registry import free_port
from tests.test_rollout_flow import IMAGE_ONE, IMAGE_TWO, NAMES, wave_by_hash
from tests.test_sources import publish

TOKENS = {STATUS_TOKEN_ENV: "st-flow", EVENTS_TOKEN_ENV: "ev-flow"}
OPERATOR = "op-flow"
FAILING = Failures.share(NAMES, 0.1, "revert", seed=5)
WAVE = {n: wave_by_hash(n) for n in NAMES}
SIZES = [sum(1 for n in NAMES if WAVE[n] == w) for w in range(4)]
BAD = [sum(1 for n in FAILING.devices if WAVE[n] == w) for w in range(4)]
MIN_FINISHED = SIZES[1]
PASSWORD = "pw-flow"

FLEET = f"""\
kind: Application
metadata: {{name: app}}
spec:
  firmware: {{container: {{image: fw/app:latest}}}}
  rollout:
    waves: [{{percent: 5, dwell: 1s}}, {{percent: 25, dwell: 6s}}, {{percent: 50, dwell: 1s}},
            {{percent: 100, approval: manual}}]
    criteria:
      - {{outcome: reverted, threshold: 0.1, minFinished: {MIN_FINISHED}}}
""" + "".join(
    f"---\nmetadata: {{name: {n}, application: app}}\n"
    f"spec: {{credentials: {{credentials: [{{pass: {PASSWORD}}}]}}}}\n"
    for n in NAMES
)


def test_the_fixture() -> None:
    """Wave 1 is too small to judge, wave 2 trips (7 of 40), wave 3 has no failing device."""
    assert len(FAILING.devices) == 19 and SIZES == [6, 40, 47, 107]
    assert SIZES[0] < MIN_FINISHED and BAD[1] / SIZES[1] >= 0.1 and BAD[2] == 0


class Api:
    def __init__(self, url: str) -> None:
        self.url = url
        self.port = int(url.rsplit(":", 1)[1])

    def call(self, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw.decode()

    def report(self) -> dict[str, Any]:
        status, data = self.call("GET", "/v1/rollouts/app", TOKENS[STATUS_TOKEN_ENV])
        assert status == 200, data
        assert isinstance(data, dict)
        return data

    def operate(self, action: str, body: Any = None) -> dict[str, Any]:
        path = f"/v1/rollouts/app/{action}"
        status, data = self.call("POST", path, OPERATOR, body or {})
        assert status == 200, data
        assert isinstance(data, dict)
        return data


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@contextmanager
def serving(tmp: Path) -> Iterator[Api]:
    port = free_port()
    config = tmp / "ajour.yaml"  # the operator token: from here, for serve and the CLI
    config.write_text(f"delivery:\n  operator_token: {OPERATOR}\n")
    env = {**os.environ, **TOKENS, "PYTHONPATH": str(REPO), "AJOUR_CONFIG": str(config)}
    env.pop(OPERATOR_TOKEN_ENV, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "delivery.cli", "serve", "--fleet", str(tmp / "fleet"),
         "--http", f"127.0.0.1:{port}", "--rollout-db", str(tmp / "rollouts.db"),
         "--registry", f"oci-layout://{tmp / 'oci'}", "--poll-synced", "1", "--ttl", "0.3"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    api = Api(f"http://127.0.0.1:{port}")
    try:
        wait_for(lambda: _answers(api), "the worker to listen")
        yield api
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
        assert b"Traceback" not in err, err.decode()[-3000:]


def _answers(api: Api) -> bool:
    try:
        return api.call("GET", "/v1/rollouts", TOKENS[STATUS_TOKEN_ENV])[0] == 200
    except OSError:
        return False


class Fleet:
    """The 200 simulated devices, each polling from its own thread until ``stop``."""

    def __init__(self, url: str) -> None:
        self.devices = {n: FAILING.device(n, b"1.0", 512) for n in NAMES}
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(url, n)) for n in NAMES]

    def _run(self, url: str, name: str) -> None:
        link = HttpDeviceLink(url, "app", name, PASSWORD, 10)

        def exchange(status: bytes) -> bytes:
            if self.stop.is_set():
                raise DeliveryError("the test is over")
            return link(status)

        try:
            run_device("app", name, self.devices[name], exchange, wait_cap=0.25,
                       keep_polling=120)  # fmt: skip
        finally:
            link.close()

    def versions(self, wave: int) -> dict[str, bytes]:
        return {n: d.version for n, d in self.devices.items() if WAVE[n] == wave}

    def expect(self, updated_waves: int) -> None:
        """Devices of the first ``updated_waves`` waves run 1.1 (unless they revert); the
        others run 1.0 and never received a byte of 1.1."""
        for name, device in self.devices.items():
            updated = WAVE[name] < updated_waves and name not in FAILING.devices
            assert device.version == (b"1.1" if updated else b"1.0"), name
            if WAVE[name] >= updated_waves:
                assert device.bytes_received == 0, name


def cli(args: list[str], tmp: Path) -> Any:
    env: dict[str, str | None] = {**TOKENS, "AJOUR_CONFIG": str(tmp / "ajour.yaml")}
    env[OPERATOR_TOKEN_ENV] = None  # unset: the token comes from the config
    return CliRunner().invoke(main, ["rollout", *args], env=env)


def test_a_rollout_paused_by_its_criterion_then_resumed_aborted_and_rolled_back(
    tmp_path: Path,
) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    image = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest"
    publish(tmp_path, image, "1.0", IMAGE_ONE)
    with serving(tmp_path) as api:
        fleet = Fleet(api.url)
        for thread in fleet.threads:
            thread.start()
        try:
            wait_for(lambda: api.call("GET", "/v1/rollouts", TOKENS[STATUS_TOKEN_ENV])[1] != [],
                     "the baseline")  # fmt: skip
            publish(tmp_path, image, "1.1", IMAGE_TWO)
            wait_for(lambda: api.report()["state"] == "paused", "the criterion to trip", 40)
            paused = api.report()
            assert (paused["seq"], paused["fromVersion"], paused["toVersion"]) == (2, "1.0", "1.1")
            reason = (
                f"wave 2: {BAD[1]} of {SIZES[1]} finished devices reverted"
                f" ({BAD[1] / SIZES[1] * 100:.4g}%) >= threshold 10% with min_finished 40"
            )
            assert paused["reason"] == reason
            waves = paused["waves"]
            assert [(w["number"], w["open"], w["devices"]) for w in waves] == [
                (1, True, SIZES[0]), (2, True, SIZES[1]), (3, False, SIZES[2]),
                (4, False, SIZES[3]),
            ]  # fmt: skip
            for w in (0, 1):
                outcomes = waves[w]["outcomes"]
                assert (outcomes["confirmed"], outcomes["reverted"]) == (SIZES[w] - BAD[w], BAD[w])
            assert sum(waves[2]["outcomes"].values()) == 0 and waves[3]["approval"] == "manual"
            held = sorted(n for n in FAILING.devices if WAVE[n] < 2)
            assert paused["heldBack"] == held
            fleet.expect(updated_waves=2)

            shown = cli(["show", "app", "--url", api.url], tmp_path)
            assert shown.exit_code == 0, shown.output
            lines = shown.output.splitlines()
            assert lines[:2] == ["app: rollout 2 1.0 -> 1.1: paused", f"reason: {reason}"]
            assert lines[4].split() == ["2", "yes", "auto", "40", "0", "0", "0",
                                        str(SIZES[1] - BAD[1]), "0", str(BAD[1])]  # fmt: skip
            _, rows = api.call("GET", "/v1/status/app", TOKENS[STATUS_TOKEN_ENV])
            detail = {r["device"]: r["detail"] for r in rows}
            assert len(detail) == 200
            assert all(detail[n].startswith(f"rollout 2 wave {WAVE[n] + 1}: ") for n in NAMES)
            assert detail[held[0]].endswith("reverted with 1.1; stays on 1.0 until retried")

            # who may operate: not the status token, not without a token
            path = "/v1/rollouts/app/resume"
            assert api.call("POST", path, TOKENS[STATUS_TOKEN_ENV], {})[0] == 403
            assert api.call("POST", path, None, {})[0] == 401

            # resume: wave 3 opens after wave 2's dwell; wave 4 waits for its approval
            resumed = api.operate("resume")
            assert (resumed["state"], resumed["reason"]) == ("running", "")

            def wave_three_done() -> bool:
                w = api.report()["waves"][2]
                return bool(w["open"]) and w["outcomes"]["confirmed"] == SIZES[2]

            wait_for(wave_three_done, "wave 3 to update")
            after = api.report()
            assert after["state"] == "running" and not after["waves"][3]["open"]
            fleet.expect(updated_waves=3)

            # abort (through the CLI): updated devices keep 1.1, the others stay on 1.0
            aborted = cli(["abort", "app", "--url", api.url], tmp_path)
            assert aborted.exit_code == 0, aborted.output
            assert aborted.output.startswith("app: rollout 2 1.0 -> 1.1: aborted\n")
            refused = cli(["promote", "app", "--url", api.url], tmp_path)
            assert refused.exit_code == 1 and refused.output == (
                "error: cannot promote rollout 2 of 'app': it is aborted, and promote needs it"
                " running or paused\n"
            )
            time.sleep(1.5)  # several polls of every device
            fleet.expect(updated_waves=3)
            last = next(n for n in NAMES if WAVE[n] == 3)

            def detail_of_last() -> str:  # what its last poll was told
                _, rows = api.call("GET", "/v1/status/app", TOKENS[STATUS_TOKEN_ENV])
                return str({r["device"]: r["detail"] for r in rows}[last])

            aborted_detail = "rollout 2 wave 4: not offered; aborted, on 1.0"
            wait_for(lambda: detail_of_last() == aborted_detail, f"{last} to poll after the abort")

            # rollback: every device is offered 1.0 again, and takes it
            rolled = api.operate("rollback")
            assert rolled["state"] == "rolled_back" and not any(w["open"] for w in rolled["waves"])
            wait_for(lambda: {d.version for d in fleet.devices.values()} == {b"1.0"},
                     "every device to run 1.0")  # fmt: skip

            def reported() -> set[str]:
                _, rows = api.call("GET", "/v1/status/app", TOKENS[STATUS_TOKEN_ENV])
                return {r["current"] for r in rows}

            wait_for(lambda: reported() == {"1.0"}, "every device to report 1.0")
        finally:
            fleet.stop.set()
            for thread in fleet.threads:
                thread.join(15)
