"""The Tekton backend's watch: PipelineRun conditions become build states, results and logs.

One thread lists the namespace's Ajour PipelineRuns, then watches them from the list's
``resourceVersion``; it resumes from the last version it saw after a timeout or a broken
connection (with backoff) and lists again when the API answers ``410 Gone``. Events map
to builds by the ``ajour.dev/build-id`` label; objects without it are ignored. One bad
object is skipped with a warning, never the end of the thread.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import urllib3
from kubernetes import client
from kubernetes import watch as kube_watch

from ajour_build.lifecycle import ACTIVE, BuildState
from ajour_build.service.records import Records, RecordsError

log = logging.getLogger(__name__)
GROUP = "tekton.dev"
VERSION = "v1"
PIPELINERUNS = "pipelineruns"
TASKRUNS = "taskruns"
BUILD_ID_LABEL = "ajour.dev/build-id"
# what the renderer puts on every PipelineRun, plus the build id the backend adds
SELECTOR = f"app.kubernetes.io/managed-by=ajour-build,{BUILD_ID_LABEL}"
CANCELLED = frozenset(
    {"Cancelled", "CancelledRunFinally", "StoppedRunFinally", "PipelineRunCancelled"}
)
PENDING = frozenset({"PipelineRunPending", "Pending"})
# PipelineRun results, then TaskRun results of the ajour-firmware tasks, to record columns
RUN_RESULTS = {"IMAGE_DIGEST": "digest", "IMAGE_URL": "reference", "CHAINS-GIT_COMMIT": "commit"}
TASK_RESULTS = {"IMAGE_DIGEST": "digest", "IMAGE_URL": "reference", "commit": "commit"}
LOG_LIMIT_BYTES = 2 * 1024 * 1024  # per step container
_Watch: Any = kube_watch.Watch  # the library's watch is untyped
Child = tuple[str, dict[str, Any] | None, str]  # pipeline task, its TaskRun or None, why not


@dataclass(frozen=True)
class Outcome:
    state: BuildState
    failure: str | None = None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def build_id_of(obj: Any) -> str | None:
    value = _dict(_dict(_dict(obj).get("metadata")).get("labels")).get(BUILD_ID_LABEL)
    return value if isinstance(value, str) and value else None


def outcome(obj: Any) -> Outcome | None:
    """The build state a PipelineRun's ``Succeeded`` condition means; None: no condition yet."""
    status = _dict(_dict(obj).get("status"))
    found = [c for c in _list(status.get("conditions")) if _dict(c).get("type") == "Succeeded"]
    if not found:
        return None
    cond = found[-1]
    value, reason = cond.get("status"), str(cond.get("reason") or "")
    message = str(cond.get("message") or "").strip()
    if value == "Unknown":
        return Outcome(BuildState.QUEUED) if reason in PENDING else Outcome(BuildState.RUNNING)
    if value == "True":
        return Outcome(BuildState.SUCCEEDED)
    if value != "False":
        return None
    if reason in CANCELLED:
        return Outcome(
            BuildState.CANCELLED, f"cancelled ({reason}){': ' + message if message else ''}"
        )
    if reason == "PipelineRunTimeout":
        limit = _dict(_dict(_dict(obj).get("spec")).get("timeouts")).get("pipeline")
        after = f" after {limit}" if isinstance(limit, str) and limit else ""
        return Outcome(BuildState.FAILED, f"timed out{after}: {message or 'PipelineRunTimeout'}")
    return Outcome(
        BuildState.FAILED, f"{reason or 'Failed'}: {message or 'the PipelineRun failed'}"
    )


def results(items: Any, names: Mapping[str, str]) -> dict[str, str]:
    """Record columns from a ``status.results`` list (string values only)."""
    found: dict[str, str] = {}
    for item in _list(items):
        name, value = _dict(item).get("name"), _dict(item).get("value")
        if isinstance(name, str) and name in names and isinstance(value, str) and value.strip():
            found[names[name]] = value.strip()
    return found


