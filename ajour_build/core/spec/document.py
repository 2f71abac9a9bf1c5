"""Reading YAML and JSON documents while remembering where every value came from.

PyYAML follows YAML 1.1, where ``0.10`` is the float 0.1 and ``2024-01-01`` a date. Fleet
specs carry versions and refs, so the loader keeps the source text of every plain number
(:class:`YamlInt` / :class:`YamlFloat` carry ``raw``), never builds timestamps, rejects
duplicate keys, and records the line and column of each value by its path.

Plain block YAML, what large fleets are written in, is read by :mod:`.fastyaml` into the
same values without positions but a few; the rest are found when a problem has to be
reported, by reading that file again with the full loader (:meth:`Document.locate`).
JSON is read by :mod:`json`, and positioned the same way.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import yaml

from ajour_build.core.errors import Problem
from ajour_build.core.spec import fastyaml
from ajour_build.core.spec.scalars import IMPLICIT_RESOLVERS, YamlFloat, YamlInt, wrap

__all__ = [
    "MAX_DEPTH",
    "MAX_FILE_BYTES",
    "MAX_NODES",
    "Document",
    "DocumentError",
    "Mark",
    "PathKey",
    "YamlFloat",
    "YamlInt",
    "iter_documents",
    "iter_spec_files",
    "iter_yaml",
    "parse_json",
    "parse_yaml",
    "read_documents",
]

PathKey = tuple[str | int, ...]

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_NODES = 1_000_000  # per document
MAX_DEPTH = 100
SPEC_SUFFIXES = (".yaml", ".yml", ".json")


class Mark(NamedTuple):
    line: int
    column: int


class _Reread:
    """The positions of every document of one file, from the full loader, read on demand."""

    def __init__(self, read: Callable[[], list[dict[PathKey, Mark]]]) -> None:
        self._read = read
        self._marks: list[dict[PathKey, Mark]] | None = None

    def marks(self, index: int) -> dict[PathKey, Mark]:
        if self._marks is None:
            self._marks = self._read()
        return self._marks[index] if index < len(self._marks) else {}


@dataclass(slots=True)
class Document:
    """One parsed document and the source positions of its values.

    A document read by :mod:`.fastyaml` (or from JSON) knows a few positions (``known``:
    line within the document, column); the others come from ``reread`` on first need.
    """

    file: str
    index: int
    data: Any
    marks: dict[PathKey, Mark] = field(default_factory=dict)
    line: int = 1  # the document's first line
    known: fastyaml.Marks | None = field(default=None, repr=False, compare=False)
    reread: _Reread | None = field(default=None, repr=False, compare=False)

    def line_of(self, path: PathKey) -> int | None:
        """The line of ``locate(path)`` (quicker for the positions a fast reader knows)."""
        if self.known is not None:
            position = self.known.get(path)
            if position is not None:
                return self.line + position[0]
        mark = self.locate(path)
        return mark.line if mark is not None else None

    def locate(self, path: PathKey) -> Mark | None:
        """The position of ``path``, or of its nearest recorded ancestor."""
        if self.known is not None:
            position = self.known.get(path)
            if position is not None:
                return Mark(self.line + position[0], position[1])
            if self.reread is not None:
                self.marks = self.reread.marks(self.index)
            self.known = None
        for end in range(len(path), -1, -1):
            mark = self.marks.get(tuple(path[:end]))
            if mark is not None:
                return mark
        return None


if TYPE_CHECKING:
    _BASE = yaml.SafeLoader
else:  # libyaml's parser when PyYAML has it (same nodes and marks, several times faster)
    _BASE = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BASE):
    """A safe loader without implicit timestamps (dates stay text)."""


_Loader.yaml_implicit_resolvers = IMPLICIT_RESOLVERS


class DocumentError(Exception):
    """Raised with a :class:`Problem` when a file cannot be parsed."""

    def __init__(self, problem: Problem) -> None:
        super().__init__(problem.render())
        self.problem = problem


class _Builder:
    def __init__(self, file: str, loader: _Loader) -> None:
        self.file = file
        self.loader = loader
        self.nodes = 0
        self.marks: dict[PathKey, Mark] = {}

    def fail(self, node: yaml.Node, message: str, hint: str | None = None) -> DocumentError:
        m = node.start_mark
        return DocumentError(
            Problem(message, file=self.file, line=m.line + 1, column=m.column + 1, hint=hint)
        )

    def build(self, node: yaml.Node, path: PathKey, construct: bool) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES or len(path) > MAX_DEPTH:
            raise self.fail(
                node,
                "document is too large or too deeply nested (aliases expand too far)",
                "fleet files should be plain resources; remove anchors/aliases that repeat",
            )
        self.marks[path] = Mark(node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, construct)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i), construct) for i, item in enumerate(node.value)]
        return self._scalar(node) if construct else None

    def _mapping(self, node: yaml.MappingNode, path: PathKey, construct: bool) -> Any:
        self.loader.flatten_mapping(node)
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            self.nodes += 1  # keys count too, as in _expanded_size
            key = self.loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                if isinstance(key, int | float | bool) or key is None:
                    key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key)
                else:
                    raise self.fail(key_node, f"mapping keys must be text, got {key!r}")
            if key in first_seen:
                raise self.fail(
                    key_node,
                    f"duplicate key {key!r} (first defined on line {first_seen[key]})",
                    "remove one of them; YAML does not allow repeating a key",
                )
            first_seen[key] = key_node.start_mark.line + 1
            result[key] = self.build(value_node, (*path, key), construct)
            # point at the key: it is where a reader looks for "spec.x.y"
            self.marks[(*path, key)] = Mark(
                key_node.start_mark.line + 1, key_node.start_mark.column + 1
            )
        return result if construct else None

    def _scalar(self, node: yaml.Node) -> Any:
        value = self.loader.construct_object(node, deep=True)
        plain = isinstance(node, yaml.ScalarNode) and not node.style  # None or "" (libyaml)
        return wrap(value, str(node.value)) if plain else value


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes ``root`` expands to, aliases counted each time (memoized: fast)."""
    memo: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        key = id(node)
        if key in memo:
            return memo[key]
        if depth > MAX_DEPTH:
            return MAX_NODES + 1
        memo[key] = 1  # guards against recursive aliases
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k, depth + 1) + size(v, depth + 1)
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item, depth + 1)
        memo[key] = min(total, MAX_NODES + 1)
        return memo[key]

    return size(root, 0)


