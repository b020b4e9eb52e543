"""The hashes that find the versions alone of their sale_id (sales_etl.versions)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sales_etl.versions import is_among, repeated_hashes, string_hashes

ids = st.lists(st.text(min_size=0, max_size=70), max_size=60)


@given(ids, ids)
def test_the_same_text_hashes_the_same_wherever_it_sits_in_arrow_buffers(
    before: list[str], values: list[str]
) -> None:
    alone = [int(string_hashes(pa.array([value]))[0]) for value in values]
    whole = string_hashes(pa.array(values, pa.string()))
    sliced = string_hashes(pa.array(before + values, pa.string()).slice(len(before)))
    parts = [pa.array(before, pa.string()), pa.array(values, pa.string())]
    chunked = string_hashes(pa.chunked_array(parts))
    large = string_hashes(pa.array(values, pa.large_string()))
    assert whole.dtype == np.uint32
    assert whole.tolist() == alone == sliced.tolist() == large.tolist()
    assert chunked[len(before) :].tolist() == alone


@given(
    st.lists(st.sampled_from(["a", "b", "", "20261101-000000001", "x" * 64, "é"]), max_size=40),
    st.sampled_from([1, 2, 3, 8]),
)
def test_a_repeated_id_is_never_taken_for_a_lone_one(values: list[str], slices: int) -> None:
    hashes = string_hashes(pa.array(values, pa.string()))
    repeated = repeated_hashes([hashes[:7], hashes[7:]], slices=slices)
    taken_alone = ~is_among(hashes, repeated)
    counts = Counter(values)
    lone = [value for value, alone in zip(values, taken_alone, strict=True) if alone]
    assert all(counts[value] == 1 for value in lone)
    assert np.all(np.diff(repeated.astype(np.int64)) > 0)  # sorted, each once


def test_ids_that_differ_in_one_byte_hash_apart_and_null_is_zero() -> None:
    values = [f"20261101-{n:09d}" for n in range(10_000)]
    hashes = string_hashes(pa.array([*values, None, ""]))
    assert len(set(hashes[:-2].tolist())) == len(values)
    assert hashes[-2] == 0
    assert is_among(hashes[:3], np.array([], np.uint32)).tolist() == [False] * 3


def test_only_strings_are_hashed() -> None:
    with pytest.raises(TypeError, match="strings"):
        string_hashes(pa.array([1, 2]))
