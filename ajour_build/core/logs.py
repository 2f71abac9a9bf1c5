"""Logging set-up for the command-line tools (the only place that configures logging)."""

from __future__ import annotations

import logging
import sys


def configure_logging(debug: bool) -> None:
    """Warnings and errors to stderr (everything with ``--debug``), one line each."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
