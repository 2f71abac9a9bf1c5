"""The Tekton backend: builds run as ``tekton.dev/v1`` PipelineRuns in the installation's namespace.

``submit`` renders the build's PipelineRun (the same manifest ``ajour-build render``
prints), names it per build, labels it ``ajour.dev/build-id``, validates it against the
strict Tekton v1 schema and creates it. A thread (:mod:`.tekton_watch`) follows the
PipelineRuns and moves the build records through their states, with results and step
logs. ``cancel`` sets ``spec.status: Cancelled``. See docs/tekton-backend.md.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit, urlunsplit

import urllib3
from kubernetes import client

from ajour_build.config import InstallationConfig
from ajour_build.core.errors import AjourError
from ajour_build.lifecycle import Build
from ajour_build.plan import PlannedBuild
from ajour_build.render.pipelinerun import Renderer
from ajour_build.service.backends.backend import BackendError
from ajour_build.service.backends.tekton_watch import (
    BUILD_ID_LABEL,
    GROUP,
    PIPELINERUNS,
    VERSION,
    Watcher,
    build_id_of,
    describe,
)
from ajour_build.service.records import Records

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_NAME = 63  # PipelineRun names become pod labels


def run_name(planned_name: str, build_id: str) -> str:
    """The PipelineRun name of one build: the planned name plus 8 hex of the build id's hash."""
    suffix = hashlib.sha256(build_id.encode()).hexdigest()[:8]
    return f"{planned_name[: MAX_NAME - len(suffix) - 1].rstrip('-')}-{suffix}"


def api_client_from_environment(
    kubeconfig: str | None = None, context: str | None = None
) -> client.ApiClient:
    """A client from the in-cluster service account when in a pod, else from the kubeconfig."""
    from kubernetes import config

    kube_config: Any = config  # the library's loaders are untyped
    configuration = client.Configuration()
    in_cluster = kubeconfig is None and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            kube_config.load_incluster_config(client_configuration=configuration)
        else:
            # the library reads KUBECONFIG only when it is imported: pass it on each call
            kube_config.load_kube_config(
                config_file=kubeconfig or os.environ.get("KUBECONFIG") or None,
                context=context,
                client_configuration=configuration,
            )
    except Exception as exc:  # ConfigException, a missing or unreadable file, bad YAML
        path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
        where = (
            "the pod's service account (/var/run/secrets/kubernetes.io/serviceaccount)"
            if in_cluster
            else f"the kubeconfig ({path})"
        )
        raise BackendError(
            f"the Tekton backend cannot configure its Kubernetes client from {where}:"
            f" {describe(exc)}; run the service in the cluster with a service account, or set"
            " KUBECONFIG to a kubeconfig whose current context reaches the cluster",
            status=503,
        ) from None
    return client.ApiClient(configuration)


