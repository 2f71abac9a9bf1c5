"""A fast reader for the plain block-style YAML that large fleet files are written in.

PyYAML builds every value in Python, through events and nodes, even with libyaml: about
150 µs per Device document on the development machine. Fleet files are almost always
plain block YAML, one ``key: value`` or ``- item`` per line, and most of their documents
have the same lines but for the values. This module reads such a file into exactly the
values the full loader builds (plain scalars are resolved with the same resolvers,
:mod:`.scalars`, so ``0.10`` keeps its text and dates stay text), in two ways:

* line by line, with a stack of the open mappings and sequences (:meth:`_Reader.parse`);
* by shape: a document read line by line becomes a template, a regular expression of its
  lines with a group for each value, and the next documents with the same lines are
  matched whole and filled in (:class:`_Template`). A document the template matches is
  the one the line reader would read (same lines but for the values, which go through
  the same checks), so the result is the same, several times faster.

It reads a strict subset and gives up (:func:`read` returns None) on anything else, and
the full loader then reads the whole file: non-ASCII text, tabs, control characters or
``\\r``; flow collections that are nested, span lines or hold plain scalars with spaces
(one line of ``{name: x, application: y}`` or ``["--board", x]`` is read, by
:class:`.scalars.Values`); anchors, aliases and tags; block and multi-line scalars;
escapes in double-quoted scalars; ``- -`` nesting, directives, ``...``; duplicate keys;
and every indentation or syntax error, which the full loader reports with its position.
Giving up is always safe: this reader only exists for speed.

It records positions (line within the document, column) of the values at most two levels
deep: the resource, its sections, ``metadata.name``, ``metadata.application``, list items.
Deeper ones are found by the full loader when a problem has to be reported.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from ajour_build.core.spec.scalars import SIMPLE_TEXT, Unsupported, Values

PathKey = tuple[str | int, ...]
Position = tuple[int, int]  # line within the document (0-based), column (1-based)
Marks = dict[PathKey, Position]
ReadDocument = tuple[int, Any, int, Marks]  # index, data, first line (1-based), positions

MARK_DEPTH = 2
MAX_TEMPLATES = 64

_LINES = re.compile(
    r"^( *)(-(?: +|$))?"
    r"(?:([A-Za-z0-9_][A-Za-z0-9_./-]*|\"[^\"\\\n]*\"|'(?:[^'\n]|'')*'):(?: +|$))?"
    r"(.*)$",
    re.MULTILINE,
)
_SEPARATOR = re.compile(r"^---$", re.MULTILINE)
_FORBIDDEN = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
_NEXT = r"(?:(?=\n---(?:\n|\Z))|\Z)"  # what follows a document: a separator, or the end
# a value slot of a template: simple text, double-quoted text without escapes (both as
# written), or anything else, which the scalar checks then read
_VALUE = rf'(?:({SIMPLE_TEXT})|"([^"\\\n]*)"(?: *| +#.*)|([^#\s].*))'


GiveUp = Unsupported  # the text is outside the subset: the full loader reads it


def read(text: str, max_nodes: int, max_depth: int) -> list[ReadDocument] | None:
    """Every document as ``(index, data, first line, positions)``; None: not plain YAML."""
    try:
        return list(iterate(text, max_nodes, max_depth))
    except GiveUp:
        return None


def iterate(text: str, max_nodes: int, max_depth: int) -> Iterator[ReadDocument]:
    """The documents of :func:`read`, each read when it is reached (a large file's values
    are never all in memory at once). Raises :class:`GiveUp`, possibly after some
    documents: those are the full loader's first documents too."""
    if not text.isascii() or _FORBIDDEN.search(text) is not None:
        raise GiveUp
    return _Reader(max_nodes, max_depth).documents(text)


