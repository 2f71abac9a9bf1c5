"""Fetch a git source and check out the commit a branch, tag or sha names."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import git
from pydantic import TypeAdapter, ValidationError

from ajour_build.core.errors import BuildCancelled, SourceError
from ajour_build.core.spec.fields import GitRef, GitUri, redact_uri
from ajour_build.core.version import is_version, version_problem

_URI: TypeAdapter[str] = TypeAdapter(GitUri)
_REF: TypeAdapter[str] = TypeAdapter(GitRef)
# git may only speak these; remote helpers such as ext:: are refused by git itself too
GIT_ENV = {
    "GIT_ALLOW_PROTOCOL": "file:https:ssh",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_ASKPASS": "/bin/false",
    # an https transfer slower than 1 KB/s for 60 s is given up (curl's low-speed limit)
    "GIT_HTTP_LOW_SPEED_LIMIT": "1000",
    "GIT_HTTP_LOW_SPEED_TIME": "60",
}
TIMEOUT = 600.0  # seconds for one whole clone or ls-remote; git is killed after that


class _Deadline:
    """One total deadline for the git commands of a clone (each gets what is left), and the
    cancel flag they watch."""

    def __init__(self, url: str, seconds: float, cancel: threading.Event | None = None) -> None:
        self.url, self.seconds = url, seconds
        self.end = time.monotonic() + seconds
        self.cancel = cancel or threading.Event()

    def passed(self) -> bool:
        return time.monotonic() >= self.end

    def error(self) -> SourceError:
        return SourceError(
            f"cannot fetch {redact_uri(self.url)}: git did not finish within {self.seconds:g}s"
            " (the clone deadline); check that the git server answers, or raise the deadline"
            " (service.clone_timeout in ajour.yaml)"
        )


@dataclass(frozen=True)
class Checkout:
    url: str
    revision: str
    commit: str
    version: str
    path: Path


def _checked(url: str, revision: str, firmware_version: str = "") -> None:
    problem = version_problem(firmware_version) if firmware_version else None
    if problem is not None:
        raise SourceError(f"refusing to fetch: {problem}")
    try:
        _URI.validate_python(url)
        _REF.validate_python(revision)
    except ValidationError as exc:
        reason = "; ".join(str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        raise SourceError(f"refusing to fetch: {reason}") from None


def _git(args: list[str], cwd: Path | None, deadline: _Deadline) -> str:
    """Run a git command that talks to the remote: stopped (its whole process group) when
    the build is cancelled or the deadline passes. Its stdout, stripped."""
    env = {**os.environ, **GIT_ENV, "LANGUAGE": "C", "LC_ALL": "C"}
    command = ["git", *args]
    proc = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,  # git and its remote helper: one group to stop
    )
    try:
        while True:
            try:
                left = max(deadline.end - time.monotonic(), 0)
                out, err = proc.communicate(timeout=min(0.25, left))
                break
            except subprocess.TimeoutExpired:
                if deadline.cancel.is_set():
                    raise BuildCancelled("build cancelled by request (while fetching)") from None
                if deadline.passed():
                    raise deadline.error() from None
    except BaseException:  # cancelled, out of time, or Ctrl-C (git has its own session)
        _stop(proc)
        raise
    if proc.returncode != 0:
        raise git.GitCommandError(command, proc.returncode, err.decode("utf-8", "replace"))
    return out.decode("utf-8", "replace").strip()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.communicate()


def _last_line(exc: git.GitCommandError) -> str:
    """git's own reason: the first ``fatal:`` line, else the last line it printed."""
    lines = [ln.strip().strip("'") for ln in str(exc.stderr or "").splitlines()]
    lines = [ln.removeprefix("stderr: ").strip("'") for ln in lines if ln]
    fatal = [ln.removeprefix("fatal: ") for ln in lines if ln.startswith("fatal:")]
    chosen = fatal[0] if fatal else (lines[-1] if lines else f"git exited with {exc.status}")
    return redact_uri(chosen)


