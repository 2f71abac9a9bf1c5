"""Rendering Tekton v1 manifests from a build plan (jinja2, then parse, validate, dump)."""
