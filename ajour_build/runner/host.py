"""Host mode: run a builder's entrypoint directly, without a container.

Only with an explicit ``--runner host``: the build then shares the host's network and
toolchains. The environment is minimal (PATH, HOME, LANG and the contract variables).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

from ajour_build.core.errors import BuildCancelled, BuildError
from ajour_build.runner.job import BuildJob, BuildLog

_PASS = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TERM")


@dataclass
class HostEngine:
    name: str = "host"

    def image_id(self, job: BuildJob) -> str:
        if job.entrypoint is None or not job.entrypoint.is_file():
            raise BuildError(
                f"host mode needs the builder's entrypoint script; none found for {job.image!r}"
                " (is it a builder from the catalog in builder-images/?)"
            )
        return "host:sha256:" + hashlib.sha256(job.entrypoint.read_bytes()).hexdigest()

    def run(self, job: BuildJob, log: BuildLog) -> int:
        assert job.entrypoint is not None
        env = {k: v for k, v in os.environ.items() if k in _PASS}
        env.update(job.env)
        env.update(job.file_env(str(job.workspace)))
        try:
            proc = subprocess.Popen(
                [str(job.entrypoint), *job.args],
                cwd=job.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: we can stop all of it
            )
        except OSError as exc:
            raise BuildError(f"cannot start the builder {job.entrypoint}: {exc.strerror}") from None
        reader = threading.Thread(target=_pump, args=(proc, log), daemon=True)
        reader.start()
        try:
            code = _wait(proc, job)
        except subprocess.TimeoutExpired:
            _stop(proc)
            raise BuildError(f"build timed out after {job.timeout}s", log.tail()) from None
        except BuildCancelled as exc:
            _stop(proc)
            raise BuildCancelled(str(exc), log.tail()) from None
        except KeyboardInterrupt:
            _stop(proc)
            raise BuildCancelled("build cancelled (Ctrl-C)", log.tail()) from None
        finally:
            reader.join(10)
            if proc.stdout is not None:
                proc.stdout.close()
        return code


def _wait(proc: subprocess.Popen[bytes], job: BuildJob) -> int:
    """The exit code; TimeoutExpired after job.timeout, BuildCancelled when job.cancel is set."""
    deadline = time.monotonic() + job.timeout
    while True:
        if job.cancel.is_set():
            raise BuildCancelled("build cancelled by request")
        try:
            return proc.wait(timeout=max(0.0, min(0.25, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                raise


def _pump(proc: subprocess.Popen[bytes], log: BuildLog) -> None:
    stream = proc.stdout
    assert stream is not None
    fd = stream.fileno()
    while chunk := os.read(fd, 65536):  # whatever is there, unbuffered: live log lines
        log.write(chunk)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue
