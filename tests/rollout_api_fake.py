"""A FAKE of the delivery worker's rollout API, for the console's tests. It is not the worker.

It speaks the JSON of ``ajour_build.core.rollout.report`` on loopback:

* ``GET /v1/rollouts`` (each application's newest rollout), ``GET /v1/rollouts/<app>``
  (``?history=1``: all of them, newest first): bearer the status token;
* ``POST /v1/rollouts/<app>/<action>`` with a ``RolloutRequest`` body: bearer the operator
  token. pause, resume, abort, rollback and promote go through the real operations of
  ``core.rollout.model``, so a state that forbids one is answered 409 with the model's own
  ``RolloutError`` text; retry drops the device from the held-back list (and one reverted
  count); start goes through the store's own rule (``started_rollout``) to a version in
  ``published`` (the versions of the rollouts added, and what a test adds), else 404 like
  the worker; like the worker, a ``device`` on anything but retry, a ``reason`` on anything
  but pause, or a ``version`` or ``supersede`` on anything but start, is a 400;
* ``GET /v1/status[/<app>]``: the device rows a test sets in ``devices``.

What it does not do: count outcomes. A wave's counts and the held-back devices are what the
test sets (``waves``, ``held_back``); the fake only opens waves the way the model says.
Every request is recorded in ``seen`` with its decoded JSON body. ``rollout_api=False``
makes it an older worker, whose ``/v1/rollouts`` paths are 404.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from ajour_build.core.rollout import model
from ajour_build.core.rollout.report import RolloutReport, RolloutRequest, WaveReport, report_of
from ajour_build.core.spec.rollout import RolloutPolicy
from delivery.rollout_store import started_rollout
from tests.loopback_http import running


@dataclass(frozen=True)
class Seen:
    method: str
    path: str  # with the query
    authorization: str
    body: Any  # the JSON body of a POST, else None


def policy(waves: int) -> RolloutPolicy:
    """A policy of ``waves`` percent waves (the last at 100 %)."""
    percents = [100 * (i + 1) // waves for i in range(waves)]
    return RolloutPolicy.model_validate({"waves": [{"percent": p} for p in percents]})


@dataclass
class RolloutApiFake:
    status_token: str = ""
    operator_token: str = ""
    rollout_api: bool = True
    url: str = ""
    devices: list[dict[str, Any]] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    # (app, seq) -> per wave {"devices": n, "downloading": n, "outcomes": {...}}
    waves: dict[tuple[str, int], list[dict[str, Any]]] = field(default_factory=dict)
    held_back: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    published: dict[str, set[str]] = field(default_factory=dict)  # versions start may take
    _rollouts: dict[str, list[model.Rollout]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what the test sets ----------------------------------------------------------------
    def add(
        self,
        application: str,
        seq: int,
        from_version: str,
        to_version: str,
        waves: list[dict[str, Any]],
        *,
        state: model.State = model.State.RUNNING,
        reason: str = "",
        open_waves: int = 1,
        held_back: list[str] | None = None,
        created: float | None = None,
    ) -> None:
        """Rollout ``seq`` of ``application`` (the newest one added is the current one)."""
        now = created if created is not None else time.time() - 3600
        started = model.start(application, seq, from_version, to_version, policy(len(waves)), now)
        opened = tuple(now + 600 * i for i in range(open_waves))
        rollout = started.changed(
            state=state, reason=reason, wave=open_waves - 1, wave_started=opened
        )
        with self._lock:
            self._rollouts.setdefault(application, []).append(rollout)
            self.published.setdefault(application, set()).update({from_version, to_version} - {""})
            self.waves[(application, seq)] = waves
            self.held_back[(application, seq)] = list(held_back or [])

    def set_wave(self, application: str, number: int, **counts: Any) -> None:
        """Change wave ``number`` (1-based) of the current rollout, as devices report."""
        with self._lock:
            seq = self._rollouts[application][-1].seq
            self.waves[(application, seq)][number - 1].update(counts)

    def current(self, application: str) -> RolloutReport:
        with self._lock:
            return self._report(self._rollouts[application][-1])

    def posts(self) -> list[Seen]:
        return [s for s in self.seen if s.method == "POST"]

    # -- the API -----------------------------------------------------------------------------
    def _report(self, rollout: model.Rollout) -> RolloutReport:
        key = (rollout.application, rollout.seq)
        waves = [
            WaveReport(
                number=i + 1,
                open=i <= rollout.wave,
                opened_at=rollout.wave_started[i] if i < len(rollout.wave_started) else None,
                devices=w.get("devices", 0),
                downloading=w.get("downloading", 0),
                outcomes=dict(w.get("outcomes", {})),
                approval=w.get("approval", "auto"),
            )
            for i, w in enumerate(self.waves.get(key, []))
        ]
        return report_of(rollout, waves, list(self.held_back.get(key, [])))

    def _get(self, path: str, query: dict[str, list[str]]) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if parts[:2] == ["v1", "status"]:
            rows = [d for d in self.devices if len(parts) < 3 or d["application"] == parts[2]]
            return 200, rows
        if parts[:2] != ["v1", "rollouts"] or not self.rollout_api or len(parts) > 3:
            return 404, "not found"
        with self._lock:
            if len(parts) == 2:
                return 200, [self._report(r[-1]).as_json() for r in self._rollouts.values()]
            found = self._rollouts.get(parts[2])
            if not found:
                return 404, f"application {parts[2]!r} has no rollout"
            if query.get("history") == ["1"]:
                return 200, [self._report(r).as_json() for r in reversed(found)]
            return 200, self._report(found[-1]).as_json()

    def _post(self, path: str, body: Any) -> tuple[int, Any]:
        parts = [unquote(p) for p in path.strip("/").split("/")]
        if not self.rollout_api or len(parts) != 4 or parts[:2] != ["v1", "rollouts"]:
            return 404, "not found"
        app, action = parts[2], parts[3]
        try:
            request = RolloutRequest.model_validate(body if body is not None else {})
        except ValueError as exc:
            return 400, f"not a rollout request: {exc}"
        if request.device is not None and action != "retry":
            return 400, f'"device" is only for retry, not for {action}'
        if request.reason is not None and action != "pause":
            return 400, f'"reason" is only for pause, not for {action}'
        if action != "start" and (request.version is not None or request.supersede is not None):
            return 400, f'"version" and "supersede" are only for start, not for {action}'
        if action == "start":
            return self._start(app, request)
        with self._lock:
            found = self._rollouts.get(app)
            if not found:
                return 409, f"application {app!r} has no rollout"
            rollout, now = found[-1], time.time()
            operations: dict[str, Callable[[], model.Rollout]] = {
                "pause": lambda: model.pause(rollout, request.reason or "paused by an operator"),
                "resume": lambda: model.resume(rollout, now),
                "abort": lambda: model.abort(rollout),
                "rollback": lambda: model.rollback(rollout),
                "promote": lambda: model.promote(rollout, rollout.parsed_policy(), now),
                "retry": lambda: self._retry(rollout, request.device),
            }
            if action not in operations:
                return 404, f"no operation {action!r}"
            try:
                changed = operations[action]()
            except model.RolloutError as exc:
                return 409, str(exc)
            found[-1] = changed
            return 200, self._report(changed).as_json()

    def _start(self, app: str, request: RolloutRequest) -> tuple[int, Any]:
        version = request.version
        if version is None:
            return 400, 'start needs the version: send {"version": "<a published version>"}'
        if version not in self.published.get(app, set()):
            return 404, f"version {version!r} of {app!r} is not published (the fake's published)"
        with self._lock:
            found = self._rollouts.get(app, [])
            last = found[-1] if found else None
            rules = last.parsed_policy() if last is not None else policy(1)
            try:
                begun = started_rollout(
                    found, app, version, rules, time.time(), bool(request.supersede)
                )
            except model.RolloutError as exc:
                return 409, str(exc)
            if begun.superseded is not None:
                found[-1] = begun.superseded
            new = begun.rollout
            found.append(new)
            shape = self.waves.get((app, last.seq), []) if last is not None else []
            self.waves[(app, new.seq)] = [
                {"devices": w.get("devices", 0), "approval": w.get("approval", "auto")}
                for w in shape
            ]
            self.held_back[(app, new.seq)] = []
            return 200, self._report(new).as_json()

    def _retry(self, rollout: model.Rollout, device: str | None) -> model.Rollout:
        if device is None:
            raise model.RolloutError("retry needs a device")
        key = (rollout.application, rollout.seq)
        held = self.held_back[key]
        if device in held:  # its outcome is cleared: one reverted device fewer
            held.remove(device)
            for wave in self.waves[key]:
                outcomes = wave.get("outcomes", {})
                if outcomes.get("reverted", 0) > 0:
                    outcomes["reverted"] -= 1
                    break
        return rollout

    def handle(self, method: str, target: str, authorization: str, body: Any) -> tuple[int, Any]:
        self.seen.append(Seen(method, target, authorization, body))
        split = urlsplit(target)
        token = self.operator_token if method == "POST" else self.status_token
        if token and authorization != f"Bearer {token}":
            return 401, f"{'operator' if method == 'POST' else 'status'} token required"
        if method == "POST":
            return self._post(split.path, body)
        return self._get(split.path, parse_qs(split.query))


@contextmanager
def rollout_api_fake(
    status_token: str = "", operator_token: str = "", rollout_api: bool = True
) -> Iterator[RolloutApiFake]:
    """The fake on a free loopback port (``fake.url``) while the block runs."""
    fake = RolloutApiFake(status_token, operator_token, rollout_api)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw.decode("utf-8", "replace")
            auth = self.headers.get("Authorization", "")
            status, answer = fake.handle(self.command, self.path, auth, body)
            if isinstance(answer, str):
                data, kind = answer.encode(), "text/plain; charset=utf-8"
            else:
                data, kind = json.dumps(answer).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with running(server) as port:
        fake.url = f"http://127.0.0.1:{port}"
        yield fake
