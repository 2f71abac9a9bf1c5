"""delivery stays lean: importing it never loads build-side dependencies."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = [
    "jinja2",
    "jsonschema",
    "git",
    "rich",
    "kubernetes",
    "fastapi",
    "sqlalchemy",
    "uvicorn",
    "ajour_build.render",
    "ajour_build.tekton",
    "ajour_build.plan",
    "ajour_build.cli",
    "ajour_build.service",
    "ajour_build.console",
]


def test_importing_delivery_loads_no_build_dependencies() -> None:
    code = (
        "import sys, delivery, delivery.cli, delivery.errors\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


def test_the_check_itself_can_fail() -> None:
    code = (
        "import sys, ajour_build.cli\n"
        f"bad = [m for m in {FORBIDDEN!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert "jinja2" in result.stdout
