"""The build server as ``ajour-build serve`` runs it: the service's app plus the console.

The service (``ajour_build.service``) knows nothing of the console; the console builds on
the service. This module sits above both and puts them together.
"""

from __future__ import annotations

from fastapi import FastAPI

from ajour_build.console.routes import mount
from ajour_build.service.app import assemble
from ajour_build.service.app import create_app as service_app
from ajour_build.service.state import Service

__all__ = ["assemble", "create_app"]


def create_app(service: Service, console: bool = True) -> FastAPI:
    """The service's app with the console mounted at ``/`` (unless ``console`` is False)."""
    app = service_app(service)
    if console:
        mount(app)
    return app
