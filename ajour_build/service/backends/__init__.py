"""Where the service runs builds: ``local`` (embedded default) or ``tekton`` (Kubernetes)."""
