"""Plain YAML scalars: how fleet files read them, shared by both YAML readers.

PyYAML follows YAML 1.1, where ``0.10`` is the float 0.1 and ``2024-01-01`` a date. Fleet
specs carry versions and refs, so a plain number keeps the text it was written as
(:class:`YamlInt` / :class:`YamlFloat` carry ``raw``), and timestamps are never built: the
implicit resolvers are PyYAML's safe ones without the timestamp.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

STR = "tag:yaml.org,2002:str"
_CONSTRUCTED = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:null",
}


class YamlInt(int):
    """An int read from a plain YAML scalar; ``raw`` is the text as written."""

    raw: str


class YamlFloat(float):
    """A float read from a plain YAML scalar; ``raw`` is the text as written."""

    raw: str


# first character -> [(tag, pattern)], as yaml.resolver.Resolver keeps them
IMPLICIT_RESOLVERS: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CONSTRUCTOR = yaml.constructor.SafeConstructor()


class Unsupported(Exception):
    """A plain scalar that only the full loader may read (it resolves to another tag)."""


def wrap(value: Any, raw: str) -> Any:
    """``value``, built from the plain scalar ``raw``, with numbers keeping their text."""
    if isinstance(value, int) and not isinstance(value, bool):
        wrapped_int = YamlInt(value)
        wrapped_int.raw = raw
        return wrapped_int
    if isinstance(value, float):
        wrapped_float = YamlFloat(value)
        wrapped_float.raw = raw
        return wrapped_float
    return value


_WILDCARD = IMPLICIT_RESOLVERS.get(None, [])

# Plain scalars that are text as written, whatever the resolvers: a first character no
# resolver starts with, then no space, quote, comment, colon or bracket. Matching one
# spares the resolvers (a fast reader's shortcut; "(?!)" never matches, if they change).
_SIMPLE_FIRST = "".join(
    c for c in "ABCDEGHIJKLMPQRSUVWXZabcdeghijklmpqrsuvwxz_/$(^" if c not in IMPLICIT_RESOLVERS
)
SIMPLE_TEXT = (
    rf"[{re.escape(_SIMPLE_FIRST)}][A-Za-z0-9_./@$()^~+=%-]*"
    if _SIMPLE_FIRST and not _WILDCARD
    else "(?!)"
)


def resolve_tag(text: str) -> str:
    """The tag PyYAML's safe resolver gives the plain scalar ``text`` (none: str)."""
    candidates = IMPLICIT_RESOLVERS.get(text[0] if text else "")
    if candidates is None and not _WILDCARD:
        return STR  # most text: no resolver starts with its first character
    for tag, pattern in (candidates or []) + _WILDCARD:
        if pattern.match(text):
            return tag
    return STR


def plain(text: str) -> Any:
    """The value of the plain scalar ``text``, exactly as the full loader builds it.

    Raises :class:`Unsupported` for scalars of any other tag (merge ``<<``, ``=``).
    """
    tag = resolve_tag(text)
    if tag == STR:
        return text
    if tag not in _CONSTRUCTED:
        raise Unsupported(text)
    try:
        value = _CONSTRUCTOR.yaml_constructors[tag](_CONSTRUCTOR, yaml.ScalarNode(tag, text))
    except Exception as exc:  # what the full loader does then is its own business
        raise Unsupported(text) from exc
    return wrap(value, text)
