"""The one deterministic YAML dumper for everything Ajour writes.

Keys keep their insertion order and are plain when that is unambiguous; every string
value is double-quoted (multi-line ones use a literal block), so a version such as
``"0.10"`` can never be read back as the float 0.1 by a YAML 1.1 parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import yaml

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_STR = "tag:yaml.org,2002:str"


if TYPE_CHECKING:
    _BASE = yaml.SafeDumper
else:  # libyaml's emitter when available (same output, faster); representers stay ours
    _BASE = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BASE):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: _Dumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value and value == value.rstrip(" ") else '"'
    return dumper.represent_scalar(_STR, value, style=style)


def _key(dumper: _Dumper, key: str) -> yaml.ScalarNode:
    resolved: str = dumper.resolve(yaml.ScalarNode, key, (True, False))  # type: ignore[no-untyped-call]
    plain = _PLAIN_KEY.fullmatch(key) and resolved == _STR
    return yaml.ScalarNode(_STR, key, style=None if plain else '"')


def _mapping(dumper: _Dumper, data: Mapping[Any, Any]) -> yaml.MappingNode:
    pairs = []
    for key, value in data.items():
        if not isinstance(key, str):
            raise TypeError(f"mapping keys must be strings, got {key!r}")
        pairs.append((_key(dumper, key), dumper.represent_data(value)))
    return yaml.MappingNode("tag:yaml.org,2002:map", pairs, flow_style=False)


_Dumper.add_representer(str, _str)
_Dumper.add_representer(dict, _mapping)


def dump(data: Any) -> str:
    """One YAML document."""
    return yaml.dump(
        data,
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 30,
        explicit_start=False,
    )


def dump_all(documents: Iterable[Any]) -> str:
    """A multi-document stream, each document introduced by ``---``."""
    return "".join("---\n" + dump(doc) for doc in documents)
