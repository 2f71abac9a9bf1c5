"""The readers of the worker's ``GET /v1/status`` send its status token: ``ajour-delivery
status`` (option, environment or installation config) and the console (issue 12)."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ajour_build.config import load_config
from ajour_build.console import devices
from ajour_build.core.wire import read_reports
from delivery.cli import main
from delivery.protocol import Status, encode_status
from delivery.status_table import ago
from delivery.worker import Worker
from tests.http_wire import STATUS_TOKEN, basic, one, request, serving, settings, small_worker


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: Any) -> Worker:
    monkeypatch.chdir(tmp_path)  # no ./ajour.yaml unless a test writes one
    for name in ("AJOUR_CONFIG", "AJOUR_DELIVERY_STATUS_TOKEN", "AJOUR_DELIVERY__STATUS_TOKENS"):
        monkeypatch.delenv(name, raising=False)
    return small_worker(tmp_path)


def _report(transport: Any) -> None:
    """One device reports, so the status has a row with progress."""
    status = encode_status(Status(b"0.1", 256))
    headers = {"Authorization": basic("dev1@app", "pw-1")}
    answer = one(transport, request("POST", "/v1/dfu?application=app&device=dev1", status, headers))
    assert answer.status == 200


def test_status_cli_sends_the_token_from_option_env_or_config(
    worker: Worker, tmp_path: Path, monkeypatch: Any
) -> None:
    with serving(worker, settings()) as transport:
        _report(transport)
        url = ["status", "--url", transport.url]
        missing = CliRunner().invoke(main, url)
        assert missing.exit_code == 1
        assert "HTTP 401: the worker asks for its status token; pass --token" in missing.output
        wrong = CliRunner().invoke(main, [*url, "--token", "nope"])
        assert wrong.exit_code == 1 and "the token was refused" in wrong.output
        assert "nope" not in wrong.output
        given = CliRunner().invoke(main, [*url, "--token", STATUS_TOKEN])
        assert given.exit_code == 0, given.output
        assert re.search(r"app/dev1 +Updating +0\.1 +1\.0 +0/2000 0%", given.output)
        from_env = CliRunner().invoke(main, url, env={"AJOUR_DELIVERY_STATUS_TOKEN": STATUS_TOKEN})
        assert from_env.exit_code == 0 and re.search(r"app/dev1 +Updating", from_env.output)
        (tmp_path / "ajour.yaml").write_text(f"delivery:\n  status_tokens: ['{STATUS_TOKEN}']\n")
        from_config = CliRunner().invoke(main, [*url, "--app", "app", "--json"])
        assert from_config.exit_code == 0, from_config.output
        assert '"device": "dev1"' in from_config.output
        unknown = CliRunner().invoke(main, [*url, "--app", "other"])
        assert unknown.exit_code == 0, unknown.output
        assert "the worker knows no device of application 'other'" in unknown.output


def test_console_reads_delivery_with_the_status_token(
    worker: Worker, tmp_path: Path, monkeypatch: Any
) -> None:
    with serving(worker, settings()) as transport:
        _report(transport)
        refused = devices.fetch(transport.url)
        assert "asks for its status token (HTTP 401)" in refused.error
        assert "delivery.status_tokens" in refused.error and not refused.rows
        assert "refused the status token" in devices.fetch(transport.url, token="nope").error
        found = devices.fetch(transport.url, "app", STATUS_TOKEN)
        assert found.reachable and len(found.rows) == 4
        assert {r.device for r in found.rows if r.offset is not None} == {"dev1"}
        cache = devices.StatusCache()
        assert cache.get(transport.url, None, STATUS_TOKEN).rows == found.rows
    config = tmp_path / "ajour.yaml"
    config.write_text("delivery:\n  status_tokens: [from-config, second]\n")
    assert devices.status_token(load_config(config, {})) == "from-config"
    config.write_text("allowed_applications: [app]\n")
    monkeypatch.setenv("AJOUR_DELIVERY_STATUS_TOKEN", "from-env")
    assert devices.status_token(load_config(config, {})) == "from-env"


def test_status_is_a_table_with_dashes_and_last_seen(worker: Worker) -> None:
    with serving(worker, settings()) as transport:
        _report(transport)
        args = ["status", "--url", transport.url, "--token", STATUS_TOKEN]
        shown = CliRunner().invoke(main, args)
        as_json = CliRunner().invoke(main, [*args, "--json"])
    assert shown.exit_code == 0, shown.output
    header, *lines = shown.output.splitlines()
    assert header.split() == ["DEVICE", "STATE", "CURRENT", "TARGET", "PROGRESS", "LAST", "SEEN"]
    by_device = {line.split()[0]: line for line in lines}
    assert set(by_device) == {"app/dev0", "app/dev1", "app/dev2", "app/dev3"}
    seen = re.fullmatch(
        r"app/dev1 +Updating +0\.1 +1\.0 +0/2000 0% +(\d+) s ago \((\S+)Z\)", by_device["app/dev1"]
    )
    assert seen is not None, by_device["app/dev1"]
    assert int(seen[1]) < 30
    when = datetime.fromisoformat(seen[2]).replace(tzinfo=UTC).timestamp()
    assert abs(when - time.time()) < 30
    # a device never heard from: dashes where nothing is known, never None or an empty cell
    assert re.fullmatch(r"app/dev2 +Unknown +— +— +— +never", by_device["app/dev2"])
    assert "None" not in shown.output
    reports = {r["device"]: r for r in json.loads(as_json.output)}
    assert reports["dev2"]["lastSeen"] is None
    stamp = reports["dev1"]["lastSeen"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", stamp), stamp
    assert abs(datetime.fromisoformat(stamp).timestamp() - time.time()) < 30


def test_last_seen_is_relative_in_the_largest_whole_unit() -> None:
    assert [ago(s) for s in (-3, 0.4, 59.9, 60, 3599, 3600, 86399, 86400 * 9)] == [
        "0 s ago", "0 s ago", "59 s ago", "1 min ago", "59 min ago", "1 h ago", "23 h ago",
        "9 d ago",
    ]  # fmt: skip


def test_last_seen_reads_the_new_rfc3339_and_the_old_epoch_seconds() -> None:
    base = {"application": "a", "device": "d"}
    epoch = 1_796_576_249.25
    new = read_reports([{**base, "lastSeen": "2026-12-06T16:57:29.25Z"}])[0]
    old = read_reports([{**base, "lastSeen": epoch}])[0]
    offset = read_reports([{**base, "lastSeen": "2026-12-06T17:57:29.25+01:00"}])[0]
    assert new.last_seen == old.last_seen == offset.last_seen == epoch
    assert new.as_json()["lastSeen"] == "2026-12-06T16:57:29.250000Z"
    for bad in ("yesterday", "", None, True, float("inf"), -5, "9" * 500, ["x"]):
        (report,) = read_reports([{**base, "lastSeen": bad}])
        assert report.last_seen == 0.0 and report.as_json()["lastSeen"] is None, bad
