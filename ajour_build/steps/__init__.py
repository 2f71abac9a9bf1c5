"""The steps of a build. Tekton's Tasks call them through ``ajour-build step …`` in the
tools image; the local runner calls the same functions directly."""
