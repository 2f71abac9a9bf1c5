"""``ajour-build validate`` and ``ajour-build render``."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from ajour_build.cli import console, want_json
from ajour_build.config import InstallationConfig, load_config
from ajour_build.core.errors import AjourError, Problem, SpecError, problem_order
from ajour_build.core.fleet import Fleet, load_fleet
from ajour_build.core.installation import find_config
from ajour_build.output import write_files
from ajour_build.plan import Plan, PlannedBuild, plan_builds, repository_clashes
from ajour_build.render.dump import dump_all
from ajour_build.render.pipelinerun import Renderer
from ajour_build.render.reachability import cluster_warnings
from ajour_build.steps.clone import resolve_commit


def _config(explicit: Path | None, paths: list[Path], required: bool) -> InstallationConfig | None:
    found = find_config(explicit, paths, os.environ)
    if found is None:
        if required:
            raise AjourError(
                "no installation config found: pass --config ajour.yaml, set AJOUR_CONFIG,"
                " or put ajour.yaml at the top of the fleet directory"
            )
        return None
    return load_config(found)


def _load(
    paths: list[Path], config_path: Path | None, required: bool
) -> tuple[Fleet, InstallationConfig | None]:
    """The fleet and the installation config, their problems reported together."""
    problems: list[Problem] = []
    fleet: Fleet | None = None
    config: InstallationConfig | None = None
    try:
        fleet = load_fleet(paths)
    except SpecError as exc:
        problems.extend(exc.problems)
    try:
        config = _config(config_path, paths, required)
    except SpecError as exc:
        problems.extend(exc.problems)
    if problems or fleet is None:
        raise SpecError(sorted(problems, key=problem_order))
    return fleet, config


def _strict_problems(fleet: Fleet) -> list[Problem]:
    problems = [replace(w, message=f"(--strict) {w.message}") for w in fleet.warnings]
    if fleet.plaintext_devices:
        problems.append(
            Problem(
                f"(--strict) {fleet.plaintext_devices} device(s) keep plain-text passwords in"
                " spec.credentials (the warning above names them)",
                hint="store hashes instead: {bcrypt: …} or {sha512: …}, made by"
                " `ajour-delivery hash-password`",
            )
        )
    return problems


def _summary(fleet: Fleet, plan: Plan | None) -> dict[str, Any]:
    kinds: Counter[str] = Counter()
    for app in fleet.applications.values():
        for dev in [None, *fleet.devices_of(app.name)]:
            fw = fleet.effective_firmware(app.name, dev.name if dev else None)
            kinds[fw.kind if fw else "none"] += 1
    out: dict[str, Any] = {
        "valid": True,
        "applications": len(fleet.applications),
        "devices": len(fleet.devices),
        "devicesWithOwnFirmware": sum(1 for d in fleet.devices.values() if d.firmware),
        "firmwareSources": dict(sorted(kinds.items())),
        "warnings": [w.as_dict() for w in fleet.warnings],
    }
    if plan is not None:
        out["builds"] = len(plan.builds)
    return out


_PATHS = click.argument(
    "paths", nargs=-1, required=True, type=click.Path(path_type=Path, exists=False)
)
_CONFIG = click.option(
    "--config", "config_path", type=click.Path(path_type=Path), help="Installation config."
)


@click.command(
    epilog="\b\nExamples:\n  ajour-build validate examples/fleet\n"
    "  ajour-build validate --strict --json examples/fleet\n"
)
@_PATHS
@_CONFIG
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--strict", is_flag=True, help="Treat warnings as errors (exit 1).")
@click.pass_context
def validate(
    ctx: click.Context,
    paths: tuple[Path, ...],
    config_path: Path | None,
    as_json: bool,
    strict: bool,
) -> None:
    """Check fleet specs (files or directories) and report every problem with its place.

    Warnings go to stderr; --strict makes them errors.
    """
    want_json(ctx, as_json)
    fleet, config = _load(list(paths), config_path, required=False)
    plan = plan_builds(fleet, config).require_allowed() if config else None
    clashes = repository_clashes(plan, fleet) if plan is not None else []
    if clashes:
        raise SpecError(clashes)
    if strict and (fleet.warnings or fleet.plaintext_devices):
        raise SpecError(_strict_problems(fleet))
    summary = _summary(fleet, plan)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    err = console(stderr=True)
    for warning in fleet.warnings:
        err.print(
            f"[yellow]warning:[/] {escape(warning.render())}", highlight=False, soft_wrap=True
        )
    out = console()
    sources = ", ".join(f"{k} {v}" for k, v in summary["firmwareSources"].items())
    out.print(
        f"[green]valid:[/] {summary['applications']} applications, {summary['devices']} devices"
        f" ({summary['devicesWithOwnFirmware']} with their own firmware); firmware: {sources}"
    )
    if plan is not None:
        out.print(
            f"{len(plan.builds)} distinct builds, all allowed by {config.source if config else ''}"
            " (allowlist, publish namespaces, sources)"
        )
    else:
        out.print(
            "no installation config found: the allowlist, publish namespaces and local"
            " sources were not checked"
        )


@click.command(
    epilog="\b\nExamples:\n  ajour-build render examples/fleet -o /tmp/ajour-out\n"
    "  ajour-build render examples/fleet --stdout --app blinky\n"
    "  ajour-build render examples/fleet --stdout --triggers --pin\n"
)
@_PATHS
@_CONFIG
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Directory to write to.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Write the manifests to stdout.")
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable summary.")
@click.option("--app", "application", help="Only this application (and its devices).")
@click.option("--device", help="Only this device (its application follows from the device).")
@click.option(
    "--triggers",
    "with_triggers",
    is_flag=True,
    help="Also emit Tekton Triggers (EventListener and its RBAC, bindings, templates).",
)
@click.option(
    "--pin",
    is_flag=True,
    help="Resolve each rev to its commit now (git ls-remote): the run builds that commit and"
    " its name carries it, so re-applying after the branch moves starts a new run.",
)
@click.pass_context
def render(
    ctx: click.Context,
    paths: tuple[Path, ...],
    config_path: Path | None,
    output: Path | None,
    to_stdout: bool,
    as_json: bool,
    application: str | None,
    device: str | None,
    with_triggers: bool,
    pin: bool,
) -> None:
    """Render one Tekton v1 PipelineRun per distinct build of the fleet.

    Without --pin a run is named by its build spec alone: `kubectl apply` of an unchanged
    spec finds the run already there and starts nothing. Use --pin for one-off runs of the
    current commits, or --triggers (every push creates a run through generateName).
    """
    want_json(ctx, as_json)
    if output is None and not to_stdout:
        raise click.UsageError("give -o DIR or --stdout")
    fleet, config = _load(list(paths), config_path, required=True)
    assert config is not None
    plan = plan_builds(fleet, config, application, device).require_allowed()
    clashes = repository_clashes(plan, fleet)
    if clashes:
        raise SpecError(clashes)
    renderer = Renderer(config)
    commits = {b.key: _commit(b) for b in plan.builds} if pin else {}
    rendered: dict[str, Any] = {
        f"{b.name}.yaml": renderer.manifest(b, commits.get(b.key)) for b in plan.builds
    }
    warnings = cluster_warnings(plan.builds, config)
    trigger_docs: list[Any] = []
    if with_triggers:
        from ajour_build.render.triggers import render_triggers

        trigger_docs = render_triggers(plan.builds, config)
    files: list[Path] = []
    if output is not None:
        texts = {n: dump_all([m]) for n, m in rendered.items()}
        if trigger_docs:
            texts["ajour-triggers.yaml"] = dump_all(trigger_docs)
        files = write_files(output, texts)
    if to_stdout:
        click.echo(dump_all([*rendered.values(), *trigger_docs]), nl=False)
    report = {
        "builds": [
            {
                "name": rendered[f"{b.name}.yaml"]["metadata"]["name"],
                "commit": commits.get(b.key),
                "application": b.application,
                "specHash": b.key,
                "image": b.image,
                "builderImage": b.builder_image,
                "consumers": [str(c) for c in b.consumers],
                "file": str(output / f"{b.name}.yaml") if output else None,
            }
            for b in plan.builds
        ],
        "consumersWithoutBuild": plan.consumers_without_build,
        "config": config.source,
        "warnings": warnings,
    }
    if as_json:
        click.echo(json.dumps(report, indent=2), err=to_stdout)
        return
    err = console(stderr=True)
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    out = console(stderr=to_stdout)
    table = Table("PipelineRun", "application", "consumers", "image")
    for b in plan.builds:
        name = rendered[f"{b.name}.yaml"]["metadata"]["name"]
        table.add_row(name, b.application, str(len(b.consumers)), b.image)
    out.print(table)
    targets = [f"{len(files)} files in {output}"] if output else []
    targets += ["stdout"] if to_stdout else []
    out.print(f"{len(plan.builds)} PipelineRuns written to {' and '.join(targets)}")
    if not pin and plan.builds:
        err.print(
            "note: each PipelineRun is named by its build spec, so applying it again after a"
            " branch moves starts nothing; --pin names runs by commit, --triggers builds every"
            " push",
            highlight=False,
            soft_wrap=True,
        )


def _commit(build: PlannedBuild) -> str:
    """The commit the build's ``rev`` names on its remote now (a short sha stays as it is)."""
    git = build.build.source.git
    return resolve_commit(git.uri, git.rev) or git.rev
