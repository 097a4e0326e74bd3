"""Result lines are byte-identical to Python's json.dumps, as Vertex writes them."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from batchpredict.io.encoding import dumps_bytes, dumps_many

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    numbers | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=500, deadline=None)
@given(values)
def test_dumps_bytes_matches_json_dumps(value):
    assert dumps_bytes(value).decode() == json.dumps(value)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(numbers, st.lists(numbers, max_size=6)), max_size=20))
def test_dumps_many_matches_json_dumps(batch):
    assert [b.decode() for b in dumps_many(batch)] == [json.dumps(v) for v in batch]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=8), max_size=20)
)
def test_dumps_many_flat_float_rows(batch):
    assert [b.decode() for b in dumps_many(batch)] == [json.dumps(v) for v in batch]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["float64", "float32", "int64", "int32", "uint8", "bool"]),
    st.integers(min_value=0, max_value=12),
    st.integers(min_value=0, max_value=6),
    st.data(),
)
def test_dumps_many_numpy_rows_match_json_dumps_of_tolist(dtype, rows, columns, data):
    """Arrays (bulk-read rows, predictions) encode as json.dumps of their tolist(), exactly."""
    import numpy as np
    from hypothesis.extra.numpy import arrays, from_dtype

    shape = data.draw(st.sampled_from([(rows,), (rows, columns)]))
    array = data.draw(arrays(np.dtype(dtype), shape, elements=from_dtype(np.dtype(dtype))))
    assert [b.decode() for b in dumps_many(array)] == [json.dumps(v) for v in array.tolist()]
