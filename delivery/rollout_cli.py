"""``ajour-delivery rollout``: show and operate the staged rollouts of a running worker,
through its API (``GET``/``POST /v1/rollouts``, :mod:`delivery.rollout_api`).

``list`` and ``show`` send the status token (``--token``, ``AJOUR_DELIVERY_STATUS_TOKEN``,
the first of ``delivery.status_tokens``), the operations the operator token (``--token``,
``AJOUR_DELIVERY_OPERATOR_TOKEN``, ``delivery.operator_token``).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click
from pydantic import ValidationError

from ajour_build.core.rollout.report import (
    OPERATOR_TOKEN_ENV,
    RolloutAction,
    RolloutReport,
    read_rollouts,
)
from ajour_build.core.spec.fields import redact_uri
from ajour_build.core.wire import STATUS_TOKEN_ENV
from delivery.errors import DeliveryError

MAX_ERROR_CHARS = 500
COLUMNS = ("wave", "open", "approval", "devices", "pending", "downloading", "swapped",
           "confirmed", "failed", "reverted")  # fmt: skip


def _json_mode(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """With --json, the CLI's error handler prints errors as JSON too."""
    ctx.find_root().meta["ajour.json"] = value
    return value


def _options(operator: bool) -> Callable[[Any], Any]:
    env = OPERATOR_TOKEN_ENV if operator else STATUS_TOKEN_ENV
    where = "delivery.operator_token" if operator else "the first of delivery.status_tokens"
    what = "operator" if operator else "status"

    def add(command: Any) -> Any:
        for option in reversed(
            [
                click.option(
                    "--url",
                    default="http://127.0.0.1:8081",
                    show_default=True,
                    help="The worker's URL.",
                ),
                click.option(
                    "--token",
                    envvar=env,
                    help=f"The worker's {what} token (or {env}; default: {where} in the"
                    " installation config).",
                ),
                click.option(
                    "--config",
                    "config_path",
                    type=click.Path(path_type=Path),
                    help="Installation config (default: AJOUR_CONFIG, ./ajour.yaml).",
                ),
                click.option(
                    "--json",
                    "as_json",
                    is_flag=True,
                    callback=_json_mode,
                    help="Print the API's JSON (errors too).",
                ),
            ]
        ):
            command = option(command)
        return command

    return add


def _token(token: str | None, config_path: Path | None, operator: bool) -> str | None:
    if token:
        return token
    from delivery.worker_config import load_settings

    conf = load_settings(config_path, [], os.environ).delivery
    if operator:
        return conf.operator_token.get_secret_value() or None
    return conf.status_tokens[0].get_secret_value() if conf.status_tokens else None


