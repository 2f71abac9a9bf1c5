"""Which builds a fleet needs: one per distinct effective build spec, allowlist enforced.

This is the single gate every build start goes through (validate, render, local runner,
service): :func:`plan_builds` never returns a build for an application that is not allowed,
that would publish outside its namespace or read a local source the installation does not
allow (:mod:`ajour_build.tenancy`), and reports each refusal with the setting that would
allow it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from ajour_build.config import InstallationConfig
from ajour_build.core.errors import AjourError, NotAllowedError, Problem
from ajour_build.core.fleet import Fleet
from ajour_build.core.spec.firmware import BuildSpec


@dataclass(frozen=True)
class Consumer:
    """An application (device None) or a device that uses a build's output."""

    application: str
    device: str | None = None

    def __str__(self) -> str:
        return self.application if self.device is None else f"{self.application}/{self.device}"

    def sort_key(self) -> tuple[str, int, str]:
        return (self.application, 0 if self.device is None else 1, self.device or "")


@dataclass(frozen=True)
class PlannedBuild:
    key: str
    build: BuildSpec
    builder_image: str
    image: str
    publish_to: str
    timeout: str
    consumers: tuple[Consumer, ...]

    @property
    def application(self) -> str:
        return self.consumers[0].application

    @property
    def name(self) -> str:
        """A stable DNS-1123 name (at most 59 characters) from the app and the spec hash."""
        return f"ajour-{self.application[:40].rstrip('-')}-{self.key[:12]}"


@dataclass(frozen=True)
class Crossing:
    """Consumers of an allowed application whose build crosses its tenancy (not planned)."""

    build: BuildSpec
    consumers: tuple[Consumer, ...]
    message: str


@dataclass(frozen=True)
class Plan:
    builds: tuple[PlannedBuild, ...]
    refused: tuple[str, ...]  # allowlist refusals, then every crossing's message
    consumers_without_build: int
    crossings: tuple[Crossing, ...] = ()

    def require_allowed(self) -> Plan:
        if self.refused:
            raise NotAllowedError(list(self.refused))
        return self


def build_key(build: BuildSpec, builder_image: str, publish_to: str, timeout: str) -> str:
    """sha256 over the canonical JSON of everything that changes what a build does."""
    git = build.source.git
    canonical = {
        "builder": builder_image,
        "git": {"uri": git.uri, "project": git.project, "rev": git.rev},
        "args": list(build.args),
        "env": [[v.name, v.text] for v in build.env],
        "artifact": build.artifact.path,
        "timeout": timeout,
        "publish": publish_to,
    }
    blob = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def application_of(fleet: Fleet, device: str) -> str:
    """The application of the one device named ``device`` (a device names its application
    in ``metadata.application``); an error naming the candidates when several have one."""
    apps = sorted(a for a, d in fleet.devices if d == device)
    if not apps:
        raise AjourError(f"device {device!r} is not in the fleet (in no application)")
    if len(apps) > 1:
        raise AjourError(
            f"device {device!r} is in {len(apps)} applications: {', '.join(apps)};"
            f" device names are unique per application only: pass --app {apps[0]} (or"
            f" another of them) to choose"
        )
    return apps[0]


def _consumers(fleet: Fleet, app: str | None, device: str | None) -> list[Consumer]:
    if device is not None and app is None:
        app = application_of(fleet, device)
    if app is not None and app not in fleet.applications:
        raise AjourError(f"application {app!r} is not in the fleet")
    if device is not None and (app or "", device) not in fleet.devices:
        raise AjourError(f"device {device!r} of application {app!r} is not in the fleet")
    if device is not None and app is not None:
        return [Consumer(app, device)]
    apps = [app] if app is not None else sorted(fleet.applications)
    found: list[Consumer] = []
    for name in apps:
        found.append(Consumer(name))
        found.extend(Consumer(name, d.name) for d in fleet.devices_of(name))
    return found


