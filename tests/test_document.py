"""The YAML/JSON document loader: text preservation, positions, hostile input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ajour_build.core.spec import fastyaml
from ajour_build.core.spec.document import (
    MAX_DEPTH,
    MAX_NODES,
    DocumentError,
    YamlFloat,
    YamlInt,
    _parse_full,
    iter_yaml,
    parse_json,
    parse_yaml,
    read_documents,
)


def test_plain_numbers_keep_their_source_text() -> None:
    (doc,) = parse_yaml("rev: 0.10\nn: 007\nv: 1.0\n", "f.yaml")
    assert isinstance(doc.data["rev"], YamlFloat)
    assert doc.data["rev"].raw == "0.10"
    assert doc.data["rev"] == 0.1
    assert isinstance(doc.data["n"], YamlInt) and doc.data["n"].raw == "007"
    assert doc.data["v"].raw == "1.0"


def test_dates_stay_text() -> None:
    (doc,) = parse_yaml("rev: 2024-01-31\n", "f.yaml")
    assert doc.data["rev"] == "2024-01-31"


def test_positions_are_recorded_per_path() -> None:
    (doc,) = parse_yaml("a:\n  b:\n    - x\n    - y: 1\n", "f.yaml")
    mark = doc.locate(("a", "b", 1, "y"))
    assert mark is not None and (mark.line, mark.column) == (4, 7)
    # an unknown child falls back to its nearest ancestor
    fallback = doc.locate(("a", "b", 1, "nope"))
    assert fallback is not None and fallback.line == 4


def test_duplicate_keys_are_errors_with_both_lines() -> None:
    with pytest.raises(DocumentError) as info:
        parse_yaml("a: 1\nb: 2\na: 3\n", "dup.yaml")
    problem = info.value.problem
    assert problem.line == 3
    assert "duplicate key 'a'" in problem.message and "line 1" in problem.message


def test_malformed_yaml_names_file_line_and_column() -> None:
    with pytest.raises(DocumentError) as info:
        parse_yaml("a: [1, 2\nb: c\n", "bad.yaml")
    problem = info.value.problem
    assert problem.file == "bad.yaml"
    assert problem.line == 2
    assert problem.message.startswith("malformed YAML")


def test_alias_bomb_is_refused() -> None:
    lines = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = f"*a{i - 1}"
        lines.append(f"a{i}: &a{i} [{', '.join([prev] * 10)}]")
    with pytest.raises(DocumentError) as info:
        parse_yaml("\n".join(lines) + "\n", "bomb.yaml")
    assert "more than" in info.value.problem.message


def test_multi_document_streams_skip_empty_documents() -> None:
    docs = parse_yaml("---\na: 1\n---\n---\nb: 2\n", "m.yaml")
    assert [d.data for d in docs] == [{"a": 1}, {"b": 2}]
    assert [d.index for d in docs] == [0, 2]


def test_json_duplicate_keys_and_positions() -> None:
    with pytest.raises(DocumentError) as info:
        parse_json('{"a": 1, "a": 2}', "d.json")
    assert "duplicate key 'a'" in info.value.problem.message
    (doc,) = parse_json('{\n  "a": {\n    "b": 0.10\n  }\n}\n', "p.json")
    assert doc.data["a"]["b"] == 0.1 and not isinstance(doc.data["a"]["b"], YamlFloat)
    mark = doc.locate(("a", "b"))
    assert mark is not None and mark.line == 3


def test_malformed_json_names_line() -> None:
    with pytest.raises(DocumentError) as info:
        parse_json('{\n  "a": 1,\n}\n', "bad.json")
    assert info.value.problem.line == 3


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"name: caf\xe9\n")
    with pytest.raises(DocumentError) as info:
        read_documents(path)
    assert "not UTF-8" in info.value.problem.message


# --------------------------------------------------------------------------- the fast reader
# Plain block YAML is read by fastyaml, everything else by the full loader. The fast reader
# may give up on anything, but what it reads must be exactly what the full loader builds:
# the same documents, values (types and YAML 1.1 text included) and positions.

TRICKY = [
    "a", "name", "on", "yes", "no", "null", "~", "true", "1", "0.10", "007", "1_000", "0x1F",
    "1:30", ".inf", "2024-01-31", "x y", "a: b", "a:b", "a #c", "a#b", "#c", "-", "- x", "-x",
    "'q'", '"d"', "it's", "--board", "--", "---", "-#", "-:", "{}", "[]", "{a}", "[1]", "x,y",
    "http://h:1/p", "*a", "&a", "!t",
    "|", ">", "%", "@x", "`", "?", "? x", ":x", "x:", "<<", "=", "", " s", "s ", "é", "a\tb",
    "$x", "(x)", "^x", "x@y", "a%b", "\\", "k\\n",
]  # fmt: skip
KEYS = st.sampled_from(TRICKY[:40]) | st.from_regex(r"[a-z][a-z0-9./-]{0,6}", fullmatch=True)
SCALARS = (
    st.sampled_from(TRICKY)
    | st.text(alphabet="ab0 .:-#'\"[]{},&*!|>%@?\\\t", max_size=5)
    | st.integers(-5, 300)
    | st.sampled_from([0.5, -2.0, 1e20, 0.1])
    | st.booleans()
    | st.none()
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, min_size=1, max_size=3)
        | st.dictionaries(KEYS, inner, min_size=1, max_size=3)
    ),
    max_leaves=10,
)
DOCUMENTS = st.lists(
    st.dictionaries(KEYS, VALUES, min_size=1, max_size=4) | st.lists(VALUES, min_size=1),
    min_size=1,
    max_size=3,
)


def typed(value: Any) -> Any:
    """``value`` with every type spelled out (``1 == 1.0 == True`` must not pass)."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, getattr(value, "raw", None), value)


