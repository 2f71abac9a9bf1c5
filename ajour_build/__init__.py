"""Ajour build side: fleet specs, Tekton v1 rendering, builds and publishing.

This package's top level stays import-light: ``delivery`` imports
``ajour_build.core.spec`` (pydantic and PyYAML only), never the rendering code.
"""

__version__ = "0.1.0"
