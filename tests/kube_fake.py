"""A FAKE Kubernetes API server for tests: kmock's in-memory emulator on a loopback port.

kmock (by nolar) emulates the Kubernetes API in memory with aiohttp: create, get, list,
watch, merge-patch and delete of any resource, 404 for unknown objects and 409 for
existing ones. It runs inside an asyncio loop, so :class:`KubeFake` runs it in a
background thread with a loop of its own; the official (synchronous) ``kubernetes``
client talks to it over HTTP on 127.0.0.1 like to a real API server.

kmock 0.8 does not emulate a few things the Tekton backend relies on. :class:`FakeApi`
adds them, and only them, as a FAKE (not kmock features, and far from a real API server):

- ``201 Created`` for a create (kmock answers 200, which the client reads as no object);
- ``metadata.resourceVersion`` (a global counter bumped by every create and patch), ``uid``
  and ``creationTimestamp``; lists carry the current resourceVersion;
- watches that honour ``resourceVersion`` (only newer objects are replayed), the
  ``timeoutSeconds`` parameter, and answer ``410 Gone`` for a resourceVersion older than
  the last :meth:`KubeFake.expire_watches`;
- subscribing a watch to changes before taking the snapshot, so no change is lost in
  between (kmock 0.8 snapshots first);
- ``GET .../pods/NAME/log?container=C`` serving fixed text set by :meth:`KubeFake.pod_log`.

Label selectors stay ignored, as in kmock: every object of the namespace is listed.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import kmock
from kubernetes import client

PIPELINERUNS = "tekton.dev/v1/pipelineruns"
TASKRUNS = "tekton.dev/v1/taskruns"
PODS = "v1/pods"
_GONE = "AJOUR-FAKE-GONE"  # control items on kmock's event buses, never sent to clients
_DROP = "AJOUR-FAKE-DROP"


class FakeApi(kmock.KubernetesEmulator):
    """kmock's emulator plus resourceVersions, resumable watches and pod logs (a FAKE)."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self.fake_rv = 0
        self.fake_compacted = 0  # watches from an older resourceVersion get 410 Gone
        self.fake_logs: dict[tuple[str, str, str], str] = {}
        log = self[kmock.resource(PODS), kmock.subresource("log")]
        log << {"Content-Type": "text/plain; charset=utf-8"} << self._serve_log

    async def _handle(self, request: kmock.Request) -> Any:
        if (
            request.resource is not None
            and request.action in (kmock.action.CREATE, kmock.action.UPDATE)
            and isinstance(request.data, dict)
        ):
            self.fake_rv += 1
            meta = request.data.setdefault("metadata", {})
            meta["resourceVersion"] = str(self.fake_rv)
            if request.action == kmock.action.CREATE:
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault("creationTimestamp", datetime.now(UTC).isoformat())
        response = await super()._handle(request)
        if request.action == kmock.action.CREATE and response.status == 200:
            response.set_status(201)  # as Kubernetes does; the client reads 200 as no object
        return response

    def _matching(self, request: kmock.Request, raw: Any) -> bool:
        meta = raw.get("metadata", {}) if isinstance(raw, dict) else {}
        return (request.namespace is None or meta.get("namespace") == request.namespace) and (
            request.name is None or meta.get("name") == request.name
        )

    def _current(self, request: kmock.Request) -> list[dict[str, Any]]:
        return [
            obj.raw
            for (resource, _ns, _name), obj in self.objects.items()
            if resource == request.resource and not obj.deleted and self._matching(request, obj.raw)
        ]

    async def _serve_list(self, request: kmock.Request) -> Any:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = self._current(request)
            return {"metadata": {"resourceVersion": str(self.fake_rv)}, "items": items}

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        yield b""  # start the stream (headers) at once, as kmock does
        since = int(request.params.get("resourceVersion") or 0)
        timeout = float(request.params.get("timeoutSeconds") or 0)
        deadline = asyncio.get_running_loop().time() + timeout if timeout else None
        assert request.resource is not None  # kmock routes only resource requests here
        bus = self._buses[request.resource]
        async with self._lock:
            mark = await bus.mark()  # subscribe first, then snapshot: nothing falls between
            gone = bool(since) and since < self.fake_compacted
            replay = [
                {"type": "ADDED", "object": raw}
                for raw in self._current(request)
                if int(raw.get("metadata", {}).get("resourceVersion") or 0) > since
            ]
        try:
            if gone:
                yield _gone_event(since)
                return
            for event in replay:
                yield event
            stream = bus.stream(since=mark)
            while True:
                try:
                    async with asyncio.timeout_at(deadline):
                        event = await anext(stream)
                except TimeoutError:
                    return
                if event.get("type") == _GONE:
                    yield _gone_event(since)
                    return
                if event.get("type") == _DROP:
                    return
                if self._matching(request, event.get("object")):
                    yield event
        finally:
            await bus.unmark(mark)

    async def _serve_log(self, request: kmock.Request) -> bytes:
        key = (request.namespace or "", request.name or "", request.params.get("container", ""))
        if key not in self.fake_logs:
            raise kmock.KubernetesObjectNotFoundError()
        return self.fake_logs[key].encode()

    async def fake_broadcast(self, kind: str) -> None:
        async with self._lock:
            if kind == _GONE:
                self.fake_rv += 1
                self.fake_compacted = self.fake_rv
            for bus in list(self._buses.values()):
                await bus.put({"type": kind})