def assert_agrees(text: str) -> bool:
    """The fast reader gives up or reads ``text`` as the full loader does; True: it read."""
    fast = fastyaml.read(text, MAX_NODES, MAX_DEPTH)
    try:
        full = [d for d in _parse_full(text, "f.yaml", construct=True) if d.data is not None]
    except Exception:  # the full loader refuses it (DocumentError) or trips over it
        assert fast is None, text
        return False
    if fast is None:
        return False
    read = [(index, data, line, marks) for index, data, line, marks in fast if data is not None]
    assert [(i, typed(data)) for i, data, _, _ in read] == [(d.index, typed(d.data)) for d in full]
    for (_, _, line, marks), doc in zip(read, full, strict=True):
        for path, (offset, column) in marks.items():
            assert doc.marks[path] == (line + offset, column), (text, path)
    return True


def mutated(text: str, data: st.DataObject) -> str:
    lines = text.split("\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    line = lines[i]
    at = data.draw(st.integers(0, len(line)))
    how = data.draw(st.sampled_from(["insert", "delete", "indent", "dedent"]))
    if how == "insert":
        line = line[:at] + data.draw(st.sampled_from(list(" :-#'\"[]{}x0\\&*"))) + line[at:]
    elif how == "delete":
        line = line[:at] + line[at + 1 :]
    elif how == "indent":
        line = "  " + line
    else:
        line = line.lstrip(" ")
    lines[i] = line
    return "\n".join(lines)


@settings(max_examples=500)
@given(DOCUMENTS, st.sampled_from([2, 4]), st.booleans(), st.booleans(), st.booleans(), st.data())
def test_fast_reader_reads_as_the_full_loader(
    docs: list[Any], indent: int, explicit: bool, repeat: bool, flow: bool, data: st.DataObject
) -> None:
    if repeat:  # several documents of one shape: the template path
        docs = docs[:1] * 3
    text = yaml.safe_dump_all(
        docs,
        default_flow_style=None if flow else False,  # None: innermost collections in flow
        sort_keys=False,
        indent=indent,
        explicit_start=explicit,
    )
    assert_agrees(text)
    for _ in range(data.draw(st.integers(0, 2))):
        text = mutated(text, data)
        assert_agrees(text)


FLEET_TEXT = """\
# a fleet
---
kind: Device
metadata:
  name: dev-1
  application: app-1   # the owner
spec:
  credentials:
    credentials:
      - pass: "hey-rodney"
      - user: {{username: u, password: 'it''s'}}
---
kind: Device
metadata:
  name: {name}
  application: app-1
spec:
  firmware:
    container:
      image: app-1:1.10
      build:
        args:
          - --board
          - "x y"
        env:
        - name: V
          value: 0.10
        timeout: 30m
  labels: {{}}
"""


@pytest.mark.parametrize("name", ["dev-2", "node-2", "007", "0.10", "yes"])
def test_fast_reader_reads_plain_fleets(name: str) -> None:
    text = FLEET_TEXT.format(name=name)
    assert assert_agrees(text)  # read, not given up: the fast path is the common one
    assert assert_agrees(text + text.split("\n", 1)[1])  # more of one shape: the templates
    flow = text.replace(
        "metadata:\n  name: dev-1\n  application: app-1   # the owner",
        "metadata: {name: dev-1, 'application': \"app-1\"}",
    )
    assert "{name: dev-1" in flow and assert_agrees(flow)  # one line of flow: read too
    nested = text.replace("password: 'it''s'}", "password: [x]}")
    assert not assert_agrees(nested)  # nested flow collections: the full loader


@pytest.mark.parametrize(
    "text",
    [
        '"a\nb": 1\n',  # quotes do not span lines for this reader
        "x: 1\n'a\nb': 1\n",
        '- "a\nb": 1\n',
        'k: "a\n  b"\n',
        "k: a\n  b\n",  # a plain scalar on two lines
        "---\nk: 1\n--- \nk: 2\n",
        "%YAML 1.1\n---\nk: 1\n",
        "k: 1\n...\n",
    ],
)
def test_fast_reader_gives_up_on_what_it_does_not_read(text: str) -> None:
    assert fastyaml.read(text, MAX_NODES, MAX_DEPTH) is None
    assert_agrees(text)


def test_fast_read_documents_locate_deep_paths_like_the_full_loader() -> None:
    text = FLEET_TEXT.format(name="dev-2").replace("{username: u, password: 'it''s'}", "{}")
    fast = parse_yaml(text, "f.yaml")
    full = [d for d in _parse_full(text, "f.yaml", construct=True) if d.data is not None]
    assert fast[1].known is not None  # read by the fast reader
    for fast_doc, full_doc in zip(fast, full, strict=True):
        for path in full_doc.marks:
            assert fast_doc.locate((*path, "nope")) == full_doc.locate((*path, "nope"))
    mark = fast[1].locate(("spec", "firmware", "container", "build", "env", 0, "value"))
    assert mark is not None and (mark.line, mark.column) == (27, 11)


def test_aliases_are_refused_whichever_reader() -> None:
    bomb = 'a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]\n'
    bomb += "".join(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]\n" for i in range(1, 9))
    block = "a0: &a0\n" + "  - x\n" * 10
    block += "".join(f"a{i}: &a{i}\n" + f"  - *a{i - 1}\n" * 10 for i in range(1, 9))
    for text in (bomb, block):
        assert fastyaml.read(text, MAX_NODES, MAX_DEPTH) is None
        with pytest.raises(DocumentError) as info:
            parse_yaml(text, "bomb.yaml")
        assert "more than" in info.value.problem.message


def test_json_documents_are_located_on_demand() -> None:
    text = '\n  {"metadata": {\n    "name": "x"}, "spec": {"firmware": {"file": {}}}}\n'
    (doc,) = parse_json(text, "d.json")
    assert doc.known is not None and doc.locate(()) == (2, 3)
    mark = doc.locate(("metadata", "name"))
    assert mark is not None and mark.line == 3


def test_a_file_the_fast_reader_leaves_halfway_is_read_once() -> None:
    text = "a: 1\n---\nb: 2\n---\nc: {d: [1]}\n---\ne: 0.10\n"
    docs = list(iter_yaml(text, "f.yaml"))
    assert [(d.index, d.data) for d in docs] == [
        (0, {"a": 1}),
        (1, {"b": 2}),
        (2, {"c": {"d": [1]}}),
        (3, {"e": 0.1}),
    ]
    assert docs[0].known is not None and docs[2].known is None  # fast, then the full loader
    assert isinstance(docs[3].data["e"], YamlFloat) and docs[3].data["e"].raw == "0.10"


def test_a_malformed_document_stops_the_file_where_it_is() -> None:
    read: list[Any] = []
    with pytest.raises(DocumentError) as info:
        read.extend(d.data for d in iter_yaml("a: 1\n---\nb: [\n---\nc: 3\n", "f.yaml"))
    assert read == [{"a": 1}]
    assert info.value.problem.line == 4
