"""Tekton Triggers for the in-cluster route: a git push starts the affected PipelineRuns.

One TriggerTemplate per build (its PipelineRun, with ``git-revision`` set to the pushed
commit and ``generateName`` so every push gets a new run), one TriggerBinding reading the
commit from GitHub's or GitLab's payload, and one EventListener whose triggers check the
signature (the GitHub/GitLab interceptors, secret from ``triggers.secret``) and filter by
repository and branch with CEL; the listener runs as its own ServiceAccount, bound to the
ClusterRoles Tekton Triggers installs for listeners (:func:`listener_rbac`). The embedded
PipelineRun is validated against the v1 schema; Tekton Triggers' own CRD schemas are not
vendored, so those objects get Ajour's name and label checks only.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import yaml

from ajour_build.config import InstallationConfig
from ajour_build.core.errors import RenderError
from ajour_build.plan import PlannedBuild
from ajour_build.push import repo_key
from ajour_build.render.pipelinerun import Renderer, environment
from ajour_build.tekton.manifest import ManifestValidator

TRIGGERS_API = "triggers.tekton.dev/v1beta1"
LISTENER = "ajour-builds"
SECRET = "ajour-webhook"
LISTENER_ACCOUNT = "ajour-triggers"  # the EventListener's ServiceAccount (RBAC rendered too)


def _run_template(renderer: Renderer, build: PlannedBuild) -> dict[str, Any]:
    run = copy.deepcopy(renderer.manifest(build))
    run["metadata"].pop("namespace", None)
    run["metadata"]["generateName"] = run["metadata"].pop("name") + "-"
    for param in run["spec"]["params"]:
        if param["name"] == "git-revision":
            param["value"] = "$(tt.params.git-revision)"
    check = copy.deepcopy(run)
    check["metadata"]["name"] = build.name
    problems = ManifestValidator().problems(check)
    if problems:
        raise RenderError(f"trigger PipelineRun for {build.name} is invalid: {problems}")
    return run


def _filter(build: PlannedBuild, provider: str) -> str:
    """CEL: the pushed branch is the spec's ``rev`` and the repository one of its spellings.

    Stock CEL cannot normalise URLs the way Ajour does, so the filter lists the spellings
    providers use for the spec's repository: https, scp-like and ssh, with and without
    ``.git``.
    """
    git = build.build.source.git
    ref = json.dumps(f"refs/heads/{git.rev}")
    if provider == "github":
        urls = ("body.repository.clone_url", "body.repository.ssh_url")
    else:
        urls = ("body.project.git_http_url", "body.project.git_ssh_url")
    host, _, path = repo_key(git.uri).partition("/")
    forms = {git.uri}
    if host:  # a file:// source has no host: no provider names it another way
        for base in (f"https://{host}/{path}", f"git@{host}:{path}", f"ssh://git@{host}/{path}"):
            forms |= {base, base + ".git"}
    spellings = json.dumps(sorted(forms))
    return f"body.ref == {ref} && ({' || '.join(f'{u} in {spellings}' for u in urls)})"


def render_triggers(
    builds: tuple[PlannedBuild, ...], config: InstallationConfig
) -> list[dict[str, Any]]:
    renderer = Renderer(config)
    template = environment().get_template("triggers.yaml.j2")
    labels = {
        "app.kubernetes.io/part-of": "ajour",
        "app.kubernetes.io/component": "triggers",
        "app.kubernetes.io/managed-by": "ajour-build",
    }
    docs: list[dict[str, Any]] = []
    triggers: list[dict[str, Any]] = []
    for build in builds:
        text = template.render(
            name=build.name,
            namespace=config.namespace,
            labels=labels,
            pipelinerun=_run_template(renderer, build),
        )
        docs.append(yaml.safe_load(text))
        for provider in ("github", "gitlab"):
            secret_key = "secretToken" if provider == "gitlab" else "secretRef"
            triggers.append(
                {
                    "name": f"{build.name}-{provider}",
                    "interceptors": [
                        {
                            "ref": {"name": provider},
                            "params": [
                                {
                                    "name": secret_key,
                                    "value": {"secretName": SECRET, "secretKey": "token"},
                                },
                                {
                                    "name": "eventTypes",
                                    "value": ["push"] if provider == "github" else ["Push Hook"],
                                },
                            ],
                        },
                        {
                            "ref": {"name": "cel"},
                            "params": [{"name": "filter", "value": _filter(build, provider)}],
                        },
                    ],
                    "bindings": [{"ref": f"ajour-{provider}-push"}],
                    "template": {"ref": build.name},
                }
            )
    for provider, commit in (("github", "$(body.after)"), ("gitlab", "$(body.checkout_sha)")):
        docs.append(
            {
                "apiVersion": TRIGGERS_API,
                "kind": "TriggerBinding",
                "metadata": {
                    "name": f"ajour-{provider}-push",
                    "namespace": config.namespace,
                    "labels": labels,
                },
                "spec": {"params": [{"name": "git-revision", "value": commit}]},
            }
        )
    docs.extend(listener_rbac(config.namespace, labels))
    docs.append(
        {
            "apiVersion": TRIGGERS_API,
            "kind": "EventListener",
            "metadata": {"name": LISTENER, "namespace": config.namespace, "labels": labels},
            "spec": {"serviceAccountName": LISTENER_ACCOUNT, "triggers": triggers},
        }
    )
    return docs


def listener_rbac(namespace: str, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The EventListener's own ServiceAccount, bound to the two ClusterRoles Tekton Triggers
    installs for listeners (read its triggers, bindings, templates and interceptors; create
    the PipelineRuns). The PipelineRuns themselves run as ``service_account``."""

    def binding(kind: str, name: str, role: str) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": name, "labels": labels}
        if kind == "RoleBinding":
            meta["namespace"] = namespace
        return {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": kind,
            "metadata": meta,
            "subjects": [
                {"kind": "ServiceAccount", "name": LISTENER_ACCOUNT, "namespace": namespace}
            ],
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
        }

    account = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": LISTENER_ACCOUNT, "namespace": namespace, "labels": labels},
    }
    return [
        account,
        binding("RoleBinding", LISTENER_ACCOUNT, "tekton-triggers-eventlistener-roles"),
        binding(
            "ClusterRoleBinding",
            f"{LISTENER_ACCOUNT}-{namespace}"[:253],
            "tekton-triggers-eventlistener-clusterroles",
        ),
    ]