def _problem_from_yaml(file: str, exc: yaml.YAMLError) -> Problem:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        m = exc.problem_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        return Problem(
            f"malformed YAML: {what}",
            file=file,
            line=m.line + 1,
            column=m.column + 1,
            hint="check indentation and quoting around this position",
        )
    return Problem(f"malformed YAML: {exc}", file=file)


def parse_yaml(text: str, file: str) -> list[Document]:
    """Parse every document of a YAML stream; empty documents are skipped."""
    return list(iter_yaml(text, file))


def iter_yaml(text: str, file: str) -> Iterator[Document]:
    """The documents of :func:`parse_yaml`, each built when it is reached.

    Raises :class:`DocumentError` where the text is malformed, possibly after documents
    before that point (reading all of a large file first would hold all of its values).
    """
    reread = _Reread(lambda: _positions(text, file))
    done = 0  # documents read by the fast reader, empty ones too
    try:
        for index, data, line, marks in fastyaml.iterate(text, MAX_NODES, MAX_DEPTH):
            done = index + 1
            if data is not None:
                yield Document(file, index, data, {}, line, marks, reread)
        return
    except fastyaml.GiveUp:
        pass  # the full loader reads the rest: its first documents are the same
    for doc in _iter_full(text, file, construct=True):
        if doc.index >= done and doc.data is not None:
            yield doc


