"""Builder images: the catalog under ``builder-images/`` and building the images."""
