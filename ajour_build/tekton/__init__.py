"""Tekton v1: manifest validation (and, later, the cluster backend)."""
