"""Which rollout store ``--rollout-db`` / ``delivery.rollout_db`` names.

A file path (or ``":memory:"``) is a SQLite file; ``postgresql://`` or ``postgres://`` is a
PostgreSQL database (``delivery/rollout_store_pg.py``, imported only then, so workers on
SQLite never load psycopg). Any other ``scheme://`` is refused.
"""

from __future__ import annotations

import re

from ajour_build.core.spec.fields import redact_uri
from delivery.errors import DeliveryError
from delivery.rollout_store import RolloutStore, SqliteRolloutStore

POSTGRES_SCHEMES = ("postgresql", "postgres")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def open_rollout_db(location: str) -> RolloutStore:
    """The store at ``location``: a SQLite file path or a ``postgresql://`` DSN."""
    found = _SCHEME.match(location)
    if found is None:
        return SqliteRolloutStore(location)
    scheme = found.group(1)
    if scheme.lower() in POSTGRES_SCHEMES:
        from delivery.rollout_store_pg import PostgresRolloutStore

        return PostgresRolloutStore(scheme.lower() + location[len(scheme) :])  # libpq: lower
    raise DeliveryError(
        f"rollout database {redact_uri(location)!r}: unknown scheme {scheme!r}; expected a"
        " SQLite file path (/var/lib/ajour/rollouts.db) or a PostgreSQL URL"
        " (postgresql://USER@HOST:5432/DATABASE)"
    )
