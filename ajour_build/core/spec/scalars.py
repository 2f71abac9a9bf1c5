"""YAML scalars as fleet files read them, shared by both YAML readers.

PyYAML follows YAML 1.1, where ``0.10`` is the float 0.1 and ``2024-01-01`` a date. Fleet
specs carry versions and refs, so a plain number keeps the text it was written as
(:class:`YamlInt` / :class:`YamlFloat` carry ``raw``), and timestamps are never built: the
implicit resolvers are PyYAML's safe ones without the timestamp.

:class:`Values` reads the value of one line for the fast reader (:mod:`.fastyaml`): a
plain or quoted scalar, or a flow collection of scalars on that line (``{name: x}``,
``["--board", x]``), exactly as the full loader would, or raises :class:`Unsupported`.
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


_KEY = r"""[A-Za-z0-9_][A-Za-z0-9_./-]*|"[^"\\\n]*"|'(?:[^'\n]|'')*'"""
_PLAIN = re.compile(r"(?:[A-Za-z0-9_./~+=$()^]|-(?=[^ ]))(?:[^:\[\]{}]|:(?=[^ ]))*")
_DOUBLE = re.compile(r'"([^"\\]*)"(?: *| +#.*)')
_SINGLE = re.compile(r"'((?:[^']|'')*)'(?: *| +#.*)")
_EMPTY = re.compile(r"(\{\}|\[\])(?: *| +#.*)")
# a scalar inside a flow collection: quoted, or plain without spaces, colons or indicators
_FLOW_TEXT = (
    r""""[^"\\\n]*"|'(?:[^'\n]|'')*'"""
    r"|(?:[A-Za-z0-9_./~+=$()^]|-(?=[A-Za-z0-9_.-]))[A-Za-z0-9_./~+=$()^@%-]*"
)
_FLOW_ITEM = rf"(?:{_FLOW_TEXT})"
_FLOW_ENTRY = rf"(?:{_KEY}): +(?:{_FLOW_TEXT})"
_FLOW_SEQUENCE = re.compile(rf"\[ *({_FLOW_ITEM}(?: *, *{_FLOW_ITEM})*) *\](?: *| +#.*)")
_FLOW_MAPPING = re.compile(rf"\{{ *({_FLOW_ENTRY}(?: *, *{_FLOW_ENTRY})*) *\}}(?: *| +#.*)")
_ITEMS = re.compile(rf" *({_FLOW_TEXT}) *(?:,|$)")
_ENTRIES = re.compile(rf" *({_KEY}): +({_FLOW_TEXT}) *(?:,|$)")
MAX_REMEMBERED = 4096  # scalar texts whose values are shared (names that recur come first)


class Values:
    """One line's value, read as the full loader reads it (equal scalars share one value)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.keys: dict[str, str] = {}

    def scalar(self, rest: str) -> Any:
        """The value written as ``rest`` (a line after ``key:`` or ``-``, comment included)."""
        value = self.values.get(rest)
        if value is not None:
            return value
        first = rest[0]
        if first == '"' or first == "'":
            value = self._quoted(rest, (_DOUBLE if first == '"' else _SINGLE).fullmatch(rest))
        elif first == "{" or first == "[":
            return self._flow(rest)  # a new one each time: it is mutable
        else:
            cut = rest.find(" #")
            value = self._plain((rest if cut < 0 else rest[:cut]).rstrip(" "), _PLAIN)
        if value is not None and len(self.values) < MAX_REMEMBERED:
            self.values[rest] = value
        return value

    def key(self, raw: str) -> str:
        """The key written as ``raw`` (plain or quoted), as the full loader keys a mapping."""
        name = self.keys.get(raw)
        if name is not None:
            return name
        if raw[0] == '"':
            name = raw[1:-1]
        elif raw[0] == "'":
            name = raw[1:-1].replace("''", "'")
        else:
            plain(raw)  # the full loader builds the key, then uses its text
            name = raw
        self.keys[raw] = name
        return name

    @staticmethod
    def _quoted(rest: str, match: re.Match[str] | None) -> str:
        if match is None:
            raise Unsupported(rest)  # escapes, or more after the closing quote
        return match.group(1) if rest[0] == '"' else match.group(1).replace("''", "'")

    @staticmethod
    def _plain(text: str, pattern: re.Pattern[str]) -> Any:
        if pattern.fullmatch(text) is None:
            raise Unsupported(text)
        return plain(text)

    def _flow(self, rest: str) -> Any:
        if _EMPTY.fullmatch(rest) is not None:
            return {} if rest[0] == "{" else []
        if rest[0] == "[":
            match = _FLOW_SEQUENCE.fullmatch(rest)
            if match is None:
                raise Unsupported(rest)
            return [self._item(text) for text in _ITEMS.findall(match.group(1))]
        match = _FLOW_MAPPING.fullmatch(rest)
        if match is None:
            raise Unsupported(rest)
        mapping: dict[str, Any] = {}
        for raw, text in _ENTRIES.findall(match.group(1)):
            name = self.key(raw)
            if name in mapping:
                raise Unsupported(rest)  # the full loader names the duplicate
            mapping[name] = self._item(text)
        return mapping

    def _item(self, text: str) -> Any:
        if text[0] == '"' or text[0] == "'":
            return text[1:-1] if text[0] == '"' else text[1:-1].replace("''", "'")
        return plain(text)