class Watcher:
    """Lists and watches PipelineRuns in one namespace and keeps the records in step."""

    def __init__(
        self,
        records: Records,
        api: client.ApiClient,
        namespace: str,
        *,
        watch_timeout: float = 2.0,
        request_timeout: float = 10.0,
        max_backoff: float = 30.0,
    ) -> None:
        self.records = records
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)
        self.namespace = namespace
        self.watch_timeout = watch_timeout
        self.request_timeout = request_timeout
        self.max_backoff = max_backoff
        self.stopping = threading.Event()
        self._watch: Any = None

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        version: str | None = None
        backoff = min(1.0, self.max_backoff)
        while not self.stopping.is_set():
            listed = 0.0  # when this round listed; a 410 right after it must not spin
            try:
                if version is None:
                    version, listed = self.list_all(), time.monotonic()
                version = self.watch_from(version)
                backoff = min(1.0, self.max_backoff)
            except client.ApiException as exc:
                if self.stopping.is_set():
                    break
                if exc.status == 410 and time.monotonic() - listed > 1.0:
                    log.info(
                        "PipelineRun watch in %s expired (410 Gone): list again", self.namespace
                    )
                    version = None
                    continue
                if exc.status == 410:  # gone at once after a list: do not hammer the server
                    version = None
                self._pause(f"HTTP {exc.status} {exc.reason or ''}".strip(), backoff)
                backoff = min(backoff * 2, self.max_backoff)
            except Exception as exc:  # connection loss, records down: retry, never die
                if self.stopping.is_set():
                    break
                if isinstance(exc, RecordsError):
                    version = None  # an event was not recorded: list again to see it again
                self._pause(describe(exc), backoff)
                backoff = min(backoff * 2, self.max_backoff)

    def _pause(self, why: str, seconds: float) -> None:
        log.warning(
            "watching PipelineRuns in namespace %s failed (%s); retrying in %.1f s",
            self.namespace,
            why,
            seconds,
        )
        self.stopping.wait(seconds)

    def stop(self) -> None:
        self.stopping.set()
        current = self._watch
        if current is not None:
            current.stop()  # shuts the socket down: a blocked read returns at once

    def list_all(self) -> str | None:
        listed = self.custom.list_namespaced_custom_object(
            GROUP,
            VERSION,
            self.namespace,
            PIPELINERUNS,
            label_selector=SELECTOR,
            _request_timeout=self.request_timeout,
        )
        for obj in _list(_dict(listed).get("items")):
            self.handle(obj)
        version = _dict(_dict(listed).get("metadata")).get("resourceVersion")
        return version if isinstance(version, str) and version else None

    def watch_from(self, version: str | None) -> str | None:
        """Stream events until the server ends the watch; the last resourceVersion seen."""
        stream = _Watch()
        self._watch = stream
        kwargs: dict[str, Any] = {
            "label_selector": SELECTOR,
            "timeout_seconds": max(1, math.ceil(self.watch_timeout)),
            "allow_watch_bookmarks": True,
            # a server that ignores timeoutSeconds still ends the watch by the read timeout
            "_request_timeout": (self.request_timeout, self.watch_timeout + 5),
        }
        if version:
            kwargs["resource_version"] = version
        try:
            events = stream.stream(
                self.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                self.namespace,
                PIPELINERUNS,
                **kwargs,
            )
            for event in events:
                if self.stopping.is_set():
                    break
                obj = _dict(_dict(event).get("raw_object"))
                seen = _dict(obj.get("metadata")).get("resourceVersion")
                if isinstance(seen, str) and seen:
                    version = seen
                kind = _dict(event).get("type")
                if kind in ("ADDED", "MODIFIED"):
                    self.handle(obj)
                elif kind == "DELETED":
                    self.handle(obj, deleted=True)
        except urllib3.exceptions.ReadTimeoutError:
            pass  # a quiet watch on a server that ignores timeoutSeconds: resume
        finally:
            self._watch = None
        return version

    # -- one object ----------------------------------------------------------------------
    def handle(self, obj: Any, deleted: bool = False) -> None:
        """Apply one PipelineRun to its build; a bad object is skipped with a warning."""
        build_id = build_id_of(obj)
        if build_id is None:
            return
        try:
            self._apply(build_id, obj, deleted)
        except RecordsError:
            raise
        except Exception as exc:
            name = _dict(_dict(obj).get("metadata")).get("name")
            log.warning("skipping PipelineRun %r of build %s: %s", name, build_id, describe(exc))

    def _apply(self, build_id: str, obj: dict[str, Any], deleted: bool) -> None:
        record = self.records.get(build_id)
        if record is None or record.state not in ACTIVE:
            return
        found = outcome(obj)
        if found is None or found.state in ACTIVE:
            if deleted:
                name = _dict(obj.get("metadata")).get("name")
                failure = f"the PipelineRun {name} was deleted before it finished"
                self.records.transition(build_id, BuildState.FAILED, failure=failure)
            elif (
                found is not None
                and found.state == BuildState.RUNNING
                and record.state == BuildState.QUEUED
            ):
                self.records.transition(build_id, BuildState.RUNNING)
            return
        values: dict[str, Any] = {}
        if found.failure:
            values["failure"] = found.failure
        taskruns = self._taskruns(obj)
        if found.state == BuildState.SUCCEEDED:
            values.update(self._results(obj, taskruns, record.version is None))
        self.records.append_log(build_id, self._logs(taskruns))
        self.records.transition(build_id, found.state, **values)

    def _taskruns(self, obj: dict[str, Any]) -> list[Child]:
        """(pipeline task, TaskRun or None, why not) for each child TaskRun."""
        found: list[Child] = []
        for ref in _list(_dict(obj.get("status")).get("childReferences")):
            ref = _dict(ref)
            name = ref.get("name")
            if ref.get("kind", "TaskRun") != "TaskRun" or not isinstance(name, str):
                continue
            task = str(ref.get("pipelineTaskName") or name)
            try:
                taskrun = self.custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    TASKRUNS,
                    name,
                    _request_timeout=self.request_timeout,
                )
                found.append((task, _dict(taskrun), ""))
            except Exception as exc:
                found.append((task, None, f"TaskRun {name}: {describe(exc)}"))
        return found

    def _results(self, obj: dict[str, Any], taskruns: list[Child], version: bool) -> dict[str, str]:
        """Record columns from the PipelineRun's results, else from its TaskRuns' results."""
        values = results(_dict(obj.get("status")).get("results"), RUN_RESULTS)
        names = {**TASK_RESULTS, "version": "version"} if version else TASK_RESULTS
        for _task, taskrun, _why in taskruns:
            found = results(_dict(_dict(taskrun).get("status")).get("results"), names)
            for key, value in found.items():
                values.setdefault(key, value)
        return values

    def _logs(self, taskruns: list[Child]) -> list[str]:
        lines: list[str] = []
        for task, taskrun, why in taskruns:
            if taskrun is None:
                lines.append(f"[{task}] (log unavailable: {why})")
                continue
            status = _dict(taskrun.get("status"))
            pod = status.get("podName")
            steps = [_dict(s) for s in _list(status.get("steps"))]
            if not isinstance(pod, str) or not pod or not steps:
                lines.append(f"[{task}] (log unavailable: the TaskRun has no pod or steps yet)")
                continue
            for step in steps:
                name = str(step.get("name") or "?")
                container = step.get("container") or f"step-{name}"
                prefix = f"[{task}/{name}]"
                lines.extend(self._step_log(prefix, pod, str(container)))
        return lines

    def _step_log(self, prefix: str, pod: str, container: str) -> list[str]:
        try:
            text = self.core.read_namespaced_pod_log(
                pod,
                self.namespace,
                container=container,
                limit_bytes=LOG_LIMIT_BYTES,
                _request_timeout=self.request_timeout,
            )
        except Exception as exc:
            return [f"{prefix} (log unavailable: pod {pod} container {container}: {describe(exc)})"]
        return [f"{prefix} {line}" for line in str(text or "").splitlines()]


def describe(exc: BaseException) -> str:
    """A short, credential-free description of an API or connection error."""
    if isinstance(exc, client.ApiException):
        return f"HTTP {exc.status} {exc.reason or ''}".strip() + _status_message(exc.body)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        return describe(exc.reason)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _status_message(body: Any) -> str:
    """The message of a Kubernetes Status body, if the body is one."""
    try:
        data = json.loads(body) if isinstance(body, (str, bytes)) else None
    except ValueError:
        return ""
    message = _dict(data).get("message")
    return f": {message}" if isinstance(message, str) and message else ""
