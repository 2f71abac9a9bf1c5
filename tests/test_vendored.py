"""Vendored reference material: documented, complete, and equal to ../shared where it exists.

The suite reads only the vendored copies, so a clone stands alone. The ``reference`` tests
compare each vendored file with its reference copy next to the checkout (``../shared``) and
skip when there is none; ``.ci/run`` runs them on their own with ``pytest -m reference``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ajour_build.tekton.manifest import SCHEMA_FILES
from tests.conftest import REPO, VENDORED, reference_copy, vendored

DATA = REPO / "tests" / "data"
TEKTON = REPO / "ajour_build" / "schemas" / "tekton"


@pytest.mark.reference
@pytest.mark.parametrize("relpath", sorted(VENDORED))
def test_vendored_file_equals_its_reference_copy(relpath: str) -> None:
    assert vendored(relpath).read_bytes() == reference_copy(relpath).read_bytes(), relpath


def test_every_vendored_file_is_listed_and_nothing_else_is_there() -> None:
    on_disk = {str(p.relative_to(REPO)) for p in DATA.rglob("*") if p.is_file()}
    on_disk |= {str(p.relative_to(REPO)) for p in TEKTON.glob("*.json")}
    on_disk -= {"tests/data/README.md"}
    assert on_disk == set(VENDORED)
    assert {f"ajour_build/schemas/tekton/{name}" for name in SCHEMA_FILES.values()} <= on_disk


@pytest.mark.parametrize(
    ("readme", "root"),
    [(DATA / "README.md", DATA), (TEKTON / "README.md", TEKTON)],
    ids=["tests-data", "tekton-schemas"],
)
def test_each_vendored_file_is_documented(readme: Path, root: Path) -> None:
    """Its README names each file (in backquotes, relative to it) and gives the licences."""
    text = readme.read_text(encoding="utf-8")
    assert "licence" in text.lower()
    for relpath in VENDORED:
        path = REPO / relpath
        if path.is_relative_to(root):
            assert f"`{path.relative_to(root)}`" in text, (readme, relpath)


def test_ci_runs_the_suite_without_reference_material_then_the_reference_tests() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "checkout-index --all" in ci and "./scripts/test" in ci
    assert ci.index("./scripts/test") < ci.index("-m reference")
