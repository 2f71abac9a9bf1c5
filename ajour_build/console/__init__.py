"""The build service's web console: server-rendered pages over builds, devices and rollouts.

Mounted by ``ajour_build.server.create_app(service, console=True)`` (see
:func:`ajour_build.console.routes.mount`).
Pages are jinja2 templates with autoescaping on; a small script polls fragments of the same
pages to keep them live, and every read view works without it.
"""
