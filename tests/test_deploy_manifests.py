"""deploy/kubernetes: rendered with ``kubectl kustomize``, validated offline against the
vendored strict Kubernetes v1.32 schemas (deploy/kubernetes/schemas), and held to the
security and probe settings docs/operations.md promises."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from ajour_build.config import load_config
from ajour_build.core.fleet import load_fleet
from delivery.worker_config import load_settings
from tests.conftest import REPO

DEPLOY = REPO / "deploy" / "kubernetes"
SCHEMAS = DEPLOY / "schemas" / "v1.32.0"
SECRETS_EXAMPLE = DEPLOY / "overlays" / "example" / "secrets.example.yaml"
# (apiVersion, kind) -> schema file
KINDS = {
    ("v1", "ConfigMap"): "configmap-v1.json",
    ("apps/v1", "Deployment"): "deployment-apps-v1.json",
    ("v1", "Namespace"): "namespace-v1.json",
    ("networking.k8s.io/v1", "NetworkPolicy"): "networkpolicy-networking-v1.json",
    ("v1", "PersistentVolumeClaim"): "persistentvolumeclaim-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "poddisruptionbudget-policy-v1.json",
    ("rbac.authorization.k8s.io/v1", "Role"): "role-rbac-v1.json",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "rolebinding-rbac-v1.json",
    ("v1", "Secret"): "secret-v1.json",
    ("v1", "Service"): "service-v1.json",
    ("v1", "ServiceAccount"): "serviceaccount-v1.json",
}


@cache
def _registry() -> Registry:
    definitions = json.loads((SCHEMAS / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


@cache
def _validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMAS / KINDS[(api_version, kind)]).read_text())
    registry = Resource.from_contents(schema) @ _registry()
    return jsonschema.Draft202012Validator(schema, registry=registry)


def problems(doc: Any) -> list[str]:
    """What is wrong with one manifest: kind/name, the field path, and the schema's word."""
    if not isinstance(doc, dict):
        return [f"a manifest must be a mapping, got {type(doc).__name__}"]
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    name = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
    if (api_version, kind) not in KINDS:
        return [
            f"{name}: no vendored schema for apiVersion {api_version!r} kind {kind!r}; add it"
            " to KINDS in scripts/k8s-schemas.py and vendor again (deploy/kubernetes/schemas)"
        ]
    errors = _validator(str(api_version), str(kind)).iter_errors(doc)
    return sorted(
        f"{name}: at {'.'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in errors
    )


