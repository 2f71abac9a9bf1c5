"""A staged rollout over MQTT: real mosquitto, a worker serving over MQTT with a rollout
application and a SQLite rollout file, on real time, and simulated devices that keep polling
after they are in sync (``simulate --mqtt … --keep-polling``), so the devices of a later
wave update once it opens."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ajour_build.core.fleet import load_fleet
from ajour_build.core.rollout.assignment import wave_of
from ajour_build.core.rollout.model import Outcome, State
from delivery.cli import main
from delivery.mqtt import MqttSettings, MqttTransport
from delivery.mqtt_simulator import simulate_mqtt
from delivery.rollout_store import SqliteRolloutStore
from delivery.rollouts import Rollouts
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.broker import run_broker
from tests.test_sources import publish

NAMES = [f"dev{i:02d}" for i in range(20)]
FLEET = """\
kind: Application
metadata: {name: app}
spec:
  firmware: {container: {image: fw/app:latest}}
  rollout:
    waves: [{percent: 30, dwell: 2s}, {percent: 100, dwell: 1s}]
""" + "".join(f"---\nmetadata: {{name: {n}, application: app}}\n" for n in NAMES)


def test_devices_that_keep_polling_over_mqtt_follow_the_waves(tmp_path: Path) -> None:
    (tmp_path / "fleet").mkdir()
    (tmp_path / "fleet" / "f.yaml").write_text(FLEET)
    image = f"oci-layout://{tmp_path / 'oci' / 'fw' / 'app'}:latest"
    publish(tmp_path, image, "1.0", b"\x01" * 3000)
    fleet = load_fleet([tmp_path / "fleet"])
    policy = fleet.applications["app"].rollout
    assert policy is not None
    wave = {n: wave_of(policy, "app", n) for n in NAMES}
    later = sorted(n for n in NAMES if wave[n] == 1)
    assert later and len(later) < len(NAMES), "the fixture needs devices in both waves"
    store = SqliteRolloutStore(tmp_path / "rollouts.db")
    targets = Targets(fleet, f"oci-layout://{tmp_path / 'oci'}", ttl=60)
    worker = Worker(targets, StatusStore(), rollouts=Rollouts(store))
    with run_broker(tmp_path / "mqtt") as port:
        url = f"mqtt://127.0.0.1:{port}"
        transport = MqttTransport(worker, MqttSettings(url=url))
        transport.start()
        try:
            baseline = simulate_mqtt(url, "app", NAMES, b"1.0", 512, timeout=30)
            assert {r.final for r in baseline} == {"1.0"} and all(r.synced for r in baseline)
            publish(tmp_path, image, "1.1", b"\x02" * 3000)
            targets.invalidate()
            devices = [arg for n in NAMES for arg in ("--device", n)]
            ran = CliRunner().invoke(main, [
                "simulate", "--mqtt", url, "--app", "app", *devices, "--start-version", "1.0",
                "--keep-polling", "7", "--timeout", "30", "--json",
            ])  # fmt: skip
        finally:
            transport.stop()
    assert ran.exit_code == 0, ran.output
    results = json.loads(ran.stdout)["devices"]
    assert [(r["device"], r["final"], r["error"]) for r in results] == [
        (n, "1.1", "") for n in NAMES
    ]
    assert all(r["bytesReceived"] == 3000 for r in results)
    assert all(r["seconds"] >= 7 for r in results), "each device polled for --keep-polling"
    rollout = store.latest("app")
    assert rollout is not None
    assert (rollout.seq, rollout.state, rollout.wave) == (2, State.COMPLETED, 1)
    opened = rollout.wave_started[1]
    assert opened - rollout.wave_started[0] >= 2  # the dwell of wave 1
    confirmed = {d: r for _, d, r in store.records("app", 2) if r.outcome is Outcome.CONFIRMED}
    assert sorted(confirmed) == NAMES
    for name in NAMES:  # wave 2's devices, synced on 1.0 first, updated once it opened
        record = confirmed[name]
        assert record.wave == wave[name]
        assert (record.at >= opened) == (wave[name] == 1), name
    store.close()
