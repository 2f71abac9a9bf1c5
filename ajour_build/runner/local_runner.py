"""The local runner: the same steps as the Tekton Pipeline, on one machine.

clone (``ajour_build.steps.clone``) → build (the builder's contract entrypoint, in its
image or on the host) → check the artifact → record. Cached by everything that can
change the output: resolved commit, builder image id, args, env, project, artifact path,
and version (and the signing key's SHA-256, if one is given).

A signing key (``--image-key``) is copied into the workspace for the build only
(``secrets/signing-key``, mode 0400), its path given in ``AJOUR_IMAGE_KEY_FILE``; it is
never logged, and the workspace is deleted after the build.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TypedDict

from ajour_build.builders.catalog import Builder, find
from ajour_build.core.errors import BuildCancelled, BuildError, SourceError
from ajour_build.lifecycle import BuildState, now
from ajour_build.plan import PlannedBuild
from ajour_build.runner.artifact import collect
from ajour_build.runner.job import BuildJob, BuildLog, Engine, LogLimits, Progress
from ajour_build.runner.state_dir import BuilderRef, LocalBuild, StateDir, build_id
from ajour_build.steps.clone import TIMEOUT, clone, resolve_commit


class _Identity(TypedDict):
    id: str
    name: str
    application: str
    consumers: tuple[str, ...]
    git_url: str
    revision: str
    created: datetime


SIGNING_KEY_PATH = "secrets/signing-key"  # in the workspace


def cache_key(
    job: BuildJob, commit: str, image_id: str, artifact_path: str, key_sha256: str = ""
) -> str:
    canonical: dict[str, object] = {
        "commit": commit,
        "builder": image_id,
        "args": list(job.args),
        "env": sorted(job.env.items()),
        "project": job.project,
        "artifact": artifact_path,
    }
    if key_sha256:  # only then: the keys of builds without one stay what they were
        canonical["signing_key"] = key_sha256
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class LocalRunner:
    state: StateDir
    engine: Engine
    catalog: list[Builder] = field(default_factory=list)
    use_cache: bool = True
    progress: Progress = field(default_factory=Progress)
    cancel: threading.Event | None = None  # set it to stop the running build
    log_limits: LogLimits = field(default_factory=LogLimits)
    clone_timeout: float = TIMEOUT  # seconds for each clone or ls-remote of the source
    signing_key: bytes | None = None  # the builder reads it at AJOUR_IMAGE_KEY_FILE

    def _check(self) -> None:
        """Between steps: stop here if the build was cancelled."""
        if self.cancel is not None and self.cancel.is_set():
            raise BuildCancelled("build cancelled by request")

    def _job(self, planned: PlannedBuild, workspace: Path, commit: str, version: str) -> BuildJob:
        build = planned.build
        builder = find(self.catalog, build.image) or find(self.catalog, planned.builder_image)
        args = build.args or (builder.spec.default_args if builder else ())
        env = {var.name: var.text for var in build.env}
        env.update(
            {
                "AJOUR_FIRMWARE_VERSION": version,
                "AJOUR_ARTIFACT_PATH": build.artifact.path,
                "AJOUR_SOURCE_COMMIT": commit,
            }
        )
        image = planned.builder_image
        if builder is not None and image == builder.spec.name:
            image = builder.spec.ref
        return BuildJob(
            image=image,
            workspace=workspace,
            project=build.source.git.project,
            args=tuple(args),
            env=env,
            network=builder.spec.network if builder else False,
            timeout=_seconds(planned.timeout),
            entrypoint=builder.entrypoint if builder else None,
            signing_key=SIGNING_KEY_PATH if self.signing_key is not None else None,
            cancel=self.cancel or threading.Event(),
        )

    def run(self, planned: PlannedBuild, version: str | None = None) -> LocalBuild:
        git = planned.build.source.git
        started = now()
        bid = build_id(planned.name)
        staging = self.state.staging(bid)
        log = BuildLog(staging / "build.log", self.progress.on_line, self.log_limits)
        base = _Identity(
            id=bid,
            name=planned.name,
            application=planned.application,
            consumers=tuple(str(c) for c in planned.consumers),
            git_url=git.uri,
            revision=git.rev,
            created=started,
        )
        record: LocalBuild | None = None
        try:
            record = self._run(planned, version, staging, log, base, started)
        except BuildCancelled as exc:
            record = LocalBuild(
                **base,
                state=BuildState.CANCELLED,
                started=started,
                finished=now(),
                failure=str(exc).split("\n")[0],
                log_tail=tuple(exc.log_tail),
            )
            raise
        except (BuildError, SourceError) as exc:
            tail = exc.log_tail if isinstance(exc, BuildError) else log.tail()
            record = LocalBuild(
                **base,
                state=BuildState.FAILED,
                started=started,
                finished=now(),
                failure=str(exc).split("\nlast log lines:")[0],
                log_tail=tuple(tail),
            )
            raise
        finally:
            log.close()
            shutil.rmtree(staging / "workspace", ignore_errors=True)
            if record is not None:
                self.state.commit_build(staging, record)
            else:
                shutil.rmtree(staging, ignore_errors=True)
        return record

    def _run(
        self,
        planned: PlannedBuild,
        version: str | None,
        staging: Path,
        log: BuildLog,
        base: _Identity,
        started: datetime,
    ) -> LocalBuild:
        git = planned.build.source.git
        self._check()
        self.progress.on_step("resolve")
        # without an explicit version the checkout decides (its VERSION file, else the commit)
        commit = (
            resolve_commit(git.uri, git.rev, self.clone_timeout, self.cancel) if version else None
        )
        workspace = staging / "workspace"
        if commit is None:  # no version given, or a short sha: only a clone can tell
            self.progress.on_step("clone")
            checkout = clone(
                git.uri,
                git.rev,
                workspace / "source",
                version or "",
                self.clone_timeout,
                self.cancel,
            )
            commit, version = checkout.commit, checkout.version
        stamp = version or commit
        job = self._job(planned, workspace, commit, stamp)
        image_id = self.engine.image_id(job)
        key_sha256 = hashlib.sha256(self.signing_key).hexdigest() if self.signing_key else ""
        key = cache_key(job, commit, image_id, planned.build.artifact.path, key_sha256)
        builder = BuilderRef(image=job.image, id=image_id, runner=self.engine.name)
        self._check()
        if self.use_cache and (hit := self.state.cached(key)) is not None:
            cached, artifacts = hit
            log.note(f"cached: reusing build {cached.id} (key {key[:12]})")
            shutil.copytree(artifacts, staging / "artifacts")
            update = {**base, "cached": True, "started": started, "finished": now()}
            return cached.model_copy(update=update)
        if not (workspace / "source").exists():
            self.progress.on_step("clone")
            clone(git.uri, commit, workspace / "source", "", self.clone_timeout, self.cancel)
        log.note(f"commit {commit}, version {stamp}, builder {job.image} ({image_id[:19]})")
        inside = job.workdir.is_relative_to((workspace / "source").resolve())
        if not inside or not job.workdir.is_dir():
            raise BuildError(f"project folder {git.project!r} does not exist in the repository")
        if self.signing_key is not None:
            _write_secret(workspace / SIGNING_KEY_PATH, self.signing_key)
            log.note(f"signing key: AJOUR_IMAGE_KEY_FILE (sha256 {key_sha256[:12]})")
        self._check()
        self.progress.on_step("build")
        code = self.engine.run(job, log)
        if code != 0:
            raise BuildError(f"the builder exited with code {code}", log.tail())
        self.progress.on_step("collect")
        artifact = collect(
            job.workdir, workspace, planned.build.artifact.path, staging / "artifacts", log.tail()
        )
        record = LocalBuild(
            **base,
            state=BuildState.SUCCEEDED,
            cache_key=key,
            commit=commit,
            version=stamp,
            builder=builder,
            artifact=artifact,
            started=started,
            finished=now(),
        )
        # stored even with --no-cache: the fresh result is the best one to reuse next time
        self.state.store_cache(key, record, staging / "artifacts")
        return record


def _write_secret(path: Path, content: bytes) -> None:
    """``content`` at ``path``, readable by its owner only (the builder's user)."""
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
    with os.fdopen(fd, "wb") as out:
        out.write(content)


def _seconds(duration: str) -> int:
    from ajour_build.core.spec.fields import parse_duration

    return parse_duration(duration)
