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
from rich.table import Table
from rich.text import Text

from ajour_build.builders.catalog import load_catalog
from ajour_build.cli import checked_version, console, want_json
from ajour_build.cli.spec import _load
from ajour_build.core.casing import camel_keys
from ajour_build.core.errors import AjourError, BuildCancelled, BuildError, SourceError
from ajour_build.plan import plan_builds
from ajour_build.runner.engines import engine_for
from ajour_build.runner.job import Progress
from ajour_build.runner.local_runner import LocalRunner
from ajour_build.runner.state_dir import LocalBuild, StateDir, dump
from ajour_build.settings import LocalSettings


class _Display:
    """Steps, elapsed time and the last log lines, live on a terminal; plain otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.lines: deque[str] = deque(maxlen=6)
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
        return Group(head, *tail)

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


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--config", "config_path", type=click.Path(path_type=Path))
@click.option("--app", "application", help="Build this application's firmware.")
@click.option("--device", help="Build this device's firmware (needs --app).")
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
    help="Firmware version to stamp, an OCI tag (default: the VERSION file, else the commit).",
)
@click.option("--builders", "builders_dir", type=click.Path(path_type=Path))
@click.option("--state-dir", type=click.Path(path_type=Path))
@click.option("--publish", "do_publish", is_flag=True, help="Publish each successful build.")
@click.option("--to", "publish_to", help="Publish target (default: the spec's registry image).")
@click.option("--notify", "notify_url", help="Tell delivery after publishing (http/mqtt URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the build records as JSON.")
@click.pass_context
def build(
    ctx: click.Context,
    paths: tuple[Path, ...],
    config_path: Path | None,
    application: str | None,
    device: str | None,
    runner: str,
    no_cache: bool,
    version: str | None,
    builders_dir: Path | None,
    state_dir: Path | None,
    do_publish: bool,
    publish_to: str | None,
    notify_url: str | None,
    as_json: bool,
) -> None:
    """Clone, build in the builder image, check and record the artifact; --publish it."""
    want_json(ctx, as_json)
    if application is None:
        raise click.UsageError("give --app (and optionally --device)")
    settings = LocalSettings()
    if state_dir is not None:
        settings = settings.model_copy(update={"state_dir": state_dir})
    fleet, config = _load(list(paths), config_path, required=True)
    assert config is not None
    plan = plan_builds(fleet, config, application, device).require_allowed()
    if not plan.builds:
        raise AjourError(f"nothing to build: {application} has no firmware.container.build")
    catalog_dir = builders_dir or settings.builders_dir
    catalog = load_catalog(catalog_dir) if catalog_dir.is_dir() else []
    state = StateDir(settings.state_dir)
    display = _display_for(as_json)
    records: list[LocalBuild] = []
    failure: AjourError | None = None
    with engine_for(runner, settings) as engine:
        local = LocalRunner(state, engine, catalog, not no_cache, display.progress())
        for planned in plan.builds:
            display.begin(planned.name)
            try:
                with _live(display):
                    records.append(local.run(planned, version))
            except BuildCancelled:
                raise
            except (BuildError, SourceError) as exc:
                failure = exc
                failed = [r for r in state.records() if r.name == planned.name]
                records.extend(failed[-1:])
                break
    published = []
    if do_publish and failure is None:
        for planned, record in zip(plan.builds, records, strict=True):
            published.append(_publish(planned.publish_to, publish_to, record, state, notify_url))
    _report(records, as_json, state, published)
    if failure is not None:
        raise failure


def _publish(
    default_to: str, to: str | None, record: LocalBuild, state: StateDir, notify_url: str | None
) -> dict[str, object]:
    from ajour_build.publish.destination import release

    out = release(state.firmware_of(record), to or default_to, os.environ, False, notify_url)
    done, warning = out.published, out.warning
    return {
        "build": record.id,
        "target": done.target,
        "digest": done.digest,
        "reference": done.reference,
        "version": done.version,
        "warning": warning,
    }


def _display_for(as_json: bool) -> _Display:
    return _Display(enabled=not as_json)


@contextmanager
def _live(display: _Display) -> Iterator[None]:
    out = console(stderr=True)
    if not display.enabled or not out.is_terminal:
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
