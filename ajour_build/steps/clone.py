"""Fetch a git source and check out the commit a branch, tag or sha names."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import git
from pydantic import TypeAdapter, ValidationError

from ajour_build.core.errors import SourceError
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
}


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


def _last_line(exc: git.GitCommandError) -> str:
    """git's own reason: the first ``fatal:`` line, else the last line it printed."""
    lines = [ln.strip().strip("'") for ln in str(exc.stderr or "").splitlines()]
    lines = [ln.removeprefix("stderr: ").strip("'") for ln in lines if ln]
    fatal = [ln.removeprefix("fatal: ") for ln in lines if ln.startswith("fatal:")]
    chosen = fatal[0] if fatal else (lines[-1] if lines else f"git exited with {exc.status}")
    return redact_uri(chosen)


def _resolve(repo: git.Repo, url: str, revision: str) -> str:
    """The commit sha for ``revision``: fetch it shallowly by name, else fetch all refs."""
    try:
        repo.git.fetch("--quiet", "--depth=1", "--no-tags", "origin", "--", revision)
        return str(repo.git.rev_parse("--verify", "FETCH_HEAD^{commit}"))
    except git.GitCommandError as exc:
        if "could not read from remote" in str(exc.stderr).lower() or "does not appear" in str(
            exc.stderr
        ):
            raise SourceError(f"cannot fetch {redact_uri(url)}: {_last_line(exc)}") from None
    try:  # a sha the server will not send by name: fetch everything and look it up
        repo.git.fetch("--quiet", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*")
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


def clone(url: str, revision: str, dest: Path, firmware_version: str = "") -> Checkout:
    """Fetch ``url`` at ``revision`` into ``dest`` (created; must be empty) and check it out."""
    _checked(url, revision, firmware_version)
    if dest.exists() and any(dest.iterdir()):
        raise SourceError(f"checkout directory {str(dest)!r} is not empty")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        repo = git.Repo.init(dest)
        repo.git.update_environment(**GIT_ENV)
        repo.git.remote("add", "origin", url)
        commit = _resolve(repo, url, revision)
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


def resolve_commit(url: str, revision: str) -> str | None:
    """The commit ``revision`` names on the remote, without cloning (``git ls-remote``).

    A full 40-hex sha is returned as is. ``None`` means only a clone can tell (a short sha);
    a branch or tag the remote does not have raises :class:`SourceError`.
    """
    _checked(url, revision)
    if len(revision) == 40 and all(c in "0123456789abcdef" for c in revision):
        return revision
    cmd = git.cmd.Git()
    cmd.update_environment(**GIT_ENV)
    try:
        out = str(cmd.ls_remote("--", url))
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
