"""The firmware artifact in OCI form (format v1) and reading it back.

Lean on purpose (standard library and pydantic only): ``delivery`` reads artifacts with it.
"""
