"""The build service: git-push webhooks, REST API, build backends (local, Tekton)."""
