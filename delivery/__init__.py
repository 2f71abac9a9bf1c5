"""Ajour delivery: serves firmware to devices (embedded-update over MQTT and HTTP).

Lean by contract: no jinja2, no kubernetes client, no build-side modules (CI enforces it
with import-linter and a runtime import test).
"""

__version__ = "0.1.0"
