"""``ajour-build build``: choosing what to build (--app, --device alone, --all), the live log
tail on a terminal, the version's precedence, and the shipped builder catalog.

Real git repositories, real host-mode builders (POSIX sh), the real CLI.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import git
import pytest
from click.testing import CliRunner

from ajour_build.cli import main
from tests.conftest import REPO
from tests.firmware import built_app, fake_builder

DEVICE = "kind: Device\nmetadata: {{name: {name}, application: {app}}}\n---\n"
BUILDER = """\
UNITS=3 PAUSE=0
mkdir -p out
i=0
while [ $i -lt "$UNITS" ]; do echo "compiling unit $i"; i=$((i + 1)); done
sleep "$PAUSE"
printf 'fw %s' "$AJOUR_FIRMWARE_VERSION" > "$AJOUR_ARTIFACT_PATH"
"""


def source_repo(path: Path, version_file: str | None = None) -> Path:
    repo = git.Repo.init(path, initial_branch="main")
    (path / "main.c").write_text("int main(void) { return 0; }\n")
    repo.index.add(["main.c"])
    if version_file is not None:
        (path / "VERSION").write_text(version_file)
        repo.index.add(["VERSION"])
    repo.index.commit("fw", author=git.Actor("x", "x@ajour.invalid"))
    repo.close()
    return path


@pytest.fixture
def fleet(tmp_path: Path) -> Path:
    """Apps a1, a2 (allowed), a3 (not allowed), bad (allowed, its builder fails); devices
    d1 of a1, and `shared`, in both a1 and a2."""
    repo = source_repo(tmp_path / "src")
    catalog = tmp_path / "catalog"
    fake_builder(catalog, "ok", BUILDER)
    fake_builder(catalog, "broken", 'echo "error: no such board"; exit 3\n')
    root = tmp_path / "fleet"
    root.mkdir()
    docs = [built_app(n, f"file://{repo}", builder="ok") + "---\n" for n in ("a1", "a2", "a3")]
    docs.append(built_app("bad", f"file://{repo}", builder="broken") + "---\n")
    docs += [DEVICE.format(name="d1", app="a1")]
    docs += [DEVICE.format(name="shared", app=a) for a in ("a1", "a2")]
    (root / "fleet.yaml").write_text("".join(docs))
    (root / "ajour.yaml").write_text(
        "allowed_applications: [a1, a2, bad]\nsources: {allow_local: true}\n"
    )
    return root


def args(fleet: Path, *more: str) -> list[str]:
    state = fleet.parent / "state"
    common = ["--runner", "host", "--builders", str(fleet.parent / "catalog")]
    return ["build", str(fleet), *common, "--state-dir", str(state), *more]


def test_device_alone_names_its_application(runner: CliRunner, fleet: Path) -> None:
    result = runner.invoke(main, args(fleet, "--device", "d1", "--version", "1.0", "--json"))
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["application"] == "a1" and record["consumers"] == ["a1/d1"]
    assert record["state"] == "succeeded"


def test_an_ambiguous_device_lists_the_candidates(runner: CliRunner, fleet: Path) -> None:
    result = runner.invoke(main, args(fleet, "--device", "shared"))
    assert result.exit_code == 1, result.output
    assert "device 'shared' is in 2 applications: a1, a2" in result.stderr
    assert "pass --app a1" in result.stderr
    missing = runner.invoke(main, args(fleet, "--device", "nope"))
    assert missing.exit_code == 1
    assert "device 'nope' is not in the fleet" in missing.stderr
    chosen = runner.invoke(main, args(fleet, "--device", "shared", "--app", "a2", "--json"))
    assert chosen.exit_code == 0, chosen.output
    assert json.loads(chosen.stdout)[0]["consumers"] == ["a2/shared"]


def test_all_builds_every_allowed_build_and_fails_if_one_did(
    runner: CliRunner, fleet: Path
) -> None:
    result = runner.invoke(main, args(fleet, "--all", "--version", "2.0", "--json"))
    assert result.exit_code == 1, result.output
    records = json.loads(result.stdout)
    states = {r["application"]: r["state"] for r in records}
    assert states == {"a1": "succeeded", "a2": "succeeded", "bad": "failed"}  # a3 refused
    assert "skipped:" in result.stderr and "'a3' is not on the build allowlist" in result.stderr
    assert "1 of 3 builds failed: ajour-bad-" in result.stderr
    table = runner.invoke(main, args(fleet, "--all", "--version", "2.0"))
    assert table.exit_code == 1
    for name in ("ajour-a1-", "ajour-a2-", "ajour-bad-"):
        assert name in table.stdout  # the summary table names each build
    assert "failed" in table.stdout and "cached" in table.stdout


def test_all_excludes_app_and_device(runner: CliRunner, fleet: Path) -> None:
    for extra in (["--app", "a1"], ["--device", "d1"]):
        result = runner.invoke(main, args(fleet, "--all", *extra))
        assert result.exit_code == 2 and "--all builds everything" in result.output
    none = runner.invoke(main, args(fleet))
    assert none.exit_code == 2 and "give --app, --device or --all" in none.output


def test_a_terminal_shows_the_builders_last_lines_json_does_not(fleet: Path) -> None:
    """On a terminal the spinner's step has the builder's log tail under it (stderr);
    with --json, stdout is the JSON alone and stderr has no log lines."""
    entry = fleet.parent / "catalog" / "ok" / "ajour-builder"
    entry.write_text(entry.read_text().replace("UNITS=3 PAUSE=0", "UNITS=40 PAUSE=0.6"))
    env = {"FORCE_COLOR": "1", "TERM": "xterm", "COLUMNS": "120"}
    result = CliRunner(env=env).invoke(main, args(fleet, "--app", "a1", "--no-cache"))
    assert result.exit_code == 0, result.output
    assert "│ compiling unit 39" in result.stderr  # the last lines, under the step
    assert "build" in result.stderr  # the step name next to the spinner
    assert any(frame in result.stderr for frame in "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")  # rich's "dots" spinner
    assert "compiling" not in result.stdout
    piped = CliRunner().invoke(main, args(fleet, "--app", "a1", "--no-cache"))  # not a TTY
    assert piped.exit_code == 0, piped.output
    assert "compiling" not in piped.stdout + piped.stderr and "a1" in piped.stdout
    assert ": build" in piped.stderr  # the step names only, on stderr
    quiet = CliRunner(env=env).invoke(main, args(fleet, "--app", "a1", "--no-cache", "--json"))
    assert quiet.exit_code == 0, quiet.output
    assert "compiling" not in quiet.stderr and "compiling" not in quiet.stdout
    assert json.loads(quiet.stdout)[0]["state"] == "succeeded"
    log = Path(json.loads(quiet.stdout)[0]["id"])  # the full log stays in the state dir
    stored = fleet.parent / "state" / "builds" / log / "build.log"
    assert stored.read_text().count("compiling unit") == 40


def test_no_color_keeps_the_live_display_and_a_dumb_terminal_gets_step_lines(
    fleet: Path,
) -> None:
    """NO_COLOR (https://no-color.org: colour only) drops every colour and style, and the
    live display stays; TERM=dumb, like a pipe, gets the step names a line each and not a
    single escape code (it used to get nothing at all while the build ran)."""
    entry = fleet.parent / "catalog" / "ok" / "ajour-builder"
    entry.write_text(entry.read_text().replace("UNITS=3 PAUSE=0", "UNITS=8 PAUSE=0.5"))
    build = args(fleet, "--app", "a1", "--no-cache")
    tty = {"FORCE_COLOR": "1", "COLUMNS": "120"}  # rich: stderr counts as a terminal
    plain = CliRunner(env={**tty, "TERM": "xterm", "NO_COLOR": "1"}).invoke(main, build)
    assert plain.exit_code == 0, plain.output
    assert "│ compiling unit 7" in plain.stderr and "\x1b[2K" in plain.stderr  # live, redrawn
    assert not re.search(r"\x1b\[[0-9;]*m", plain.stderr + plain.stdout), "a colour or style"
    for env in ({"TERM": "dumb"}, {"TERM": "dumb", "NO_COLOR": "1"}, {"TTY_INTERACTIVE": "0"}):
        dumb = CliRunner(env={**tty, "TERM": "xterm", **env}).invoke(main, build)
        assert dumb.exit_code == 0, dumb.output
        steps = [line.split(": ", 1)[1] for line in dumb.stderr.splitlines()]
        assert steps[:3] == ["resolve", "clone", "build"], (env, dumb.stderr)
        assert "compiling" not in dumb.stderr and "\x1b" not in dumb.stderr, env
    help_text = " ".join(CliRunner().invoke(main, ["build", "--help"]).output.split())
    assert "TERM=dumb or TTY_INTERACTIVE=0 prints the step names line by line" in help_text
    assert "NO_COLOR=1 drops colours and styles only" in help_text


def test_the_version_file_wins_over_the_commit_and_help_says_so(
    runner: CliRunner, tmp_path: Path
) -> None:
    repo = source_repo(tmp_path / "src", version_file="3.1.4\n")
    fake_builder(tmp_path / "catalog", "ok", BUILDER)
    root = tmp_path / "fleet"
    root.mkdir()
    (root / "fleet.yaml").write_text(built_app("a1", f"file://{repo}", builder="ok") + "---\n")
    (root / "ajour.yaml").write_text("allowed_applications: [a1]\nsources: {allow_local: true}\n")
    built = runner.invoke(main, args(root, "--app", "a1", "--json"))
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout)[0]["version"] == "3.1.4"
    given = runner.invoke(main, args(root, "--app", "a1", "--json", "--version", "9.9"))
    assert json.loads(given.stdout)[0]["version"] == "9.9"
    text = " ".join(runner.invoke(main, ["build", "--help"]).output.split())
    assert "Without it: the first line of a VERSION file" in text
    assert text.index("VERSION file") < text.index("else the commit sha")


# -- the builder catalog shipped with Ajour ------------------------------------------------


def test_builders_are_found_next_to_the_package_not_the_cwd(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AJOUR_")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-m", "ajour_build.cli", "builders", "list", "--json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert {b["name"] for b in json.loads(result.stdout)} >= {"arm-gcc", "rust", "zephyr"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        timeout=240,
        capture_output=True,
    )
    (built,) = out.glob("ajour-*.whl")
    return built


def test_the_wheel_holds_the_builder_catalog(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = {i.filename: i.external_attr >> 16 for i in zf.infolist()}
    for builder in ("arm-gcc", "rust", "zephyr"):
        for part in ("builder.yaml", "Containerfile"):
            assert f"ajour_build/builder_images/{builder}/{part}" in names
        assert names[f"ajour_build/builder_images/{builder}/ajour-builder"] & 0o111


def test_an_installed_wheel_finds_its_builders_from_any_cwd(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), wheel],
        check=True,
        timeout=120,
        capture_output=True,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("AJOUR_")}
    env["PYTHONPATH"] = str(site)  # the installed copy, not the checkout
    code = (
        "import ajour_build, json, sys; from ajour_build.cli import main;"
        "print(ajour_build.__file__, file=sys.stderr); main(['builders', 'list', '--json'])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert str(site) in result.stderr.splitlines()[0]
    builders = {b["name"] for b in json.loads(result.stdout)}
    assert builders == {"arm-gcc", "rust", "zephyr"}
    entry = site / "ajour_build" / "builder_images" / "arm-gcc" / "ajour-builder"
    assert os.access(entry, os.X_OK)  # host mode runs it as it is
