"""PipelineRuns for planned builds: template, parse back, validate, dump."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jinja2
import yaml

from ajour_build import __version__
from ajour_build.config import InstallationConfig
from ajour_build.core.errors import RenderError
from ajour_build.plan import PlannedBuild
from ajour_build.render.dump import dump
from ajour_build.tekton.manifest import ManifestValidator

MAX_CONSUMERS_ANNOTATION = 64 * 1024
# libyaml's safe loader when PyYAML was built with it (about 10x faster), else pure Python
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
TEMPLATE = "pipelinerun.yaml.j2"


def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("ajour_build.render", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )


def _consumers_annotation(build: PlannedBuild) -> dict[str, str]:
    names = [str(c) for c in build.consumers]
    text = json.dumps(names, separators=(",", ":"))
    if len(text) <= MAX_CONSUMERS_ANNOTATION:
        return {"ajour.dev/consumers": text}
    kept: list[str] = []
    size = 2
    for name in names:
        size += len(json.dumps(name)) + 1
        if size > MAX_CONSUMERS_ANNOTATION:
            break
        kept.append(name)
    return {
        "ajour.dev/consumers": json.dumps(kept, separators=(",", ":")),
        "ajour.dev/consumers-omitted": str(len(names) - len(kept)),
    }


def pinned_name(build: PlannedBuild, commit: str) -> str:
    """The run's name for one commit of the build's source (at most 58 characters): a new
    commit on ``rev`` is a new PipelineRun, so ``kubectl apply`` starts it."""
    return f"ajour-{build.application[:31].rstrip('-')}-{build.key[:12]}-{commit[:7]}"


def context(
    build: PlannedBuild, config: InstallationConfig, commit: str | None = None
) -> dict[str, Any]:
    """Everything the template needs; no value is formatted by the template itself.

    ``commit`` pins the run to that commit of ``rev``: it is built, and it names the run.
    """
    git = build.build.source.git
    labels = {
        "app.kubernetes.io/name": "ajour-firmware",
        "app.kubernetes.io/component": "firmware-build",
        "app.kubernetes.io/part-of": "ajour",
        "app.kubernetes.io/managed-by": "ajour-build",
        "app.kubernetes.io/version": __version__,
        "ajour.dev/application": build.application,
        "ajour.dev/spec-hash": build.key[:40],
    }
    devices = [c.device for c in build.consumers if c.device is not None]
    if len(build.consumers) == 1 and devices and len(devices[0]) <= 63:
        labels["ajour.dev/device"] = devices[0]
    annotations = {
        "ajour.dev/application": build.application,
        "ajour.dev/spec-hash": build.key,
        "ajour.dev/git-url": git.uri,
        "ajour.dev/git-revision": git.rev,
        "ajour.dev/image": build.image,
        **_consumers_annotation(build),
    }
    if commit is not None:
        annotations["ajour.dev/git-commit"] = commit
    params: list[dict[str, Any]] = [
        {"name": "git-url", "value": git.uri},
        {"name": "git-revision", "value": commit or git.rev},
        {"name": "project", "value": git.project},
        {"name": "builder-image", "value": build.builder_image},
        {"name": "build-args", "value": list(build.build.args)},
        {"name": "artifact-path", "value": build.build.artifact.path},
        {"name": "publish-to", "value": build.publish_to},
        {"name": "tools-image", "value": config.tools_image},
    ]
    claim: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": config.workspace.storage}},
    }
    if config.workspace.storage_class_name:
        claim["storageClassName"] = config.workspace.storage_class_name
    return {
        "name": build.name if commit is None else pinned_name(build, commit),
        "namespace": config.namespace,
        "labels": labels,
        "annotations": annotations,
        "pipeline_ref": {
            "resolver": config.pipeline_ref.resolver,
            "params": config.pipeline_ref.resolved_params(config.namespace),
        },
        "params": params,
        "service_account": config.service_account,
        "env": [{"name": v.name, "value": v.text} for v in build.build.env],
        "timeout": build.timeout,
        "volume_claim": claim,
        "dockerconfig_secret": config.workspace.dockerconfig_secret,
    }


@dataclass
class Renderer:
    """Renders PipelineRuns. Keep one per run: the template and schemas load once."""

    config: InstallationConfig
    validator: ManifestValidator = field(default_factory=ManifestValidator)
    _template: jinja2.Template | None = None

    def manifest(self, build: PlannedBuild, commit: str | None = None) -> dict[str, Any]:
        if self._template is None:
            self._template = environment().get_template(TEMPLATE)
        text = self._template.render(context(build, self.config, commit))
        try:
            manifest = yaml.load(text, Loader=_LOADER)
        except yaml.YAMLError as exc:  # a template bug, never user input
            raise RenderError(f"rendered YAML for {build.name} does not parse: {exc}") from exc
        problems = self.validator.problems(manifest)
        if problems:
            raise RenderError(
                f"rendered PipelineRun {build.name} is invalid:\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        if not isinstance(manifest, dict):  # pragma: no cover - validator checks this
            raise RenderError("rendered manifest is not a mapping")
        return manifest

    def yaml(self, build: PlannedBuild) -> str:
        return dump(self.manifest(build))