def _call(url: str, path: str, token: str | None, operator: bool, body: Any = None) -> Any:
    """The JSON the worker answers to ``GET path`` (``POST`` with ``body``), or a
    DeliveryError with the worker's own words."""
    shown = redact_uri(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url.rstrip("/") + path, data, headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        text = exc.read(MAX_ERROR_CHARS * 4).decode(errors="replace").strip()[:MAX_ERROR_CHARS]
        if exc.code in (401, 403):
            what, env = ("operator", OPERATOR_TOKEN_ENV) if operator else (
                "status", STATUS_TOKEN_ENV)  # fmt: skip
            hint = (
                "the token was refused; check it against the worker's"
                if token
                else f"no {what} token was sent; pass --token or set {env} or"
            )
            config = "delivery.operator_token" if operator else "delivery.status_tokens"
            raise DeliveryError(
                f"{shown} answered HTTP {exc.code} ({text}): {hint} {config}"
            ) from None
        if exc.code in (400, 404, 409, 503):
            raise DeliveryError(text) from None
        raise DeliveryError(f"{shown} answered HTTP {exc.code}: {text}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(f"cannot reach the delivery worker at {shown}: {reason}") from None
    except ValueError:
        raise DeliveryError(f"{shown} did not answer JSON; is it a delivery worker?") from None


def _report(data: Any, url: str) -> RolloutReport:
    try:
        return RolloutReport.model_validate(data)
    except ValidationError as exc:
        raise DeliveryError(
            f"{redact_uri(url)} answered a rollout that does not parse"
            f" ({exc.error_count()} problems); is the worker newer than this command?"
        ) from None


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Columns of text left-aligned, of numbers right-aligned (the first row: the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    numeric = [all(r[i].replace("/", "").isdigit() for r in rows[1:]) for i in range(len(widths))]
    return [
        "  ".join(
            cell.rjust(w) if right else cell.ljust(w)
            for cell, w, right in zip(row, widths, numeric, strict=True)
        ).rstrip()
        for row in rows
    ]


def describe(report: RolloutReport) -> list[str]:
    """The report as lines: the rollout, its state and reason, a table of its waves."""
    r = report
    source = r.from_version or "(baseline)"
    lines = [f"{r.application}: rollout {r.seq} {source} -> {r.to_version}: {r.state}"]
    if r.reason:
        lines.append(f"reason: {r.reason}")
    if r.waves:
        rows: list[tuple[str, ...]] = [COLUMNS]
        for w in r.waves:
            o = w.outcomes
            failed = o.get("failed_download", 0) + o.get("timed_out", 0)
            rows.append((
                str(w.number), "yes" if w.open else "no", w.approval, str(w.devices),
                str(w.pending), str(w.downloading), str(o.get("swapped", 0)),
                str(o.get("confirmed", 0)), str(failed), str(o.get("reverted", 0)),
            ))  # fmt: skip
        lines += _table(rows)
        lines.append("(failed: failed download or timed out; reverted devices are counted apart)")
    if r.held_back:
        more = sum(w.outcomes.get("reverted", 0) + w.outcomes.get("failed_download", 0)
                   for w in r.waves) - len(r.held_back)  # fmt: skip
        tail = f" and {more} more" if more > 0 else ""
        lines.append(f"held back until retried: {', '.join(r.held_back)}{tail}")
    return lines


def _print(data: Any, url: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo("\n".join(describe(_report(data, url))))


@click.group(
    "rollout",
    epilog="\b\nExamples:\n  ajour-delivery rollout list\n"
    "  AJOUR_DELIVERY_OPERATOR_TOKEN=… ajour-delivery rollout resume blinky\n"
    "  ajour-delivery rollout start blinky 1.4.2 --supersede\n",
)
def rollout() -> None:
    """Show and operate the staged rollouts of a running worker (its /v1/rollouts API)."""


@rollout.command("list")
@_options(operator=False)
def list_(url: str, token: str | None, config_path: Path | None, as_json: bool) -> None:
    """The current rollout of every application with spec.rollout."""
    data = _call(url, "/v1/rollouts", _token(token, config_path, False), False)
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    try:
        reports = read_rollouts(data)
    except ValueError as exc:
        raise DeliveryError(f"{redact_uri(url)}: {exc}") from None
    if not reports:
        click.echo("no rollouts: no application with spec.rollout has one yet", err=True)
    rows: list[tuple[str, ...]] = [
        ("application", "rollout", "from", "to", "state", "open waves", "reason")
    ]
    for r in reports:
        rows.append((
            r.application, str(r.seq), r.from_version or "-", r.to_version, r.state,
            f"{r.open_waves}/{len(r.waves)}", r.reason,
        ))  # fmt: skip
    if reports:
        click.echo("\n".join(_table(rows)))


@rollout.command()
@click.argument("application")
@click.option("--history", is_flag=True, help="Every rollout of the application, newest first.")
@_options(operator=False)
def show(
    application: str, history: bool, url: str, token: str | None, config_path: Path | None,
    as_json: bool,
) -> None:  # fmt: skip
    """One application's current rollout: state, reason, and per wave its devices."""
    path = f"/v1/rollouts/{quote(application, safe='')}" + ("?history=1" if history else "")
    data = _call(url, path, _token(token, config_path, False), False)
    if not history:
        _print(data, url, as_json)
    elif as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo("\n\n".join("\n".join(describe(_report(d, url))) for d in data))


def _operation(action: RolloutAction, doc: str) -> None:
    def run(
        application: str, url: str, token: str | None, config_path: Path | None, as_json: bool,
        body: dict[str, Any],
    ) -> None:  # fmt: skip
        path = f"/v1/rollouts/{quote(application, safe='')}/{action.value}"
        data = _call(url, path, _token(token, config_path, True), True, body)
        _print(data, url, as_json)

    @click.option("--reason", help="Why (kept as the rollout's reason).")
    def pause(application: str, reason: str | None, **kw: Any) -> None:
        run(application, body={"reason": reason} if reason else {}, **kw)

    @click.argument("device")
    def retry(application: str, device: str, **kw: Any) -> None:
        run(application, body={"device": device}, **kw)

    @click.argument("version")
    @click.option(
        "--supersede", is_flag=True, help="Replace the rollout that is running or paused."
    )
    def start(application: str, version: str, supersede: bool, **kw: Any) -> None:
        body: dict[str, Any] = {"version": version}
        if supersede:
            body["supersede"] = True
        run(application, body=body, **kw)

    def other(application: str, **kw: Any) -> None:
        run(application, body={}, **kw)

    commands: dict[str, Callable[..., None]] = {"pause": pause, "retry": retry, "start": start}
    command = commands.get(action.value, other)
    command.__doc__ = doc
    decorated = click.argument("application")(_options(operator=True)(command))
    rollout.command(action.value)(decorated)


for _action, _doc in (
    (RolloutAction.PAUSE, "Pause: no new wave opens; devices of open waves go on."),
    (RolloutAction.RESUME, "Resume a paused rollout; the criteria count afresh from now."),
    (RolloutAction.ABORT, "Abort: devices not updated stay on from_version."),
    (RolloutAction.ROLLBACK, "Roll back: every device of the cohort gets from_version."),
    (RolloutAction.PROMOTE, "Open the next wave now (past the last one: complete)."),
    (RolloutAction.RETRY, "Clear DEVICE's outcome: it is offered to_version again."),
    (
        RolloutAction.START,
        "Start a rollout to VERSION (published, by its version tag) from the version the last"
        " rollout finished on: re-roll a rolled-back version, or roll out an older one.",
    ),
):
    _operation(_action, _doc)
