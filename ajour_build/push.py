"""From a git push to the builds it affects (allowlist and tenancy enforced, identical specs
collapsed)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ajour_build.config import InstallationConfig
from ajour_build.core.fleet import Fleet
from ajour_build.plan import Plan, PlannedBuild, plan_builds


@dataclass(frozen=True)
class Push:
    provider: str
    urls: tuple[str, ...]  # every clone URL the provider names for the repository
    ref: str  # refs/heads/<branch> or refs/tags/<tag>
    after: str  # the pushed commit
    deleted: bool = False

    @property
    def name(self) -> str:
        """The branch or tag pushed."""
        for prefix in ("refs/heads/", "refs/tags/"):
            if self.ref.startswith(prefix):
                return self.ref[len(prefix) :]
        return self.ref


def repo_key(uri: str) -> str:
    """``host/path`` of a git URI: scheme, user, ``.git`` and the host's case don't matter."""
    scp = re.fullmatch(r"(?:[A-Za-z0-9._-]+@)?([A-Za-z0-9.-]+):(?!//)(.+)", uri)
    if scp and "://" not in uri:
        host, path = scp.group(1), scp.group(2)
    else:
        parts = urlsplit(uri)
        host = (parts.hostname or "") + (
            f":{parts.port}" if parts.port and parts.scheme in ("https", "http") else ""
        )
        path = parts.path
    path = path.strip("/")
    path = path[:-4] if path.endswith(".git") else path
    return f"{host.lower()}/{path}"


@dataclass(frozen=True)
class Matched:
    builds: tuple[PlannedBuild, ...]
    refused: tuple[str, ...]


def _rev_matches(rev: str, push: Push) -> bool:
    return rev == push.name or rev == push.ref or (len(rev) >= 7 and push.after.startswith(rev))


def match(
    fleet: Fleet, config: InstallationConfig, push: Push, plan: Plan | None = None
) -> Matched:
    """Every distinct build whose source is the pushed repository and revision.

    ``plan`` is ``plan_builds(fleet, config)`` when the caller already has it (it depends
    only on the fleet and the config, both immutable).
    """
    keys = {repo_key(u) for u in push.urls}
    if push.deleted:
        return Matched((), ())

    def hits(uri: str, rev: str) -> bool:
        return repo_key(uri) in keys and _rev_matches(rev, push)

    plan = plan if plan is not None else plan_builds(fleet, config)
    builds = tuple(b for b in plan.builds if hits(b.build.source.git.uri, b.build.source.git.rev))
    refused: list[str] = []
    for app in sorted(fleet.applications):
        if config.allowlist.allows(app):
            continue
        consumers = [None, *(d.name for d in fleet.devices_of(app))]
        for device in consumers:
            firmware = fleet.effective_firmware(app, device)
            build = firmware.build if firmware is not None else None
            if build is not None and hits(build.source.git.uri, build.source.git.rev):
                refused.append(config.allowlist.refusal(app))
                break
    refused += [
        c.message for c in plan.crossings if hits(c.build.source.git.uri, c.build.source.git.rev)
    ]
    return Matched(builds, tuple(refused))