class _Slot:
    """Where a template's value ``index`` goes."""

    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _expression(node: Any) -> str:
    """Python source that builds ``node`` from a document's match groups ``g``.

    Value ``i`` is ``g[3i]`` when it is simple text (:data:`.scalars.SIMPLE_TEXT`),
    ``g[3i + 1]`` when it is double-quoted text without escapes, else ``s(g[3i + 2])``,
    the scalar as the line reader reads it. Only ``repr`` of text keys,
    item lists, group indexes and ``None`` are written: no text of the document becomes
    code, so compiling it is as safe as building the data by hand (and about ten times
    faster per document than walking the skeleton).
    """
    kind = type(node)
    if kind is dict:
        return "{" + ", ".join(f"{key!r}: {_expression(v)}" for key, v in node.items()) + "}"
    if kind is list:
        return "[" + ", ".join(_expression(item) for item in node) + "]"
    if kind is _Slot:
        simple, quoted, other = 3 * node.index, 3 * node.index + 1, 3 * node.index + 2
        return (
            f"(g[{simple:d}] if g[{simple:d}] is not None else g[{quoted:d}]"
            f" if g[{quoted:d}] is not None else s(g[{other:d}]))"
        )
    if node is None:
        return "None"
    raise TypeError(f"not a skeleton node: {kind.__name__}")  # pragma: no cover


Build = Callable[[tuple[str | None, ...], Callable[[str], Any]], Any]


def _builder(skeleton: Any) -> Build:
    source = f"lambda g, s: {_expression(skeleton)}"
    code = compile(source, "<fleet template>", "eval")
    built: Build = eval(code, {"__builtins__": {}})
    return built


@dataclass(frozen=True)
class _Template:
    """Documents with the same lines but for the values (see the module's docstring)."""

    pattern: re.Pattern[str]  # the document's lines, then the next separator or the end
    build: Build
    marks: Marks
    lines: int

    @classmethod
    def learn(cls, text: str, reader: _Reader) -> _Template | None:
        parts: list[str] = []
        for line, (indent, dash, key, rest) in zip(
            text.split("\n"), _LINES.findall(text), strict=True
        ):
            if rest and rest[0] != "#" and (key or dash):  # a value: a slot
                head = f"{indent}{dash}{key}:" if key else f"{indent}{dash}"
                parts.append(re.escape(head) + (" +" if key else "") + _VALUE)
            else:
                parts.append(re.escape(line))
        count = iter(range(1 << 30))
        _, skeleton, marks = reader.parse(text, lambda _rest: _Slot(next(count)))
        try:
            pattern = re.compile("\n".join(parts) + _NEXT)
            return cls(pattern, _builder(skeleton), marks, text.count("\n") + 1)
        except (SyntaxError, RecursionError, MemoryError, re.error):
            return None  # too deep or too large to be worth it: read such documents by line

    def read(self, text: str, scalar: Callable[[str], Any]) -> Any:
        """The document's data, or None when ``text`` is not of this shape."""
        match = self.pattern.fullmatch(text)
        return None if match is None else self.build(match.groups(), scalar)


