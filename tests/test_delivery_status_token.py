"""The readers of the worker's ``GET /v1/status`` send its status token: ``ajour-delivery
status`` (option, environment or installation config) and the console (issue 12)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ajour_build.config import load_config
from ajour_build.console import devices
from delivery.cli import main
from delivery.protocol import Status, encode_status
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
        assert "app/dev1: Updating current=0.1 target=1.0 progress=0/2000" in given.output
        from_env = CliRunner().invoke(main, url, env={"AJOUR_DELIVERY_STATUS_TOKEN": STATUS_TOKEN})
        assert from_env.exit_code == 0 and "app/dev1: Updating" in from_env.output
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
