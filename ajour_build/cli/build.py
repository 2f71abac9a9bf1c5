"""``ajour-build build``: build firmware locally, in the builder image or on the host."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from ajour_build.builders.catalog import load_catalog
from ajour_build.cli import checked_version, console, want_json
from ajour_build.cli.builders import catalog_option
from ajour_build.cli.spec import _load
from ajour_build.config import InstallationConfig, SigningConfig
from ajour_build.core.casing import camel_keys
from ajour_build.core.errors import AjourError, BuildCancelled, BuildError, SourceError
from ajour_build.core.spec.rollout import RolloutPolicy
from ajour_build.plan import PlannedBuild, plan_builds
from ajour_build.publish.signing import Signer
from ajour_build.runner.engines import engine_for
from ajour_build.runner.job import Progress
from ajour_build.runner.local_runner import LocalRunner
from ajour_build.runner.state_dir import LocalBuild, StateDir, dump
from ajour_build.settings import LocalSettings

TAIL_LINES = 6  # builder lines shown under the spinner (a bounded deque: constant memory)


class _Display:
    """A spinner with the step and elapsed time, and under it the builder's last log lines,
    live on a terminal (stderr) that moves the cursor; only the step names otherwise (a
    pipe, ``TERM=dumb``, ``TTY_INTERACTIVE=0``), and nothing with --json. ``NO_COLOR``
    drops colours and styles, not the live display: https://no-color.org is about colour."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.lines: deque[str] = deque(maxlen=TAIL_LINES)
        self.spinner = Spinner("dots")
        self.step = "starting"
        self.name = ""
        self.started = time.monotonic()
        self.lock = threading.Lock()
        self.live: Live | None = None

    def __rich__(self) -> Group:
        with self.lock:
            head = Text.assemble(
                (f"{self.name} ", "bold"),
                (self.step, "cyan"),
                f"  {time.monotonic() - self.started:5.1f}s",
            )
            tail = [Text(f"  │ {line}"[:160], style="dim") for line in self.lines]
        self.spinner.update(text=head)
        return Group(self.spinner, *tail)

    def progress(self) -> Progress:
        return Progress(on_step=self.on_step, on_line=self.on_line)

    def begin(self, name: str) -> None:
        with self.lock:
            self.name, self.step, self.started = name, "starting", time.monotonic()
            self.lines.clear()

    def on_step(self, step: str) -> None:
        with self.lock:
            self.step = step
        if self.enabled and self.live is None:
            console(stderr=True).print(f"{self.name}: {step}")

    def on_line(self, line: str) -> None:
        with self.lock:
            self.lines.append(line)


def _summary(records: list[LocalBuild]) -> Table:
    table = Table("build", "state", "version", "sha256", "size", "time")
    for r in records:
        state = "cached" if r.cached else r.state
        art = r.artifact
        table.add_row(
            r.name,
            state,
            r.version or "-",
            art.sha256[:12] if art else "-",
            str(art.size) if art else "-",
            f"{r.duration:.2f}s",
        )
    return table


EPILOG = """\b
Examples:
  ajour-build build fleet/ --app blinky --version 1.2.0
  ajour-build build fleet/ --device blinky-canary --runner host --json
  ajour-build build fleet/ --all --publish

On a terminal a live spinner shows the step and the builder's last lines (stderr);
TERM=dumb or TTY_INTERACTIVE=0 prints the step names line by line instead, with no
cursor movement. NO_COLOR=1 drops colours and styles only.
"""