def _positions(text: str, file: str) -> list[dict[PathKey, Mark]]:
    """The positions in every document, up to a malformed one if there is one."""
    found: list[dict[PathKey, Mark]] = []
    try:
        for doc in _iter_full(text, file, construct=False):
            found.append(doc.marks)
    except DocumentError:
        pass  # that error is reported where the file is read; the documents before it count
    return found


def _parse_full(text: str, file: str, construct: bool) -> list[Document]:
    """Every document, empty ones too (``data`` None); only positions unless ``construct``."""
    return list(_iter_full(text, file, construct))


def _iter_full(text: str, file: str, construct: bool) -> Iterator[Document]:
    loader = _Loader(text)
    try:
        index = 0
        while loader.check_node():
            node = loader.get_node()
            if node is None:  # pragma: no cover - check_node guarantees a node
                break
            builder = _Builder(file, loader)
            # aliases are what can make a small document expand: only they need counting
            if "*" in text and _expanded_size(node) > MAX_NODES:
                raise builder.fail(
                    node,
                    f"document expands to more than {MAX_NODES} values (aliases repeat too much)",
                    "fleet files should be plain resources; remove anchors/aliases that repeat",
                )
            data = builder.build(node, (), construct=construct)
            yield Document(file, index, data, builder.marks)
            index += 1
    except yaml.YAMLError as exc:
        raise DocumentError(_problem_from_yaml(file, exc)) from exc
    finally:
        loader.dispose()


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _json_marks(text: str, file: str) -> dict[PathKey, Mark]:
    """Positions for JSON values (JSON is valid YAML flow syntax); best effort."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return {}
            builder = _Builder(file, loader)
            builder.build(node, (), construct=False)
            return builder.marks
        finally:
            loader.dispose()
    except (yaml.YAMLError, DocumentError):
        return {}


def parse_json(text: str, file: str) -> list[Document]:
    try:
        data = json.loads(text, object_pairs_hook=_reject_duplicates)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            Problem(f"malformed JSON: {exc.msg}", file=file, line=exc.lineno, column=exc.colno)
        ) from exc
    except ValueError as exc:
        raise DocumentError(Problem(f"malformed JSON: {exc}", file=file)) from exc
    head = text[: len(text) - len(text.lstrip())]
    known: fastyaml.Marks = {}
    if not head.strip(" \n"):  # the value starts where YAML sees it start too
        known[()] = (head.count("\n"), len(head) - (head.rfind("\n") + 1) + 1)
    reread = _Reread(lambda: [_json_marks(text, file)])
    return [Document(file, 0, data, {}, 1, known, reread)]


def read_documents(path: Path) -> list[Document]:
    """Parse one spec file (``.yaml``, ``.yml`` or ``.json``)."""
    return list(iter_documents(path))


def iter_documents(path: Path) -> Iterator[Document]:
    """The documents of :func:`read_documents`, each built when it is reached (a large
    fleet file is never in memory as a whole); see :func:`iter_yaml` for errors."""
    name = str(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise DocumentError(
                Problem(
                    f"file is {size} bytes, over the {MAX_FILE_BYTES} byte limit",
                    file=name,
                    hint="split the fleet into several files",
                )
            )
        raw = path.read_bytes()
    except OSError as exc:
        raise DocumentError(Problem(f"cannot read file: {exc.strerror}", file=name)) from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            Problem(f"file is not UTF-8 text (byte {exc.start})", file=name)
        ) from exc
    if path.suffix.lower() == ".json":
        return iter(parse_json(text, name))
    return iter_yaml(text, name)


def iter_spec_files(paths: list[Path], skip_names: frozenset[str] = frozenset()) -> Iterator[Path]:
    """Files named directly, and ``.yaml``/``.yml``/``.json`` files under directories.

    Directory walks are sorted (deterministic), skip hidden entries and the names in
    ``skip_names`` (the installation config).
    """
    for path in paths:
        if path.is_dir():
            for child in sorted(path.rglob("*")):
                rel = child.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    continue
                if child.is_file() and child.suffix.lower() in SPEC_SUFFIXES:
                    if child.name in skip_names and child.parent == path:
                        continue
                    yield child
        else:
            yield path
