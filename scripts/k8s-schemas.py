"""Vendor Kubernetes' JSON schemas for the kinds deploy/kubernetes uses, from PyPI's
kubernetes-validate wheel: the kinds' strict schemas as they are, and their shared
``_definitions.json`` cut to the definitions those kinds reach (deploy/kubernetes/schemas).

    python scripts/k8s-schemas.py WHEEL_DIR   # the unpacked kubernetes_validate wheel
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

VERSION = "v1.32.0"
KINDS = (
    "configmap-v1",
    "deployment-apps-v1",
    "namespace-v1",
    "networkpolicy-networking-v1",
    "persistentvolumeclaim-v1",
    "poddisruptionbudget-policy-v1",
    "role-rbac-v1",
    "rolebinding-rbac-v1",
    "secret-v1",
    "service-v1",
    "serviceaccount-v1",
)
PREFIXES = ("/api/_definitions.json#/$defs/", "#/$defs/")  # from a kind; inside the file


def name_of(ref: str) -> str:
    for prefix in PREFIXES:
        if ref.startswith(prefix):
            return ref.removeprefix(prefix)
    raise ValueError(f"unexpected $ref {ref!r}")


def refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(refs(v) for v in node)) if node else set()
    return set()


def main(wheel: Path) -> None:
    source = wheel / "kubernetes_validate" / "kubernetes-json-schema" / f"{VERSION}-local-strict"
    out = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "schemas" / VERSION
    out.mkdir(parents=True, exist_ok=True)
    definitions = json.loads((source / "_definitions.json").read_text())
    wanted: set[str] = set()
    todo: list[str] = []
    for kind in KINDS:
        text = (source / f"{kind}.json").read_text()
        (out / f"{kind}.json").write_text(text)
        todo += [name_of(r) for r in refs(json.loads(text))]
    while todo:
        name = todo.pop()
        if name in wanted:
            continue
        wanted.add(name)
        todo += [name_of(r) for r in refs(definitions["$defs"][name])]
    cut = {**definitions, "$defs": {k: definitions["$defs"][k] for k in sorted(wanted)}}
    (out / "_definitions.json").write_text(json.dumps(cut, indent=2) + "\n")
    print(f"{len(KINDS)} kinds, {len(wanted)} of {len(definitions['$defs'])} definitions")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
