"""The local runner: clone, build in a builder image (podman/docker) or on the host, collect."""
