"""jsontext.dumps_sorted writes exactly json.dumps(sort_keys=True, indent=n, allow_nan=False).

The oracle is the standard library's encoder itself, on random documents (hypothesis) and on
real drift profiles; documents it cannot take must fail the same way.
"""

from __future__ import annotations

import json
import math

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_cli.drift.profile import build_profile, dumps_profile
from mlpipe_cli.jsontext import dumps_sorted

_keys = st.text(min_size=0, max_size=6)  # any code point: non-ASCII and control characters
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([0.0, -0.0, 1e16, 1e-5, 1e-7, 123456789.0, 5e-324, 1.7976931348623157e308])
    | st.text(max_size=8)
)
_documents = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.lists(inner, max_size=4).map(tuple)
        | st.dictionaries(_keys, inner, max_size=6)
        | st.lists(st.floats(allow_nan=False, allow_infinity=False), max_size=20)
        | st.lists(st.text(max_size=4), max_size=8)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(doc=_documents, indent=st.sampled_from([0, 1, 2, 4]))
def test_same_text_as_the_standard_library(doc: object, indent: int) -> None:
    assert dumps_sorted(doc, indent) == json.dumps(
        doc, sort_keys=True, indent=indent, allow_nan=False
    )


@pytest.mark.parametrize(
    "doc",
    [
        {"a": [1.0, math.nan]},
        {"a": [1.0, math.inf, 2.0]},
        {"a": -math.inf},
        {"a": {1: "int key"}},
        {"a": {None: 1, "b": 2}},
        {"a": object()},
        {"a": [{1.5: 2}]},
        {"a": {"x", "y"}},
    ],
)
def test_what_json_refuses_or_converts_goes_to_json(doc: object) -> None:
    try:
        expected: object = json.dumps(doc, sort_keys=True, indent=1, allow_nan=False)
    except (TypeError, ValueError) as exc:
        expected = (type(exc), str(exc))
    try:
        got: object = dumps_sorted(doc, 1)
    except (TypeError, ValueError) as exc:
        got = (type(exc), str(exc))
    assert got == expected


def test_subclasses_are_written_as_json_writes_them() -> None:
    class Score(float):
        def __repr__(self) -> str:
            return "not used by json"

    class Count(int):
        def __repr__(self) -> str:
            return "not used by json"

    doc = {"s": Score(0.1), "c": Count(3), "l": [Score(2.5), Count(7)]}
    assert dumps_sorted(doc, 1) == json.dumps(doc, sort_keys=True, indent=1, allow_nan=False)


def test_a_real_profile_has_the_same_bytes() -> None:
    """A drift profile with messy columns: the document whose bytes version ids hash."""
    rows = 3000
    frame = pl.DataFrame(
        {
            "x": [i / 7 if i % 11 else None for i in range(rows)],
            "skewed": [float(i**3) for i in range(rows)],
            "atoms": [[0.0, -0.0, 1.0, math.inf, -math.inf, math.nan][i % 6] for i in range(rows)],
            "city": [["Zürich", "東京", "São Paulo", None, 'q"uote\\'][i % 5] for i in range(rows)],
            "flag": [i % 3 == 0 for i in range(rows)],
        }
    )
    profile = build_profile(frame)
    assert dumps_profile(profile) == (
        json.dumps(profile, sort_keys=True, indent=1, allow_nan=False) + "\n"
    )


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(
        st.floats()
        | st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324])
        | st.none()
        | st.integers(-5, 5),
        max_size=30,
    )
)
def test_profile_float_lists_as_json_float_writes_them(values: list) -> None:
    """drift.profile._json_floats (one pass when it can) equals _json_float per value."""
    from mlpipe_cli.drift.profile import _json_float, _json_floats

    got, want = _json_floats(values), [_json_float(v) for v in values]
    assert repr(got) == repr(want)
    assert [type(v) for v in got] == [type(v) for v in want]
