"""A build publishes right after it succeeds, and delivery is told (an HTTP event)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from ajour_build.core.errors import PublishError
from ajour_build.publish import notify
from ajour_build.publish.destination import inspect
from ajour_build.publish.publisher import Published
from tests.conftest import EXAMPLES, REPO
from tests.firmware import make_repo
from tests.registry import free_port, receiver, run_registry

APP = """\
kind: Application
metadata: {{name: blinky}}
spec:
  firmware:
    container:
      image: fw/blinky:latest
      build:
        image: arm-gcc
        source: {{git: {{uri: "file://{repo}", rev: main}}}}
        args: ["--board", "mps2-an385"]
        artifact: {{path: build/blinky.bin}}
"""


def test_build_publish_notify(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    make_repo(repo, EXAMPLES / "firmware" / "c-blinky")
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    (fleet / "app.yaml").write_text(APP.format(repo=repo))
    with run_registry(tmp_path / "registry") as registry, receiver() as (hook, events):
        (fleet / "ajour.yaml").write_text(
            f"allowed_applications: [blinky]\nregistry: {{prefix: '{registry.host}'}}\n"
            "publish_repositories: {blinky: [fw]}\nsources: {allow_local: true}\n"
            "builders: {arm-gcc: {image: localhost/ajour/builder-arm-gcc:0.2.0}}\n"
        )
        args = [
            "build",
            str(fleet),
            "--app",
            "blinky",
            "--runner",
            "host",
            "--builders",
            str(REPO / "builder-images"),
            "--state-dir",
            str(tmp_path / "state"),
            "--version",
            "2.4.0",
            "--publish",
            "--notify",
            hook,
            "--json",
        ]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        (record,) = json.loads(result.stdout)
        published = record["published"]
        assert published["target"] == f"oci://{registry.host}/fw/blinky:latest"
        info = inspect(published["target"], {})
        assert info.version == "2.4.0" and info.checksum == "sha256:" + record["artifact"]["sha256"]
        assert info.source.commit == record["commit"]
        assert events.received == [
            {
                "image": f"{registry.host}/fw/blinky",
                "tag": "latest",
                "digest": published["digest"],
                "version": "2.4.0",
                "target": published["target"],
            }
        ]
        layout = f"oci-layout://{tmp_path / 'layout'}:latest"
        again = CliRunner().invoke(main, [*args[:-3], "--to", layout, "--json"])
        assert again.exit_code == 0, again.output
        assert json.loads(again.stdout)[0]["cached"] is True
        assert inspect(layout, {}).version == "2.4.0"


def test_notification_failure_is_a_warning_not_a_lost_publish(tmp_path: Path) -> None:
    done = Published(
        "oci://r/x:latest", "r/x@sha256:" + "0" * 64, "sha256:" + "0" * 64, "1.0", ("1.0", "latest")
    )
    with pytest.raises(PublishError, match="published, but notifying"):
        notify.send(f"http://127.0.0.1:{free_port()}/hook", done, timeout=1)
    art = tmp_path / "fw.bin"
    art.write_bytes(b"fw")
    result = CliRunner().invoke(
        main,
        [
            "publish",
            str(art),
            "--to",
            f"oci-layout://{tmp_path / 'l'}:latest",
            "--version",
            "1.0",
            "--notify",
            f"http://127.0.0.1:{free_port()}/hook",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "warning: published, but notifying" in result.output
    assert inspect(f"oci-layout://{tmp_path / 'l'}:latest", {}).version == "1.0"


def test_inspect_cli_shows_the_version_behind_latest(tmp_path: Path) -> None:
    art = tmp_path / "fw.bin"
    art.write_bytes(b"fw-bytes")
    url = f"oci-layout://{tmp_path / 'l'}:latest"
    runner = CliRunner()
    assert (
        runner.invoke(main, ["publish", str(art), "--to", url, "--version", "0.10"]).exit_code == 0
    )
    result = runner.invoke(main, ["inspect", url, "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["version"] == "0.10"
    missing = runner.invoke(main, ["inspect", f"oci-layout://{tmp_path / 'l'}:nope"])
    assert missing.exit_code == 1 and "tag 'nope' not found" in missing.output


def test_mqtt_notification_reaches_a_subscriber(tmp_path: Path) -> None:
    import queue

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from tests.broker import run_broker

    with run_broker(tmp_path / "mqtt") as port:
        got: queue.Queue[bytes] = queue.Queue()
        subscribed = threading.Event()
        client = mqtt.Client(CallbackAPIVersion.VERSION2)
        client.on_message = lambda _c, _u, msg: got.put(bytes(msg.payload))
        client.on_subscribe = lambda *_: subscribed.set()
        client.connect("127.0.0.1", port)
        client.subscribe("ajour/published", qos=1)
        client.loop_start()
        try:
            assert subscribed.wait(10), "the broker never acknowledged the subscription"
            done = Published(
                "oci://r/fw:latest",
                "r/fw@sha256:" + "1" * 64,
                "sha256:" + "1" * 64,
                "3.3",
                ("3.3", "latest"),
            )
            notify.send(f"mqtt://127.0.0.1:{port}/ajour/published", done)
            assert json.loads(got.get(timeout=5)) == {
                "image": "r/fw",
                "tag": "latest",
                "digest": "sha256:" + "1" * 64,
                "version": "3.3",
                "target": "oci://r/fw:latest",
            }
        finally:
            client.loop_stop()
            client.disconnect()


def test_release_notifies_a_worker_with_its_events_token(tmp_path: Path) -> None:
    """The worker wants ``Bearer <events token>``; release sends AJOUR_DELIVERY_EVENTS_TOKEN."""
    from ajour_build.publish.destination import release
    from ajour_build.publish.publisher import FirmwareArtifact
    from tests.http_wire import EVENTS_TOKEN, serving, settings, small_worker

    worker = small_worker(tmp_path / "worker")
    art = tmp_path / "fw.bin"
    art.write_bytes(b"new firmware")
    to = f"oci-layout://{tmp_path / 'worker' / 'oci' / 'fw' / 'app'}:latest"
    with serving(worker, settings()) as transport:
        url = f"{transport.url}/v1/events"
        refused = release(FirmwareArtifact(art, "2.0"), to, {}, notify_url=url)
        assert refused.warning is not None and "AJOUR_DELIVERY_EVENTS_TOKEN" in refused.warning
        env = {"AJOUR_DELIVERY_EVENTS_TOKEN": EVENTS_TOKEN}
        told = release(FirmwareArtifact(art, "2.1"), to, env, notify_url=url)
        assert told.warning is None and EVENTS_TOKEN not in refused.warning
        assert worker.counters.snapshot()["events"] == 1
