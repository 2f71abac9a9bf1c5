"""``ajour-delivery broker-config``: hashed credentials, and files mosquitto can read as itself.

mosquitto, started as root, switches to its own user (``user mosquitto``) before it reads the
password file and the ACL; these tests run a real mosquitto that way.
"""

from __future__ import annotations

import grp
import os
import pwd
import queue
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml
from click.testing import CliRunner
from paho.mqtt.enums import CallbackAPIVersion

from ajour_build.core.fleet import load_fleet
from delivery import broker
from delivery.broker import ONLY_HASHED, broker_files, ownership, write
from delivery.cli import main
from delivery.errors import DeliveryError
from delivery.mqtt import MqttSettings, MqttTransport
from delivery.protocol import Status, decode_command, encode_status
from delivery.store import StatusStore
from delivery.targets import Targets
from delivery.worker import Worker
from tests.broker import run_broker
from tests.test_device_credentials import HTPASSWD_2Y, OPENSSL_6
from tests.test_sources import publish


def fleet_text() -> str:
    app = {"kind": "Application", "metadata": {"name": "app"}}
    app["spec"] = {"firmware": {"container": {"image": "fw/app:latest"}}}
    devices = {
        "plain": [{"pass": "pw-plain"}],
        "both": [{"pass": {"bcrypt": HTPASSWD_2Y}}, {"pass": {"plain": "pw-both"}}],
        "bcrypt": [{"pass": {"bcrypt": HTPASSWD_2Y}}],
        "sha": [{"user": {"username": "sha", "password": {"sha512": OPENSSL_6}}}],
        "mixed": [{"pass": {"bcrypt": HTPASSWD_2Y}}, {"pass": {"sha512": OPENSSL_6}}],
        "none": [{"cert": "abc"}],
    }
    docs = [app] + [
        {
            "metadata": {"name": name, "application": "app"},
            "spec": {"credentials": {"credentials": c}},
        }
        for name, c in devices.items()
    ]
    return "---\n".join(yaml.safe_dump(d) for d in docs)


@pytest.fixture
def fleet(write: Callable[[str, str], Path]) -> Path:
    return write("f.yaml", fleet_text()).parent


def test_devices_with_only_hashed_passwords_are_skipped_with_the_reason(fleet: Path) -> None:
    files = broker_files(load_fleet([fleet]), "ajour-worker", "w0rker")
    users = [line.partition(":")[0] for line in files.passwd.splitlines()]
    assert users == ["ajour-worker", "both@app", "plain@app"]
    assert "pw-" not in files.passwd and "user both@app" in files.acl
    reasons = dict(files.skipped)
    assert reasons["bcrypt@app"] == ONLY_HASHED.format(schemes="bcrypt")
    assert reasons["sha@app"] == ONLY_HASHED.format(schemes="sha512-crypt")
    assert reasons["mixed@app"] == ONLY_HASHED.format(schemes="bcrypt and sha512-crypt")
    assert reasons["none@app"] == "no password credentials in its spec"
    assert "user bcrypt@app" not in files.acl


def test_broker_config_cli_says_why_each_device_is_skipped(fleet: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["broker-config", "--fleet", str(fleet), "--out", str(tmp_path / "out")],
        env={"AJOUR_MQTT_WORKER_PASSWORD": "w0rker"},
    )
    assert result.exit_code == 0, result.output
    assert "2 devices; password_file" in result.output and "mode 0600" in result.output
    assert (
        "skipped bcrypt@app: its spec has only bcrypt hashes, and mosquitto cannot use those"
        in result.output
    )
    assert "let it use HTTP, where the worker verifies them" in result.output
    assert HTPASSWD_2Y not in result.output and "pw-" not in result.output
    for name in ("passwd", "acl"):
        assert stat.S_IMODE((tmp_path / "out" / name).stat().st_mode) == 0o600


def test_unknown_owner_or_group_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(DeliveryError, match="--owner 'no-such-user': no such user"):
        ownership("no-such-user")
    with pytest.raises(DeliveryError, match="--group 'no-such-group': no such group"):
        ownership(None, "no-such-group")