def plan_builds(
    fleet: Fleet,
    config: InstallationConfig,
    application: str | None = None,
    device: str | None = None,
) -> Plan:
    """Distinct builds for the fleet (or one app/device), with allowlist refusals."""
    allow = config.allowlist
    tenancy = config.tenancy
    grouped: dict[str, tuple[PlannedBuild, list[Consumer]]] = {}
    refused: dict[str, str] = {}
    crossed: dict[tuple[str, str], tuple[BuildSpec, list[Consumer]]] = {}
    without = 0
    for consumer in _consumers(fleet, application, device):
        firmware = fleet.effective_firmware(consumer.application, consumer.device)
        build = firmware.build if firmware is not None else None
        if firmware is None or firmware.container is None or build is None:
            without += 1
            continue
        if not allow.allows(consumer.application):
            refused.setdefault(consumer.application, allow.refusal(consumer.application))
            continue
        crossing = tenancy.publish_refusal(
            consumer.application, firmware.container.image
        ) or tenancy.source_refusal(build.source.git.uri)
        if crossing is not None:
            crossed.setdefault((consumer.application, crossing), (build, []))[1].append(consumer)
            continue
        builder = config.builder_image(build.image)
        image = f"{config.registry.prefix}/{firmware.container.image}"
        publish_to = f"oci://{image}"
        timeout = build.timeout or config.default_timeout
        key = build_key(build, builder, publish_to, timeout)
        if key not in grouped:
            grouped[key] = (PlannedBuild(key, build, builder, image, publish_to, timeout, ()), [])
        grouped[key][1].append(consumer)
    builds = tuple(
        sorted(
            (
                PlannedBuild(
                    b.key,
                    b.build,
                    b.builder_image,
                    b.image,
                    b.publish_to,
                    b.timeout,
                    tuple(sorted(cs, key=Consumer.sort_key)),
                )
                for b, cs in grouped.values()
            ),
            key=lambda b: (b.application, b.key),
        )
    )
    crossings = tuple(
        Crossing(build, tuple(consumers), f"build refused for {_names(consumers)}: {why}")
        for (_, why), (build, consumers) in sorted(crossed.items())
    )
    messages = tuple(refused[a] for a in sorted(refused)) + tuple(c.message for c in crossings)
    return Plan(builds, messages, without, crossings)


def _names(consumers: list[Consumer]) -> str:
    shown = ", ".join(repr(str(c)) for c in consumers[:5])
    more = f" and {len(consumers) - 5} more" if len(consumers) > 5 else ""
    return shown + more


def repository(image: str) -> str:
    """``image`` without its tag and digest: where its immutable version tags live."""
    name = image.split("@", 1)[0]
    head, slash, last = name.rpartition("/")
    return head + slash + last.split(":", 1)[0]


def repository_clashes(plan: Plan, fleet: Fleet) -> list[Problem]:
    """Distinct builds that publish into one repository under different tags.

    Versions are immutable tags of a repository, and each build stamps the version its
    checkout names (the ``VERSION`` file): two builds of one source into one repository
    publish the same version with different firmware, and the second publish fails. Each
    build needs a repository of its own, for example ``blinky/canary:latest``.
    """
    by_repository: dict[str, list[PlannedBuild]] = {}
    for build in plan.builds:
        by_repository.setdefault(repository(build.image), []).append(build)
    problems: list[Problem] = []
    for repo, builds in sorted(by_repository.items()):
        if len(builds) < 2:
            continue
        builds.sort(key=lambda b: b.consumers[0].sort_key())
        first = builds[0]
        for build in builds[1:]:
            consumer = build.consumers[0]
            device = fleet.devices.get((consumer.application, consumer.device or ""))
            origin = device.origin if device else fleet.applications[consumer.application].origin
            problems.append(
                Problem(
                    f"{consumer} publishes {build.image.rsplit('/', 1)[-1]!r} into repository"
                    f" {repo!r}, where {first.consumers[0]} publishes"
                    f" {first.image.rsplit('/', 1)[-1]!r} from a different build: both stamp"
                    " the version their source names, and a version is published once per"
                    " repository, so the second publish fails",
                    file=origin.file,
                    line=origin.line,
                    path="spec.firmware.container.image",
                    hint="give this build a repository of its own under the application, for"
                    f" example {consumer.application}/{consumer.device or 'variant'}:<tag>",
                )
            )
    return problems