def kustomize(folder: Path) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render deploy/kubernetes (kubectl kustomize)"
    out = subprocess.run(
        [kubectl, "kustomize", str(folder)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=["base", "overlays/example"])
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return kustomize(DEPLOY / request.param)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def containers(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for deployment in by_kind(docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        for container in pod["containers"]:
            yield pod, container


def test_every_rendered_manifest_and_example_secret_validates(
    rendered: list[dict[str, Any]],
) -> None:
    examples = list(yaml.safe_load_all(SECRETS_EXAMPLE.read_text()))
    found = [p for doc in [*rendered, *examples] for p in problems(doc)]
    assert found == []
    kinds = {d["kind"] for d in rendered}
    assert {"Deployment", "Service", "Role", "RoleBinding", "PodDisruptionBudget"} <= kinds
    assert "Secret" not in kinds, "placeholder Secrets must never be applied with the rest"


def test_pods_run_locked_down_with_probes_and_bounds(rendered: list[dict[str, Any]]) -> None:
    seen = set()
    for pod, container in containers(rendered):
        seen.add(container["name"])
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001  # the images' USER
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        ctx = container["securityContext"]
        assert ctx["readOnlyRootFilesystem"] is True
        assert ctx["allowPrivilegeEscalation"] is False
        assert ctx["capabilities"]["drop"] == ["ALL"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert container["readinessProbe"]["httpGet"]["port"] in ports
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
        # the only writable places are volumes
        mounts = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert mounts == {"/tmp", "/var/lib/ajour"}
        # what serve's --http/--port says is what the probes and the Service use
        assert any(a.endswith(f":{ports['http']}") or a == f"--port={ports['http']}"
                   for a in container["args"])  # fmt: skip
    assert seen == {"build-service", "delivery"}
    pdb = by_kind(rendered, "PodDisruptionBudget")["ajour-delivery"]
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "ajour-delivery"}


def test_the_config_and_fleet_in_the_configmaps_load(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    maps = {name.split("-")[1]: cm for name, cm in by_kind(rendered, "ConfigMap").items()}
    (tmp_path / "ajour.yaml").write_text(maps["config"]["data"]["ajour.yaml"])
    fleet = tmp_path / "fleet"
    fleet.mkdir()
    for key, value in maps["fleet"]["data"].items():
        (fleet / key).write_text(value)
    assert load_fleet([fleet]).applications
    config = load_config(tmp_path / "ajour.yaml", env={})
    assert (config.service.backend, config.namespace) == ("tekton", "ajour")
    worker = load_settings(tmp_path / "ajour.yaml", [fleet], {}).delivery
    assert worker.http == "0.0.0.0:8081" and worker.store.startswith("/var/lib/ajour/")
    accounts = by_kind(rendered, "ServiceAccount")
    assert config.service_account in accounts, "the PipelineRuns' account must exist"
    assert accounts[config.service_account]["automountServiceAccountToken"] is False
    # the PipelineRuns, the Role and the services share one namespace
    role = by_kind(rendered, "Role")["ajour-build-service"]
    assert config.namespace == role["metadata"]["namespace"]
    # the build service's notify and console reach the delivery Service by its name
    delivery = by_kind(rendered, "Service")["ajour-delivery"]
    port = delivery["spec"]["ports"][0]["port"]
    assert config.service.delivery_url == f"http://ajour-delivery.ajour.svc:{port}"


def test_example_secrets_hold_placeholders_only() -> None:
    for secret in yaml.safe_load_all(SECRETS_EXAMPLE.read_text()):
        for key, value in secret["stringData"].items():
            if key == ".dockerconfigjson":
                (auth,) = json.loads(value)["auths"].values()
                value = base64.b64decode(auth["auth"]).decode()
            assert "REPLACE-ME" in value, f"{secret['metadata']['name']}.{key}: a placeholder"


def _delivery() -> dict[str, Any]:
    docs = yaml.safe_load_all((DEPLOY / "base" / "delivery.yaml").read_text())
    return next(d for d in docs if d["kind"] == "Deployment")


def test_a_wrong_type_is_named_with_its_path() -> None:
    doc = _delivery()
    doc["spec"]["replicas"] = "two"
    assert problems(doc) == [
        "Deployment/ajour-delivery: at spec.replicas: 'two' is not of type 'integer', 'null'"
    ]


def test_an_unknown_field_is_refused_where_the_schema_forbids_it() -> None:
    doc = _delivery()
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {}
    assert problems(doc) == [
        "Deployment/ajour-delivery: at spec.template.spec.containers.0.readinessProbe:"
        " Additional properties are not allowed ('httpGett' was unexpected)"
    ]


def test_a_missing_required_field_is_named() -> None:
    doc = _delivery()
    del doc["spec"]["selector"]
    del doc["spec"]["template"]["spec"]["containers"][0]["name"]
    assert problems(doc) == [
        "Deployment/ajour-delivery: at spec.template.spec.containers.0: 'name' is a required"
        " property",
        "Deployment/ajour-delivery: at spec: 'selector' is a required property",
    ]


def test_a_kind_without_a_vendored_schema_says_how_to_add_one() -> None:
    (message,) = problems({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "x"}})
    assert message.startswith("CronJob/x: no vendored schema for apiVersion 'batch/v1'")
    assert "scripts/k8s-schemas.py" in message


def test_the_base_runs_the_images_the_script_builds_as_their_user() -> None:
    """./scripts/service-images' default tags and the Containerfiles' USER are what the base
    Deployments name and run as."""
    script = (REPO / "scripts" / "service-images").read_text()
    assert "prefix=${1:-localhost/ajour}" in script and "tag=${2:-0.1.0}" in script
    base = kustomize(DEPLOY / "base")
    for pod, container in containers(base):
        name = container["name"]
        assert container["image"] == f"localhost/ajour/{name}:0.1.0"
        containerfile = (REPO / "deploy" / "images" / f"{name}.Containerfile").read_text()
        uid = pod["securityContext"]["runAsUser"]
        assert f"USER {uid}:{pod['securityContext']['runAsGroup']}" in containerfile
