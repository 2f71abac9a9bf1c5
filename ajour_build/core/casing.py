"""The key casing of every ``--json`` output and API body: camelCase, the REST API's.

Models whose fields are snake_case in Python are turned into it when printed. Keys that are
data rather than field names are kept as they are: OCI ``annotations`` (by name, see
:data:`DATA_MAPS`), and maps a caller builds itself (a map from version to count, say),
where it applies :func:`camel_keys` only to the records.
"""

from __future__ import annotations

import re
from typing import Any

_SNAKE = re.compile(r"_([a-z0-9])")
DATA_MAPS = frozenset({"annotations"})  # keys whose value is a map of data, kept as it is


def camel(name: str) -> str:
    """``cache_key`` -> ``cacheKey``; a name without an underscore is left as it is."""
    return _SNAKE.sub(lambda m: m[1].upper(), name)


def camel_keys(data: Any) -> Any:
    """``data`` (JSON-like) with every mapping key in camelCase, recursively."""
    if isinstance(data, dict):
        return {
            camel(k) if isinstance(k, str) else k: v if k in DATA_MAPS else camel_keys(v)
            for k, v in data.items()
        }
    if isinstance(data, list | tuple):
        return [camel_keys(v) for v in data]
    return data