def test_a_chown_that_is_not_allowed_is_a_precise_error(
    fleet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(fd: int, uid: int, gid: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "fchown", refuse)
    files = broker_files(load_fleet([fleet]), "ajour-worker", "w0rker")
    who = broker.Ownership(uid=-1, gid=os.getgid(), group="staff")
    with pytest.raises(DeliveryError) as err:
        write(files, tmp_path / "out", who)
    assert "cannot write" in str(err.value) and "mode 0640, owner (you):staff" in str(err.value)
    assert "needs root" in str(err.value)
    assert list((tmp_path / "out").iterdir()) == [], "nothing half-written"


# -- a real mosquitto, running as its own user


def _mosquitto_user() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("handing files to another user needs root")
    try:
        return pwd.getpwnam("mosquitto")
    except KeyError:
        pytest.skip("no mosquitto user on this machine (Debian's mosquitto package makes it)")


@pytest.fixture
def reachable() -> Iterator[Path]:
    """A directory that the mosquitto user may enter (pytest's tmp dirs are 0700 root)."""
    path = Path(tempfile.mkdtemp(prefix="ajour-broker-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def _worker(tmp: Path, fleet: Path) -> Worker:
    publish(tmp, f"oci-layout://{tmp / 'oci' / 'fw' / 'app'}:latest", "4.0", b"m" * 1024)
    return Worker(Targets(load_fleet([fleet]), f"oci-layout://{tmp / 'oci'}"), StatusStore())


def _connect(port: int, user: str, password: str) -> tuple[mqtt.Client, queue.Queue[bytes], int]:
    got: queue.Queue[bytes] = queue.Queue()
    codes: queue.Queue[int] = queue.Queue()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"t-{user}-{time.monotonic_ns()}")
    client.username_pw_set(user, password)
    client.on_connect = lambda c, u, f, rc, p: codes.put(rc.value)
    client.on_message = lambda c, u, m: got.put(bytes(m.payload))
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client, got, codes.get(timeout=5)


@pytest.mark.parametrize("option", ["--owner", "--group"])
def test_mosquitto_running_as_its_own_user_reads_the_files(
    fleet: Path, tmp_path: Path, reachable: Path, option: str
) -> None:
    user = _mosquitto_user()
    out = reachable / "broker"
    result = CliRunner().invoke(
        main,
        ["broker-config", "--fleet", str(fleet), "--out", str(out), option, "mosquitto"],
        env={"AJOUR_MQTT_WORKER_PASSWORD": "w0rker"},
    )
    assert result.exit_code == 0, result.output
    assert "cannot enter" not in result.output
    for name in ("passwd", "acl"):
        info = (out / name).stat()
        assert stat.S_IMODE(info.st_mode) == 0o640
        assert info.st_gid == grp.getgrnam("mosquitto").gr_gid
        assert info.st_uid == (user.pw_uid if option == "--owner" else os.getuid())
    worker = _worker(tmp_path, fleet)
    with run_broker(tmp_path / "mqtt", out / "passwd", out / "acl", user="mosquitto") as port:
        transport = MqttTransport(
            worker, MqttSettings(url=f"mqtt://ajour-worker:w0rker@127.0.0.1:{port}")
        )
        transport.start()
        device, got, code = _connect(port, "plain@app", "pw-plain")
        try:
            assert code == 0, f"mosquitto refused the device's login: {code}"
            device.subscribe("ajour/app/plain/dfu/cmd", qos=1)
            time.sleep(0.3)
            device.publish("ajour/app/plain/dfu", encode_status(Status(b"0.1", 64, 7)), qos=1)
            assert decode_command(got.get(timeout=5)).correlation_id == 7
            wrong, _, refused = _connect(port, "plain@app", "nope")
            wrong.loop_stop()
            assert refused != 0
        finally:
            device.disconnect()
            device.loop_stop()
            transport.stop()


def test_files_for_the_writer_only_are_what_mosquitto_cannot_read(
    fleet: Path, tmp_path: Path, reachable: Path
) -> None:
    """Without --owner/--group (0600 root), mosquitto as its own user cannot open them."""
    _mosquitto_user()
    passwd, acl = write(broker_files(load_fleet([fleet]), "w", "pw"), reachable / "broker")
    with pytest.raises(RuntimeError, match="Unable to open pwfile"):
        with run_broker(tmp_path / "mqtt", passwd, acl, user="mosquitto"):
            pass


def test_broker_config_warns_when_the_owner_cannot_reach_the_directory(
    fleet: Path, tmp_path: Path
) -> None:
    _mosquitto_user()
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    result = CliRunner().invoke(
        main,
        [
            "broker-config",
            "--fleet",
            str(fleet),
            "--out",
            str(hidden / "b"),
            "--owner",
            "mosquitto",
        ],
        env={"AJOUR_MQTT_WORKER_PASSWORD": "w0rker"},
    )
    assert result.exit_code == 0, result.output
    assert "warning: mosquitto cannot enter" in result.output
