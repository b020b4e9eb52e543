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


def _slow_dumps(value: object) -> str:
    parts: list[str] = []
    jsontext._write(value, parts)
    return "".join(parts)


lossless_values = st.recursive(
    st.none()
    | st.booleans()
    | st.text()
    | st.integers()  # JSON numbers: parsed as JsonNumber, written back verbatim
    | st.floats(allow_nan=True, allow_infinity=True),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
)


@given(lossless_values)
def test_fast_dumps_writes_exactly_what_the_plain_writer_writes(value: object) -> None:
    parsed = jsontext.loads(json.dumps(value, allow_nan=True))
    assert jsontext.dumps(parsed) == _slow_dumps(parsed)


def test_dumps_of_text_orjson_would_write_differently() -> None:
    for text in ("caf\u00e9", "del\x7f", "\ud800", "tab\tnul\x00"):
        value = {"k": text, "n": JsonNumber("1.50")}
        assert jsontext.dumps(value) == _slow_dumps(value)
    deep: object = JsonNumber("1")
    for _ in range(600):
        deep = [deep]
    assert jsontext.dumps(deep) == _slow_dumps(deep)


def test_a_deep_item_of_a_repeated_data_key_never_replaces_the_kept_data() -> None:
    """The parser keeps the last "data": a deep item of an earlier one is not a record."""
    deep = "[" * 5000 + "]" * 5000  # beyond what the recursive parser takes
    page = jsontext.loads_page(f'{{"data": [{deep}], "data": [{{"ok": 1}}, {deep}]}}')
    assert isinstance(page["data"][0], dict) and list(page["data"][0]) == ["ok"]
    assert isinstance(page["data"][1], jsontext.DeepRecord)
    assert page["data"][1].text == deep