@click.command(epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path),
    help="Installation config (default: AJOUR_CONFIG, the fleet's ajour.yaml, ./ajour.yaml).",
)
@click.option("--app", "application", help="Build this application's firmware.")
@click.option(
    "--device",
    help="Build this device's firmware; its application comes from the device's"
    " metadata.application (give --app too if the name is in several applications).",
)
@click.option(
    "--all",
    "build_all",
    is_flag=True,
    help="Build every application and device with a build that the allowlist allows;"
    " a summary at the end, exit 1 if any failed.",
)
@click.option(
    "--runner",
    type=click.Choice(["container", "host"]),
    default="container",
    show_default=True,
    help="host runs the builder entrypoint without a container.",
)
@click.option("--no-cache", is_flag=True, help="Rebuild even if an identical build exists.")
@click.option(
    "--version",
    "version",
    callback=checked_version,
    help="Firmware version to stamp, an OCI tag. Without it: the first line of a VERSION file"
    " at the top of the source repository, if that is a version; else the commit sha.",
)
@catalog_option
@click.option(
    "--state-dir",
    type=click.Path(path_type=Path),
    help="Where builds, logs and the cache are kept (default: AJOUR_STATE_DIR,"
    " ~/.local/state/ajour).",
)
@click.option(
    "--image-key",
    type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path),
    help="A key the builder signs the image with (e.g. MCUboot's; --sign-key signs what is"
    " published; default: AJOUR_IMAGE_KEY_FILE, else the config's signing.image_key):"
    " copied into the workspace for the build only, its path in AJOUR_IMAGE_KEY_FILE;"
    " never logged.",
)
@click.option("--publish", "do_publish", is_flag=True, help="Publish each successful build.")
@click.option("--to", "publish_to", help="Publish target (default: the spec's registry image).")
@click.option("--notify", "notify_url", help="Tell delivery after publishing (http/mqtt URL).")
@click.option(
    "--sign-key",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Sign what --publish pushes with this PEM key (default: AJOUR_SIGN_KEY_FILE, else"
    " the config's signing.key).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the build records as JSON.")
@click.pass_context
def build(
    ctx: click.Context,
    paths: tuple[Path, ...],
    config_path: Path | None,
    application: str | None,
    device: str | None,
    build_all: bool,
    runner: str,
    no_cache: bool,
    version: str | None,
    builders_dir: Path | None,
    state_dir: Path | None,
    image_key: Path | None,
    do_publish: bool,
    publish_to: str | None,
    notify_url: str | None,
    sign_key: Path | None,
    as_json: bool,
) -> None:
    """Clone, build in the builder image, check and record the artifact; --publish it.

    Give --app, --device (its application follows from the device) or --all.
    """
    want_json(ctx, as_json)
    _check_selection(application, device, build_all, publish_to)
    settings = LocalSettings()
    if state_dir is not None:
        settings = settings.model_copy(update={"state_dir": state_dir})
    fleet, config = _load(list(paths), config_path, required=True)
    assert config is not None
    plan = plan_builds(fleet, config, application, device)
    signer = _signer(sign_key, config.signing) if do_publish else None  # a bad key: fail now
    key = image_key.read_bytes() if image_key else _image_key(config)
    if not build_all:
        plan.require_allowed()
    for refusal in plan.refused if build_all else ():
        console(stderr=True).print(f"[yellow]skipped:[/] {escape(refusal)}")
    if not plan.builds:
        what = application or device or "the fleet"
        raise AjourError(f"nothing to build: {what} has no allowed firmware.container.build")
    catalog_dir = builders_dir or settings.builders_dir
    catalog = load_catalog(catalog_dir)
    state = StateDir(settings.state_dir)
    display = _display_for(as_json)
    with engine_for(runner, settings) as engine:
        local = LocalRunner(
            state, engine, catalog, not no_cache, display.progress(), signing_key=key
        )
        records, failures = _run(local, plan.builds, version, display, keep_going=build_all)
    published = []
    if do_publish and (build_all or not failures):
        done = {r.name: r for r in records if r.artifact is not None}
        for planned in plan.builds:
            if planned.name in done:
                policy = fleet.applications[planned.application].rollout
                record = done[planned.name]
                out = _publish(planned, publish_to, record, state, notify_url, policy, signer)
                published.append(out)
    _report(records, as_json, state, published)
    if failures and not build_all:
        raise next(iter(failures.values()))
    if failures:
        names = ", ".join(failures)
        summary = f"{len(failures)} of {len(plan.builds)} builds failed: {names}"
        if as_json:  # stdout keeps one JSON document: the records above, which say which
            click.echo(f"error: {summary}", err=True)
            click.get_current_context().exit(1)
        raise AjourError(summary)


def _check_selection(
    application: str | None, device: str | None, build_all: bool, publish_to: str | None
) -> None:
    if build_all and (application or device):
        raise click.UsageError("--all builds everything: give it without --app and --device")
    if not (build_all or application or device):
        raise click.UsageError("give --app, --device or --all")
    if build_all and publish_to:
        raise click.UsageError("--to names one target: with --all each build publishes to its own")


def _run(
    local: LocalRunner,
    builds: tuple[PlannedBuild, ...],
    version: str | None,
    display: _Display,
    keep_going: bool,
) -> tuple[list[LocalBuild], dict[str, AjourError]]:
    """Run the builds in order: the records, and the failures by build name. The first
    failure stops the rest unless ``keep_going``."""
    records: list[LocalBuild] = []
    failures: dict[str, AjourError] = {}
    for planned in builds:
        display.begin(planned.name)
        try:
            with _live(display):
                records.append(local.run(planned, version))
        except BuildCancelled:
            raise
        except (BuildError, SourceError) as exc:
            failures[planned.name] = exc
            failed = [r for r in local.state.records() if r.name == planned.name]
            records.extend(failed[-1:])
            if not keep_going:
                break
    return records, failures


def _publish(
    planned: PlannedBuild,
    to: str | None,
    record: LocalBuild,
    state: StateDir,
    notify_url: str | None,
    policy: RolloutPolicy | None,
    signer: Signer | None,
) -> dict[str, object]:
    from ajour_build.publish.destination import release

    firmware, where = state.firmware_of(record), to or planned.publish_to
    app = planned.application
    out = release(firmware, where, os.environ, False, notify_url, app, policy, signer)
    done, warning = out.published, out.warning
    return {
        "build": record.id,
        "target": done.target,
        "digest": done.digest,
        "reference": done.reference,
        "version": done.version,
        "warning": warning,
    }


def _signer(sign_key: Path | None, config: SigningConfig) -> Signer | None:
    """``--sign-key`` > ``AJOUR_SIGN_KEY_FILE`` > the config's ``signing.key``; the builder
    id ``AJOUR_SIGN_BUILDER_ID`` > ``signing.builder_id`` > Ajour's."""
    from ajour_build.publish.signing import BUILDER_ENV, KEY_ENV, signer_from

    key = sign_key or os.environ.get(KEY_ENV) or config.key or None
    builder_id = os.environ.get(BUILDER_ENV) or config.builder_id or None  # as documented
    return signer_from(os.environ, key, builder_id)


def _image_key(config: InstallationConfig) -> bytes | None:
    """Without ``--image-key``: ``AJOUR_IMAGE_KEY_FILE``, else the config's
    ``signing.image_key`` (checked as the build service checks it)."""
    from ajour_build.service.keys import read_image_key

    found = read_image_key(config, os.environ)
    return found.content if found else None


def _display_for(as_json: bool) -> _Display:
    return _Display(enabled=not as_json)


@contextmanager
def _live(display: _Display) -> Iterator[None]:
    out = console(stderr=True)
    if not display.enabled or not out.is_interactive:  # rich: a terminal, TERM not dumb
        yield
        return
    with Live(display, console=out, refresh_per_second=8, transient=True) as live:
        display.live = live
        try:
            yield
        finally:
            display.live = None


def _report(
    records: list[LocalBuild], as_json: bool, state: StateDir, published: list[dict[str, object]]
) -> None:
    if as_json:
        out_json = [dump(r) for r in records]
        for entry in published:
            for item in out_json:
                if item["id"] == entry["build"]:
                    item["published"] = entry
        click.echo(json.dumps(camel_keys(out_json), indent=2))
        return
    out = console()
    out.print(_summary(records))
    for r in records:
        if r.cached:
            key = (r.cache_key or "")[:12]
            out.print(f"{r.name}: cached (same commit, builder, args and env; key {key})")
        if r.artifact:
            out.print(f"artifacts: {state.build_dir(r.id) / 'artifacts'}")
    for entry in published:
        out.print(f"published {entry['version']} to {entry['target']} ({entry['digest']})")
        if entry["warning"]:
            console(stderr=True).print(f"[yellow]warning:[/] {entry['warning']}")
