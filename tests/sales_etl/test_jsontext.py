from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sales_etl import jsontext
from sales_etl.jsontext import JsonNumber


def test_numbers_keep_their_literal_text() -> None:
    value = jsontext.loads(b'{"a": 1.50, "b": 10, "c": 1e400, "d": NaN, "e": "1.50"}')
    assert value == {"a": "1.50", "b": "10", "c": "1e400", "d": "NaN", "e": "1.50"}
    assert [type(value[k]) for k in "abcde"] == [JsonNumber] * 4 + [str]


def test_a_huge_integer_does_not_crash_the_parser() -> None:
    value = jsontext.loads("[" + "9" * 10_000 + "]")
    assert value[0] == "9" * 10_000


def test_broken_json_raises_value_error() -> None:
    with pytest.raises(ValueError):
        jsontext.loads(b"<html>")


def test_dumps_writes_numbers_unquoted_and_escapes_everything_else() -> None:
    text = jsontext.dumps(jsontext.loads('{"n": 1.50, "s": "x\\u0000\\ud800", "l": [true, null]}'))
    assert text == '{"n":1.50,"s":"x\\u0000\\ud800","l":[true,null]}'


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(json_values)
def test_round_trip_is_lossless(value: object) -> None:
    text = json.dumps(value)
    assert json.loads(jsontext.dumps(jsontext.loads(text))) == value