def _gone_event(since: int) -> dict[str, Any]:
    return {
        "type": "ERROR",
        "object": {
            "apiVersion": "v1",
            "kind": "Status",
            "status": "Failure",
            "code": 410,
            "reason": "Expired",
            "message": f"too old resource version: {since}",
        },
    }


class KubeFake:
    """The FAKE Kubernetes API (kmock) on 127.0.0.1, served from a thread of its own."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="kube-fake", daemon=True)
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._failure: BaseException | None = None
        self.url = ""
        self.api: FakeApi | None = None

    # -- life ----------------------------------------------------------------------------
    def start(self) -> KubeFake:
        self._thread.start()
        if not self._ready.wait(10) or self._failure is not None or self.api is None:
            raise RuntimeError(f"the fake Kubernetes API did not start: {self._failure!r}")
        return self

    def close(self) -> None:
        if self._thread.is_alive():
            self.drop_watches()  # open watches would hold aiohttp's shutdown for 60 s
            self._loop.call_soon_threadsafe(self._stop_soon)
            self._thread.join(15)

    def __enter__(self) -> KubeFake:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _stop_soon(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported by start()
            self._failure = exc
        finally:
            self._ready.set()
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        api = FakeApi()
        api.resources[PIPELINERUNS] = kmock.ResourceInfo(
            kind="PipelineRun", singular="pipelinerun", namespaced=True, subresources={"status"}
        )
        api.resources[TASKRUNS] = kmock.ResourceInfo(
            kind="TaskRun", singular="taskrun", namespaced=True, subresources={"status"}
        )
        api.resources[PODS] = kmock.ResourceInfo(
            kind="Pod", singular="pod", namespaced=True, subresources={"log"}
        )
        async with api, kmock.Server(api) as server:
            self.url = str(server.url).rstrip("/")
            self.api = api
            self._ready.set()
            await self._stopping.wait()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    # -- for tests -----------------------------------------------------------------------
    def api_client(self) -> client.ApiClient:
        """A client of the official library pointed at this fake (no credentials)."""
        config = client.Configuration(host=self.url)
        return client.ApiClient(config)

    def pod_log(self, namespace: str, pod: str, container: str, text: str) -> None:
        assert self.api is not None
        self.api.fake_logs[(namespace, pod, container)] = text

    def expire_watches(self) -> None:
        """Open watches end with 410 Gone and every resourceVersion known so far expires."""
        assert self.api is not None
        self._call(self.api.fake_broadcast(_GONE))

    def drop_watches(self) -> None:
        """Open watches end without a word, as when an API server restarts."""
        if self.api is not None:
            self._call(self.api.fake_broadcast(_DROP))

    def requests(self, action: str, resource: str) -> int:
        """How many requests of a Kubernetes action (list, watch, ...) hit a resource."""
        assert self.api is not None
        want = kmock.resource(resource)

        async def count() -> int:
            assert self.api is not None
            return len(
                [r for r in self.api if r.action == kmock.action(action) and r.resource == want]
            )

        return int(self._call(count()))
