"""Strict validation of Tekton ``tekton.dev/v1`` manifests.

Tekton's CRD schemas (vendored in ``ajour_build/schemas/tekton``, see its README.md) leave
``additionalProperties`` open, so a typo would pass. :func:`strict_schema` closes every
object schema that declares ``properties`` unless it preserves unknown fields, the way
``kubeconform -strict`` does. On top of the schema, Ajour's own rules: Kubernetes names,
labels and annotations are legal, and params never appear inside a step ``script``.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jsonschema

API_VERSION = "tekton.dev/v1"
SCHEMA_FILES = {
    "Task": "tekton-task-v1.schema.json",
    "Pipeline": "tekton-pipeline-v1.schema.json",
    "PipelineRun": "tekton-pipelinerun-v1.schema.json",
    "TaskRun": "tekton-taskrun-v1.schema.json",
}
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_DNS_LABEL}(\.{_DNS_LABEL})*")
_LABEL_NAME = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_INJECTION = re.compile(r"\$\((params|tasks|inputs)\.")
MAX_ANNOTATION_BYTES = 256 * 1024


def strict_schema(schema: Any) -> Any:
    """A copy of ``schema`` where objects with ``properties`` reject unknown keys."""
    out = copy.deepcopy(schema)
    stack = [out]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return out


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(document)"


def _check_name(name: Any, kind: str) -> list[str]:
    if not isinstance(name, str) or not name:
        return ["metadata.name: missing (apply needs a name)"]
    if len(name) > 63 and kind in ("PipelineRun", "TaskRun"):
        return [f"metadata.name: {name!r} is longer than 63 characters (pod labels carry it)"]
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        return [f"metadata.name: {name!r} is not a DNS-1123 subdomain"]
    return []


def _check_labels(labels: Any) -> list[str]:
    problems: list[str] = []
    if not isinstance(labels, dict):
        return ["metadata.labels: must be a mapping of strings"]
    for key, value in labels.items():
        prefix, _, name = str(key).rpartition("/")
        if prefix and (len(prefix) > 253 or not _SUBDOMAIN.fullmatch(prefix)):
            problems.append(f"metadata.labels: key prefix {prefix!r} is not a DNS subdomain")
        if len(name) > 63 or not _LABEL_NAME.fullmatch(name):
            problems.append(f"metadata.labels: key {key!r} is not a legal label name")
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            problems.append(f"metadata.labels[{key}]: {value!r} is not a legal label value")
    return problems


def _check_annotations(annotations: Any) -> list[str]:
    if not isinstance(annotations, dict):
        return ["metadata.annotations: must be a mapping of strings"]
    problems = [
        f"metadata.annotations[{k}]: value must be a string"
        for k, v in annotations.items()
        if not isinstance(v, str)
    ]
    size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
    if size > MAX_ANNOTATION_BYTES:
        problems.append(f"metadata.annotations: {size} bytes, over the 256 KiB limit")
    return problems


def _check_scripts(node: Any, path: str = "") -> list[str]:
    problems: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if key == "script" and isinstance(value, str) and _INJECTION.search(value):
                problems.append(
                    f"{sub}: a script interpolates $(params...) or $(tasks...); pass the"
                    " value through env: and read the variable instead"
                )
            problems.extend(_check_scripts(value, sub))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            problems.extend(_check_scripts(item, f"{path}[{i}]"))
    return problems


@dataclass
class ManifestValidator:
    """Validates manifests against the strict v1 schemas. Reuse one instance: schemas load once."""

    _validators: dict[str, jsonschema.protocols.Validator] = field(default_factory=dict)

    def _validator(self, kind: str) -> jsonschema.protocols.Validator:
        if kind not in self._validators:
            text = (
                resources.files("ajour_build.schemas.tekton")
                .joinpath(SCHEMA_FILES[kind])
                .read_text(encoding="utf-8")
            )
            schema = strict_schema(json.loads(text))
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            self._validators[kind] = cls(schema)
        return self._validators[kind]

    def problems(self, manifest: Any) -> list[str]:
        """Everything wrong with ``manifest``; an empty list means valid."""
        if not isinstance(manifest, dict):
            return [f"a manifest must be a mapping, got {type(manifest).__name__}"]
        kind = manifest.get("kind")
        if manifest.get("apiVersion") != API_VERSION:
            return [f"apiVersion: expected {API_VERSION!r}, got {manifest.get('apiVersion')!r}"]
        if kind not in SCHEMA_FILES:
            return [f"kind: expected one of {sorted(SCHEMA_FILES)}, got {kind!r}"]
        found = [
            f"{_json_path(err.absolute_path)}: {err.message}"
            for err in sorted(
                self._validator(kind).iter_errors(manifest), key=lambda e: list(e.absolute_path)
            )
        ]
        meta = manifest.get("metadata")
        if not isinstance(meta, dict):
            return [*found, "metadata: missing"]
        found += _check_name(meta.get("name"), kind)
        namespace = meta.get("namespace")
        if namespace is not None and (
            not isinstance(namespace, str)
            or not re.fullmatch(_DNS_LABEL, namespace)
            or len(namespace) > 63
        ):
            found.append(f"metadata.namespace: {namespace!r} is not a DNS-1123 label")
        found += _check_labels(meta.get("labels", {}))
        found += _check_annotations(meta.get("annotations", {}))
        found += _check_scripts(manifest.get("spec"), "spec")
        return found
