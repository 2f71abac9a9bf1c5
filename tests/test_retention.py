"""Retention of build records: real SQLite records, real log lines, real build directories."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from ajour_build.config import RetentionConfig
from ajour_build.lifecycle import Build, BuildState, now
from ajour_build.service.audit import AuditLog, Who
from ajour_build.service.records import Records
from ajour_build.service.retention import prune
from tests.postgres import Postgres

# name, application, age in days, end state (None: still running)
BUILDS = [
    ("a0", "a", 0, BuildState.SUCCEEDED),
    ("a1", "a", 1, BuildState.FAILED),
    ("a2", "a", 2, BuildState.SUCCEEDED),
    ("a35", "a", 35, BuildState.SUCCEEDED),
    ("a40", "a", 40, BuildState.CANCELLED),
    ("b45", "b", 45, BuildState.SUCCEEDED),
    ("b50", "b", 50, BuildState.SUCCEEDED),
    ("run60", "a", 60, None),
]


def fill(state: Path, url: str | None = None) -> tuple[Records, dict[str, str]]:
    """The builds above, each with two log lines and a build directory (``ref-<name>``)."""
    records = Records(url) if url else Records.sqlite(state / "service" / "builds.db")
    ids = {}
    for name, app, days, end in BUILDS:
        build = records.create(
            Build.queued(
                name=name,
                application=app,
                consumers=(app, f"{app}/dev"),
                git_url="file:///src.git",
                revision="main",
            )
        )
        records.transition(build.id, BuildState.RUNNING)
        if end is not None:
            records.transition(build.id, end)
        ref = f"ref-{name}"
        records.update(build.id, created=now() - timedelta(days=days), backend_ref=ref)
        records.append_log(build.id, [f"{name} line 1", f"{name} line 2"])
        (state / "builds" / ref).mkdir(parents=True)
        (state / "builds" / ref / "build.log").write_text(f"{name}\n")
        ids[name] = build.id
    return records, ids


def names(records: Records, ids: dict[str, str]) -> set[str]:
    return {name for name, i in ids.items() if records.get(i) is not None}


def test_age_and_per_application_keep(tmp_path: Path) -> None:
    records, ids = fill(tmp_path)
    policy = RetentionConfig(max_age_days=30, max_builds=0, keep_per_application=1)
    dry = prune(records, policy, tmp_path / "builds", dry_run=True)
    assert {n for n, i in ids.items() if i in dry.builds} == {"a35", "a40", "b50"}
    assert sorted(Path(d).name for d in dry.directories) == ["ref-a35", "ref-a40", "ref-b50"]
    assert len(names(records, ids)) == len(BUILDS)  # a dry run removes nothing
    assert all((tmp_path / "builds" / f"ref-{n}").is_dir() for n, *_ in BUILDS)
    done = prune(records, policy, tmp_path / "builds")
    assert set(done.builds) == set(dry.builds) and done.log_lines == 6 and done.kept == 5
    # b45 is old but b's newest; run60 is oldest of all but running
    assert names(records, ids) == {"a0", "a1", "a2", "b45", "run60"}
    assert records.logs(ids["a35"]) == [] and len(records.logs(ids["a0"])) == 2
    for name, *_ in BUILDS:
        assert (tmp_path / "builds" / f"ref-{name}").is_dir() == (name in names(records, ids))
    again = prune(records, policy, tmp_path / "builds")
    assert again.builds == () and again.directories == ()


def test_count_limit_keeps_running_builds_and_each_applications_newest(tmp_path: Path) -> None:
    records, ids = fill(tmp_path)
    policy = RetentionConfig(max_age_days=0, max_builds=3, keep_per_application=1)
    prune(records, policy, tmp_path / "builds")
    assert names(records, ids) == {"a0", "a1", "a2", "b45", "run60"}
    nothing = RetentionConfig(max_age_days=0, max_builds=0, keep_per_application=0)
    assert prune(records, nothing, tmp_path / "builds").builds == ()


def test_a_directory_another_build_still_names_stays(tmp_path: Path) -> None:
    records, ids = fill(tmp_path)
    records.update(ids["a0"], backend_ref="ref-a40")  # a cache hit reusing a directory
    policy = RetentionConfig(max_age_days=30, max_builds=0, keep_per_application=1)
    done = prune(records, policy, tmp_path / "builds")
    assert ids["a40"] in done.builds
    assert (tmp_path / "builds" / "ref-a40" / "build.log").is_file()
    assert not (tmp_path / "builds" / "ref-a35").exists()


@pytest.mark.parametrize("dry_run", [True, False])
def test_prune_command(tmp_path: Path, dry_run: bool) -> None:
    records, ids = fill(tmp_path / "state")
    records.close()
    config = tmp_path / "ajour.yaml"
    config.write_text("service: {retention: {max_age_days: 30, keep_per_application: 1}}\n")
    args = ["prune", "--config", str(config), "--state-dir", str(tmp_path / "state"), "--json"]
    result = CliRunner().invoke(main, args + (["--dry-run"] if dry_run else []))
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["dryRun"] is dry_run and out["logLines"] == 6 and out["kept"] == 5
    assert sorted(out["builds"]) == sorted(ids[n] for n in ("a35", "a40", "b50"))
    assert len(out["directories"]) == 3
    assert (tmp_path / "state" / "builds" / "ref-b50").exists() is dry_run
    reopened = Records.sqlite(tmp_path / "state" / "service" / "builds.db")
    assert (reopened.get(ids["b50"]) is not None) is dry_run
    reopened.close()


def test_prune_command_without_records_says_where_it_looked(tmp_path: Path) -> None:
    config = tmp_path / "ajour.yaml"
    config.write_text("service: {}\n")
    args = ["prune", "--config", str(config), "--state-dir", str(tmp_path / "none"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    error = json.loads(result.output)["error"]
    assert error.startswith(f"no build records at {tmp_path / 'none' / 'service' / 'builds.db'}")


def test_a_bad_interval_is_refused_precisely() -> None:
    with pytest.raises(ValueError, match="'1 day' is not a duration"):
        RetentionConfig(interval="1 day")
    assert RetentionConfig(interval="0").interval == "0s"


def test_retention_and_the_audit_log_on_postgresql(
    tmp_path: Path, postgres_server: Postgres
) -> None:
    name = postgres_server.database()
    url = postgres_server.dsn(name).replace("postgresql://", "postgresql+psycopg://")
    records, ids = fill(tmp_path, url)
    try:
        policy = RetentionConfig(max_age_days=30, max_builds=0, keep_per_application=1)
        done = prune(records, policy, tmp_path / "builds")
        assert {n for n, i in ids.items() if i in done.builds} == {"a35", "a40", "b50"}
        assert names(records, ids) == {"a0", "a1", "a2", "b45", "run60"}
        assert not (tmp_path / "builds" / "ref-b50").exists()
        audit = AuditLog(records.engine)
        who = Who("token:0123456789ab", "10.0.0.7", "api")
        audit.record(who, "trigger", "ok", application="a", target=ids["a0"])
        audit.record(who, "cancel", "refused", application="b", detail="x" * 5000)
        newest = audit.find()
        assert [(e.action, e.application) for e in newest] == [("cancel", "b"), ("trigger", "a")]
        assert newest[0].at.tzinfo is not None and len(newest[0].detail) == 2000
        assert [e.action for e in audit.find(action="trigger", application="a")] == ["trigger"]
    finally:
        records.close()