class _Reader:
    def __init__(self, max_nodes: int, max_depth: int) -> None:
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.values = Values()
        self.scalar, self.key = self.values.scalar, self.values.key
        self.templates: dict[int, list[_Template]] = {}  # by the number of lines
        self.learned = 0

    def documents(self, text: str) -> Iterator[ReadDocument]:
        """Every document: between ``---`` lines (the first one may have none before it)."""
        scalar, end, index = self.scalar, len(text), 0
        sep = _SEPARATOR.search(text)
        found, last = self._read(text if sep is None else text[: max(sep.start() - 1, 0)], 1)
        if found is not None:
            yield (index, *found)
            index += 1
        if sep is None:
            return
        first = text.count("\n", 0, sep.start()) + 2  # the line after the separator
        pos = sep.end() + 1
        while pos <= end:
            if last is not None:  # most documents have the shape of the one before
                match = last.pattern.match(text, pos)
                if match is not None:
                    try:
                        data = last.build(match.groups(), scalar)
                    except GiveUp:
                        data = None  # a value the line reader may read otherwise
                    if data is not None:
                        yield index, data, first, last.marks
                        index += 1
                        if match.end() == end:
                            return
                        first += last.lines + 1
                        pos = match.end() + 5  # after the "\n---\n" the pattern looked at
                        continue
            sep = _SEPARATOR.search(text, pos)
            chunk_end = end if sep is None else max(sep.start() - 1, pos)
            found, last = self._read(text[pos:chunk_end], first, explicit=True)
            yield (index, *(found or (None, first, {})))
            index += 1
            if sep is None:
                return
            first += text.count("\n", pos, sep.start()) + 1
            pos = sep.end() + 1
        yield index, None, first - 1, {}  # a "---" that ends the text

    def _read(
        self, chunk: str, first: int, explicit: bool = False
    ) -> tuple[tuple[Any, int, Marks] | None, _Template | None]:
        """``chunk`` read with another template, or by line (learning a template from it):
        ``((data, first line, positions) or None if it is no document, template)``."""
        lines = chunk.count("\n")
        for template in self.templates.get(lines, ()):
            try:
                data = template.read(chunk, self.scalar)
            except GiveUp:
                break
            if data is not None:
                return (data, first, template.marks), template
        opened, data, marks = self.parse(chunk, self.scalar)
        found = (data, first, marks) if opened or explicit else None
        if data is None or self.learned >= MAX_TEMPLATES:
            return found, None
        self.learned += 1
        learned = _Template.learn(chunk, self)
        if learned is not None:
            self.templates.setdefault(lines, []).append(learned)
        return found, learned

    def parse(  # noqa: C901 - one tight loop over the lines
        self, text: str, scalar: Callable[[str], Any]
    ) -> tuple[bool, Any, Marks]:
        """One document, line by line: ``(any content, data, positions)``."""
        root: Any = None
        stack: list[list[Any]] = []  # [column, container, is a mapping, indentless, path]
        pending: tuple[Any, Any, int, PathKey | None] | None = None
        marks: Marks = {}
        count = 0
        for number, (indent, dash, key, rest) in enumerate(_LINES.findall(text)):
            if not dash and not key:
                if not rest or rest[0] == "#":
                    continue  # blank, or a comment
                raise GiveUp  # a scalar on a line of its own, "...", a directive, …
            count += 2 if key else 1  # a key and its value, or an item
            if count >= self.max_nodes or len(stack) > self.max_depth:
                raise GiveUp  # the full loader says what is too large
            col = len(indent)
            inner = col + len(dash)  # where the key or value of this line starts
            if pending is not None:
                slot, at, slot_col, slot_path = pending
                pending = None
                if col > slot_col or (col == slot_col and dash and type(slot) is dict):
                    block: Any = [] if dash else {}
                    slot[at] = block
                    if slot_path is not None and type(at) is int:
                        marks[slot_path] = (number, col + 1)  # an item is where it starts
                    if slot_path is not None and len(slot_path) >= MARK_DEPTH:
                        slot_path = None
                    stack.append([col, block, not dash, col == slot_col, slot_path])
            elif not stack:
                root = [] if dash else {}
                marks[()] = (number, col + 1)
                stack.append([col, root, not dash, False, ()])
            top = stack[-1]
            while top[0] > col or (top[3] and top[0] == col and not dash):
                stack.pop()
                if not stack:
                    raise GiveUp  # left of the document's first line
                top = stack[-1]
            if top[0] != col:
                raise GiveUp  # a continuation line, or an indentation error
            if dash:
                if top[2]:
                    raise GiveUp
                items, path = top[1], top[4]
                child = None if path is None else (*path, len(items))
                if key:
                    mapping: dict[str, Any] = {}
                    items.append(mapping)
                    if child is not None:
                        marks[child] = (number, inner + 1)
                        if len(child) >= MARK_DEPTH:
                            child = None
                    top = [inner, mapping, True, False, child]
                    stack.append(top)
                elif rest and rest[0] != "#":
                    if child is not None:
                        marks[child] = (number, inner + 1)
                    items.append(scalar(rest))
                    continue
                else:
                    pending = (items, len(items), col, child)
                    items.append(None)
                    continue
            elif not top[2]:
                raise GiveUp  # a key among the items of a sequence
            mapping, path = top[1], top[4]
            name = self.key(key)
            if name in mapping:
                raise GiveUp  # the full loader names both lines
            child = None if path is None else (*path, name)
            if child is not None:
                marks[child] = (number, inner + 1)  # a field's position is its key's
            if rest and rest[0] != "#":
                mapping[name] = scalar(rest)
            else:
                mapping[name] = None
                pending = (mapping, name, inner, child)
        return count > 0, root, marks
