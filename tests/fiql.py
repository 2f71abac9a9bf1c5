"""A small FIQL/RSQL reader for the FAKE hawkBit: enough to evaluate rollout target filters.

The grammar is RSQL's (the parser hawkBit uses): comparisons ``selector==argument`` or
``!=``, joined by ``;`` (AND) and ``,`` (OR), with parentheses; AND binds tighter. An
argument is unquoted (no reserved character) or quoted with ``"`` or ``'``, where a
backslash escapes the next character. ``*`` in an unquoted or quoted argument is a
wildcard, as in hawkBit. Fields: ``controllerId`` (any case) and ``metadata.<key>``.
Anything else raises :class:`FiqlError` (a syntax or field error) or
:class:`FiqlUnsupported` (valid RSQL the fake does not implement).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

RESERVED = set("\"'();,=!~<> ")
OPERATOR = re.compile(r"==|!=|=[a-z]+=|<=|>=|<|>")
Target = tuple[str, Mapping[str, str]]  # controllerId, metadata
Matcher = Callable[[Target], bool]


class FiqlError(ValueError):
    """The filter is not RSQL, or names a field hawkBit does not have."""


class FiqlUnsupported(ValueError):
    """Valid RSQL that this fake does not evaluate."""


@dataclass
class _Reader:
    text: str
    pos: int = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def fail(self, expected: str) -> FiqlError:
        got = repr(self.text[self.pos :][:10]) if self.pos < len(self.text) else "the end"
        return FiqlError(f"{expected} expected at {self.pos} of {self.text!r}, got {got}")

    def unreserved(self, what: str) -> str:
        start = self.pos
        while self.peek() and self.peek() not in RESERVED:
            self.pos += 1
        if self.pos == start:
            raise self.fail(what)
        return self.text[start : self.pos]

    def argument(self) -> str:
        """The argument's text, unquoted and unescaped."""
        quote = self.peek()
        if quote not in ("'", '"'):
            return self.unreserved("an argument")
        self.pos += 1
        out: list[str] = []
        while True:
            char = self.peek()
            if not char:
                raise self.fail(f"a closing {quote}")
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char == "\\":
                if not self.peek():
                    raise self.fail("a character after the backslash")
                char = self.peek()
                self.pos += 1
            out.append(char)

    def or_expr(self) -> Matcher:
        parts = [self.and_expr()]
        while self.peek() == ",":
            self.pos += 1
            parts.append(self.and_expr())
        return lambda t: any(p(t) for p in parts)

    def and_expr(self) -> Matcher:
        parts = [self.constraint()]
        while self.peek() == ";":
            self.pos += 1
            parts.append(self.constraint())
        return lambda t: all(p(t) for p in parts)

    def constraint(self) -> Matcher:
        if self.peek() == "(":
            self.pos += 1
            inner = self.or_expr()
            if self.peek() != ")":
                raise self.fail("')'")
            self.pos += 1
            return inner
        field = self.unreserved("a field")
        found = OPERATOR.match(self.text, self.pos)
        if found is None:
            raise self.fail("a comparison operator")
        op, self.pos = found.group(), found.end()
        if op not in ("==", "!="):
            raise FiqlUnsupported(f"the fake does not implement the operator {op!r}")
        value = self.argument()
        return _comparison(field, op, value)


def _comparison(field: str, op: str, value: str) -> Matcher:
    regex = re.compile(".*".join(map(re.escape, value.split("*"))), re.DOTALL)
    if field.lower() == "controllerid":

        def read(t: Target) -> str | None:
            return t[0]

    elif field.startswith("metadata.") and len(field.split(".")) == 2 and field[9:]:
        key = field[9:]

        def read(t: Target) -> str | None:
            return t[1].get(key)

    elif field.split(".")[0].lower() in ("name", "tag", "attribute", "updatestatus"):
        raise FiqlUnsupported(f"the fake does not evaluate the field {field!r}")
    else:
        raise FiqlError(f"{field!r} is not a target field (controllerId, metadata.<key>, ...)")

    def matches(t: Target) -> bool:
        got = read(t)
        if got is None:  # hawkBit: a missing map key matches neither == nor !=
            return False
        return (regex.fullmatch(got) is not None) == (op == "==")

    return matches


def parse(text: str) -> Matcher:
    """A predicate over (controllerId, metadata) for the filter ``text``."""
    reader = _Reader(text)
    matcher = reader.or_expr()
    if reader.pos != len(text):
        raise reader.fail("';', ',' or the end")
    return matcher