def _resolve(repo: git.Repo, url: str, revision: str, deadline: _Deadline) -> str:
    """The commit sha for ``revision``: fetch it shallowly by name, else fetch all refs."""
    where = Path(str(repo.working_dir))
    try:
        _git(
            ["fetch", "--quiet", "--depth=1", "--no-tags", "origin", "--", revision],
            where,
            deadline,
        )
        return str(repo.git.rev_parse("--verify", "FETCH_HEAD^{commit}"))
    except git.GitCommandError as exc:
        if "could not read from remote" in str(exc.stderr).lower() or "does not appear" in str(
            exc.stderr
        ):
            raise SourceError(f"cannot fetch {redact_uri(url)}: {_last_line(exc)}") from None
    try:  # a sha the server will not send by name: fetch everything and look it up
        fetch_all = ["fetch", "--quiet", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"]
        _git(fetch_all, where, deadline)
    except git.GitCommandError as exc:
        raise SourceError(f"cannot fetch {redact_uri(url)}: {_last_line(exc)}") from None
    for candidate in (f"refs/remotes/origin/{revision}", f"refs/tags/{revision}", revision):
        try:
            return str(repo.git.rev_parse("--verify", "--quiet", f"{candidate}^{{commit}}"))
        except git.GitCommandError:
            continue
    branches = sorted(r.remote_head for r in repo.remotes.origin.refs if r.remote_head != "HEAD")
    raise SourceError(
        f"revision {revision!r} not found in {redact_uri(url)}: no branch, tag or commit by"
        f" that name (branches: {', '.join(branches[:10]) or 'none'}); fix source.git.rev"
    )


def clone(
    url: str,
    revision: str,
    dest: Path,
    firmware_version: str = "",
    timeout: float = TIMEOUT,
    cancel: threading.Event | None = None,
) -> Checkout:
    """Fetch ``url`` at ``revision`` into ``dest`` (created; must be empty) and check it out.

    The fetches together get ``timeout`` seconds; git is killed when they are up, or when
    ``cancel`` is set (then BuildCancelled).
    """
    _checked(url, revision, firmware_version)
    deadline = _Deadline(url, timeout, cancel)
    if dest.exists() and any(dest.iterdir()):
        raise SourceError(f"checkout directory {str(dest)!r} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        repo = git.Repo.init(dest)
        repo.git.update_environment(**GIT_ENV)
        repo.git.remote("add", "origin", url)
        commit = _resolve(repo, url, revision, deadline)
        repo.git.checkout("--quiet", "--detach", commit)
    except git.GitCommandError as exc:
        raise SourceError(f"git failed for {redact_uri(url)}: {_last_line(exc)}") from None
    return Checkout(url, revision, commit, firmware_version or version_file(dest) or commit, dest)


def version_file(checkout: Path) -> str:
    """The version a ``VERSION`` file at the top of the repository names ("" if none).

    Only its first line counts, and only a version (``ajour_build.core.version``: ``1.2.0``,
    ``2.0.0-rc.1``): a file that says anything else is ignored rather than stamped.
    """
    path = checkout / "VERSION"
    try:
        if not path.is_file() or path.is_symlink() or path.stat().st_size > 4096:
            return ""
        first = path.read_text(encoding="utf-8", errors="replace").splitlines()[:1]
    except OSError:
        return ""
    text = first[0].strip() if first else ""
    return text if is_version(text) else ""


def clear(path: Path) -> None:
    """Empty ``path`` (a reused Tekton workspace) without removing it."""
    if not path.exists():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def resolve_commit(
    url: str, revision: str, timeout: float = TIMEOUT, cancel: threading.Event | None = None
) -> str | None:
    """The commit ``revision`` names on the remote, without cloning (``git ls-remote``).

    A full 40-hex sha is returned as is. ``None`` means only a clone can tell (a short sha);
    a branch or tag the remote does not have raises :class:`SourceError`.
    """
    _checked(url, revision)
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    deadline = _Deadline(url, timeout, cancel)
    try:
        out = _git(["ls-remote", "--", url], None, deadline)
    except git.GitCommandError as exc:
        raise SourceError(f"cannot fetch {redact_uri(url)}: {_last_line(exc)}") from None
    refs: dict[str, str] = {}
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        refs[name] = sha
    for name in (
        revision if revision == "HEAD" else f"refs/heads/{revision}",
        f"refs/tags/{revision}^{{}}",
        f"refs/tags/{revision}",
    ):
        if name in refs:
            return refs[name]
    if all(c in "0123456789abcdef" for c in revision) and len(revision) >= 7:
        return None
    branches = sorted(n.removeprefix("refs/heads/") for n in refs if n.startswith("refs/heads/"))
    raise SourceError(
        f"revision {revision!r} not found in {redact_uri(url)}: no branch, tag or commit by"
        f" that name (branches: {', '.join(branches[:10]) or 'none'}); fix source.git.rev"
    )