class TektonBackend:
    """Runs builds as Tekton PipelineRuns; see the module docstring."""

    name = "tekton"
    durable = True

    def __init__(
        self,
        records: Records,
        config: InstallationConfig,
        api_client: client.ApiClient | None = None,
        *,
        retries: int = 4,
        backoff: float = 0.5,
        request_timeout: float = 10.0,
        watch_timeout: float = 2.0,
        call_deadline: float = 30.0,
    ) -> None:
        self.records = records
        self.config = config
        self.namespace = config.namespace
        self._owns_client = api_client is None
        self.api = api_client if api_client is not None else api_client_from_environment()
        # one try is one request: urllib3's own retries (3 by default) would stretch a try to
        # four request timeouts; _call retries, within its deadline
        cast(Any, self.api).rest_client.pool_manager.connection_pool_kw["retries"] = False
        self.custom = client.CustomObjectsApi(self.api)
        self.renderer = Renderer(config)
        self.retries = max(0, retries)
        self.backoff = backoff
        self.request_timeout = request_timeout
        self.call_deadline = call_deadline  # seconds for one call with all its retries
        self.watcher = Watcher(
            records,
            self.api,
            self.namespace,
            watch_timeout=watch_timeout,
            request_timeout=request_timeout,
        )
        self._thread: threading.Thread | None = None

    @classmethod
    def from_environment(
        cls,
        records: Records,
        config: InstallationConfig,
        kubeconfig: str | None = None,
        context: str | None = None,
        **options: Any,
    ) -> TektonBackend:
        """A backend whose client comes from a kubeconfig file and context of your choice."""
        backend = cls(records, config, api_client_from_environment(kubeconfig, context), **options)
        backend._owns_client = True
        return backend

    @property
    def server(self) -> str:
        """The API server URL without any user:password part (safe for messages and logs)."""
        parts = urlsplit(str(self.api.configuration.host))
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    # -- Backend -------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self.watcher.stopping.clear()
        self._thread = threading.Thread(target=self.watcher.run, name="tekton-watch", daemon=True)
        self._thread.start()
        log.info("Tekton backend: watching PipelineRuns in %s at %s", self.namespace, self.server)

    def health(self) -> str:
        if self._thread is not None and not self._thread.is_alive():
            return "the PipelineRun watch thread stopped"
        return "ok"

    def free_slots(self) -> int | None:
        return None  # the cluster queues PipelineRuns itself

    def submit(self, build: Build, planned: PlannedBuild) -> None:
        manifest = self.manifest(build, planned)
        name = manifest["metadata"]["name"]
        self._create(manifest, name, build.id)
        current = self.records.update(build.id, backend_ref=name)
        if not current.active:  # cancelled while we were creating it: stop it in the cluster
            self.cancel(build.id)
        log.info("build %s: created PipelineRun %s/%s", build.id, self.namespace, name)

    def cancel(self, build_id: str) -> bool:
        name = self._run_of(build_id)
        if name is None:
            return False
        body = {"spec": {"status": "Cancelled"}}
        try:
            self._call(
                f"cancel PipelineRun {name}",
                lambda: self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PIPELINERUNS,
                    name,
                    body,
                    _request_timeout=self.request_timeout,
                ),
            )
        except client.ApiException as exc:
            if exc.status == 404:
                return False
            raise BackendError(self._refused(f"cancel PipelineRun {name}", exc), 502) from None
        log.info("build %s: cancelling PipelineRun %s/%s", build_id, self.namespace, name)
        return True

    def stop(self) -> None:
        self.watcher.stop()
        if self._thread is not None:
            self._thread.join(self.watcher.watch_timeout + 5)
            if self._thread.is_alive():
                log.warning("the Tekton watch thread did not stop in time")
            self._thread = None
        if self._owns_client:
            cast(Any, self.api).close()

    # -- submit --------------------------------------------------------------------------
    def manifest(self, build: Build, planned: PlannedBuild) -> dict[str, Any]:
        """The validated PipelineRun of one build."""
        build_id = build.id
        try:
            manifest = self.renderer.manifest(planned)
        except AjourError as exc:
            message = f"cannot render the PipelineRun of build {build_id}: {exc}"
            raise BackendError(message, 500) from None
        meta = manifest["metadata"]
        meta["name"] = run_name(planned.name, build_id)
        meta.setdefault("labels", {})[BUILD_ID_LABEL] = build_id
        params: list[dict[str, Any]] = manifest["spec"].setdefault("params", [])
        overrides = {"publish-to": build.publish_to, "firmware-version": build.version}
        for key, value in overrides.items():
            if value:
                params[:] = [p for p in params if p.get("name") != key]
                params.append({"name": key, "value": value})
        problems = self.renderer.validator.problems(manifest)
        if problems:
            raise BackendError(
                f"the PipelineRun of build {build_id} is invalid:\n"
                + "\n".join(f"  - {p}" for p in problems),
                500,
            )
        return manifest

    def _create(self, manifest: dict[str, Any], name: str, build_id: str) -> None:
        try:
            self._call(
                f"create PipelineRun {name}",
                lambda: self.custom.create_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PIPELINERUNS,
                    manifest,
                    _request_timeout=self.request_timeout,
                ),
            )
        except client.ApiException as exc:
            if exc.status == 409:
                self._adopt(name, build_id)
                return
            raise BackendError(self._refused(f"create PipelineRun {name}", exc), 502) from None

    def _adopt(self, name: str, build_id: str) -> None:
        """After 409: fine if an earlier attempt of this build created it, else a conflict."""
        try:
            existing = self._call(
                f"read PipelineRun {name}",
                lambda: self.custom.get_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    self.namespace,
                    PIPELINERUNS,
                    name,
                    _request_timeout=self.request_timeout,
                ),
            )
        except client.ApiException as exc:
            raise BackendError(
                f"PipelineRun {name} already exists in namespace {self.namespace} but cannot be"
                f" read ({describe(exc)})",
                409,
            ) from None
        owner = build_id_of(existing)
        if owner == build_id:
            log.info("build %s: PipelineRun %s was created by an earlier attempt", build_id, name)
            return
        raise BackendError(
            f"PipelineRun {name} already exists in namespace {self.namespace} and is not build"
            f" {build_id}'s (its {BUILD_ID_LABEL} label is {owner!r}); delete it if it is a"
            " leftover, or start the build again",
            409,
        )

    def _run_of(self, build_id: str) -> str | None:
        record = self.records.get(build_id)
        if record is not None and record.backend_ref:
            return record.backend_ref
        listed = self._call(
            f"list PipelineRuns of build {build_id}",
            lambda: self.custom.list_namespaced_custom_object(
                GROUP,
                VERSION,
                self.namespace,
                PIPELINERUNS,
                label_selector=f"{BUILD_ID_LABEL}={build_id}",
                _request_timeout=self.request_timeout,
            ),
        )
        items = listed.get("items") if isinstance(listed, dict) else None
        for obj in items if isinstance(items, list) else []:
            if build_id_of(obj) == build_id:
                found = obj.get("metadata", {}).get("name")
                return found if isinstance(found, str) else None
        return None

    # -- plumbing ------------------------------------------------------------------------
    def _call(self, what: str, call: Callable[[], T]) -> T:
        """``call`` with retries on connection errors, 429 and 5xx; other API errors raise."""
        last: BaseException | None = None
        end = time.monotonic() + self.call_deadline
        tries = 0
        for attempt in range(self.retries + 1):
            if attempt:
                pause = min(self.backoff * 2 ** (attempt - 1), 10.0)
                if time.monotonic() + pause + self.request_timeout > end:
                    break  # no time for another try within the call's deadline
                time.sleep(pause)
            tries += 1
            try:
                return call()
            except client.ApiException as exc:
                if exc.status not in RETRY_STATUS:
                    raise
                last = exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                last = exc
            log.debug("%s: attempt %d failed: %s", what, attempt + 1, describe(last))
        assert last is not None
        attempts = f"{tries} attempt{'s' if tries > 1 else ''}"
        if isinstance(last, client.ApiException):
            problem = f"the Kubernetes API server at {self.server} failed {attempts}"
        else:
            problem = f"the Kubernetes API server at {self.server} is unreachable after {attempts}"
        raise BackendError(
            f"cannot {what}: {problem} ({describe(last)}); check that the cluster is up and"
            " reachable from the service, and that the service's kubeconfig or in-cluster"
            " service account points at this API server",
            503,
            retry_after=30,
        )

    def _refused(self, what: str, exc: client.ApiException) -> str:
        hint = {
            401: "the service's credentials were refused: renew the kubeconfig token or"
            " service account",
            403: f"the service account lacks RBAC in namespace {self.namespace}: grant the Role"
            " in docs/tekton-backend.md",
            404: f"namespace {self.namespace} or the Tekton v1 CRDs are missing: install Tekton"
            " Pipelines and create the namespace",
        }.get(exc.status or 0, "the API server rejected the request")
        return f"cannot {what} at {self.server}: {describe(exc)}; {hint}"
