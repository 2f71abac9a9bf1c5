"""The layers are named and enforced: import-linter's contracts, and what each side may load.

The contracts live in pyproject.toml (``[tool.importlinter]``); the allow-lists of outside
packages for the core and for delivery in ``[tool.ajour.imports]``. These tests check that
every module is placed in a layer, that importing the core or delivery in a fresh
interpreter loads nothing else, and that the checks themselves fail on a violation.
"""

from __future__ import annotations

import json
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import ajour_build
from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
ALLOWED: dict[str, list[str]] = PYPROJECT["tool"]["ajour"]["imports"]

# Run in a fresh interpreter: import every module under the given packages, then report
# which ajour_build modules and which outside top-level packages got loaded.
PROBE = """
import importlib, json, pkgutil, sys
for name in sys.argv[1:]:
    pkg = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(pkg, "__path__", []), name + "."):
        if not info.name.endswith(".__main__"):  # that one runs the CLI
            importlib.import_module(info.name)
# modules without a spec are no imports (e.g. Cython's runtime state module)
tops = {n.split(".")[0] for n, m in list(sys.modules.items()) if getattr(m, "__spec__", None)}
print(json.dumps({
    "ajour_build": sorted(m for m in sys.modules if m.startswith("ajour_build")),
    "outside": sorted(t for t in tops
                      if t not in sys.stdlib_module_names and not t.startswith("_")
                      and t not in ("ajour_build", "delivery")),
}))
"""


def probe(*packages: str) -> dict[str, list[str]]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *packages],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def contract(contract_id: str) -> dict[str, Any]:
    for c in PYPROJECT["tool"]["importlinter"]["contracts"]:
        if c.get("id") == contract_id:
            found: dict[str, Any] = c
            return found
    raise AssertionError(f"no import-linter contract {contract_id!r} in pyproject.toml")


def test_every_build_module_is_placed_in_a_layer() -> None:
    layers = contract("build-layers")["layers"]
    placed = [name.strip() for layer in layers for name in layer.split("|")]
    assert len(placed) == len(set(placed)), "a module is in two layers"
    modules = {m.name for m in pkgutil.iter_modules(ajour_build.__path__)}
    assert not modules - set(placed), (
        f"modules in no layer: {sorted(modules - set(placed))}; place each in the"
        " 'build-layers' contract in pyproject.toml (and docs/architecture.md)"
    )
    assert not set(placed) - modules, f"layers name missing modules: {set(placed) - modules}"


def outside_is_allowed(loaded: list[str], allowed: list[str]) -> list[str]:
    return [m for m in loaded if m not in allowed]


def test_the_core_loads_only_the_standard_library_pydantic_and_yaml() -> None:
    loaded = probe("ajour_build.core")
    assert loaded["ajour_build"], "the probe imported nothing"
    assert [m for m in loaded["ajour_build"] if not m.startswith("ajour_build.core")] == [
        "ajour_build"
    ]
    assert outside_is_allowed(loaded["outside"], ALLOWED["core"]) == []


def test_delivery_loads_only_the_core_of_the_build_side() -> None:
    loaded = probe("delivery")
    build_side = [m for m in loaded["ajour_build"] if m != "ajour_build"]
    assert build_side, "delivery uses the core: the probe should have loaded it"
    assert [m for m in build_side if not m.startswith("ajour_build.core")] == []
    assert outside_is_allowed(loaded["outside"], ALLOWED["core"] + ALLOWED["delivery"]) == []


def test_the_probe_sees_build_side_dependencies() -> None:
    loaded = probe("ajour_build.cli")
    assert {"jinja2", "rich"} <= set(outside_is_allowed(loaded["outside"], ALLOWED["core"]))
    assert any(m.startswith("ajour_build.render") for m in loaded["ajour_build"])


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    lint = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(lint), "--no-cache"], capture_output=True, text=True, cwd=root, env={"PATH": ""}
    )


def scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "scratch"
    for name in ("ajour_build", "delivery"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_lint_imports_refuses_an_upward_import(tmp_path: Path) -> None:
    root = scratch_copy(tmp_path)
    assert lint_imports(root).returncode == 0, "the unchanged copy must pass"
    errors = root / "ajour_build" / "core" / "errors.py"
    errors.write_text(errors.read_text() + "\nimport ajour_build.service.records  # upward\n")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "BROKEN" in result.stdout and "ajour_build.core.errors" in result.stdout


def test_lint_imports_refuses_delivery_importing_the_build_side(tmp_path: Path) -> None:
    root = scratch_copy(tmp_path)
    worker = root / "delivery" / "worker.py"
    worker.write_text(worker.read_text() + "\nimport ajour_build.plan  # not the core\n")
    result = lint_imports(root)
    assert result.returncode == 1
    assert "delivery imports only the core" in result.stdout
