"""The deterministic dumper: anything it writes reads back the same under YAML 1.1."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from ajour_build.render.dump import dump, dump_all

scalars = st.one_of(
    st.text(),
    st.sampled_from(
        [
            "0.10",
            "1.0",
            "yes",
            "no",
            "on",
            "off",
            "~",
            "null",
            "2024-01-01",
            "0o17",
            "0x1F",
            "1e3",
            ".inf",
            "-",
            "*a",
            "&b",
            "!tag",
            "key: v",
            "#c",
            "'q'",
            '"d"',
        ]
    ),
    st.integers(),
    st.booleans(),
    st.none(),
)
keys = st.text(min_size=1)
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300)
@given(documents)
def test_round_trip_under_yaml_1_1(doc: Any) -> None:
    assert yaml.safe_load(dump(doc)) == doc


@given(st.text())
def test_every_string_value_is_quoted_or_a_block(value: str) -> None:
    line = dump({"v": value}).splitlines()[0]
    assert line.startswith(('v: "', "v: |", "v: >")), line


@given(st.lists(st.dictionaries(keys, scalars, max_size=3), max_size=4))
def test_dump_is_deterministic_and_multi_document(docs: list[dict[str, Any]]) -> None:
    text = dump_all(docs)
    assert text == dump_all(docs)
    assert list(yaml.safe_load_all(text)) == docs
