"""The core both sides share: errors, fleet spec models and loading, the firmware artifact.

It imports only the standard library, pydantic and PyYAML, so the delivery worker can use
it without any build-side dependency. The layers above it are listed in pyproject.toml
(``[tool.importlinter]``) and explained in docs/architecture.md.
"""
