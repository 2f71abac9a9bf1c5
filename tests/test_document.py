"""The YAML/JSON document loader: text preservation, positions, hostile input."""

from __future__ import annotations

from pathlib import Path

import pytest

from ajour_build.core.spec.document import (
    DocumentError,
    YamlFloat,
    YamlInt,
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
