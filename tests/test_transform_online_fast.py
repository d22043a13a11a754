"""The generated ``transform_one`` (transforms/codegen.py) against the oracle.

``tests/transform_oracle.py`` is a plain pure-Python implementation of every transformer,
written from the state alone (no code shared with the product). The generated function must
give the same result for every record, bit for bit and type for type — or raise the same
exception with the same message.
Records are drawn by hypothesis with None, NaN, ±inf, -0.0, huge ints, bools, numeric and
junk strings, numpy scalars, Decimals, dates, datetimes in other zones and unknown
categories, for every transformer type, alone and all in one transform.
"""

from __future__ import annotations

import copy
import json
import math
import struct
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.errors import InputError
from mlpipe_cli.transforms import FittedTransform, fit_frame
from mlpipe_cli.transforms.base import Encoder, NumericStep
from mlpipe_cli.transforms.codegen import Source, compile_record_function
from mlpipe_cli.transforms.numeric import NUMERIC_STEPS, NumericChain
from mlpipe_cli.transforms.registry import ENCODERS
from tests.transform_cases import (
    BERLIN,
    CASES,
    KNOWN,
    KOLKATA,
    REFERENCES,
    START,
    SYDNEY,
    fitted,
    training_frame,
    write_tables,
)
from tests.transform_oracle import oracle_function


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tables(tmp_path_factory.mktemp("emb"))


_ORACLES: dict[int, Any] = {}


def reference(transform: FittedTransform) -> Any:
    """The oracle for ``transform`` (tests/transform_oracle.py), built once per transform."""
    key = id(transform)
    if key not in _ORACLES:
        _ORACLES[key] = (
            transform,
            oracle_function(transform.state, transform.tables, transform.version),
        )
    return _ORACLES[key][1]


# -- comparison -------------------------------------------------------------------------


def outcome(fn: Any, record: dict[str, Any]) -> tuple[Any, ...]:
    try:
        return ("ok", fn(record))
    except Exception as exc:
        return ("raised", type(exc), str(exc))


def same(a: Any, b: Any) -> bool:
    """Identical values: same type, and for floats the same 64 bits (NaN payload, -0.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    return a is b or (a == b and repr(a) == repr(b))


def assert_identical(transform: FittedTransform, record: dict[str, Any]) -> None:
    fast = outcome(transform.transform_one, record)
    want_ = outcome(reference(transform), record)
    if fast[0] == "raised" or want_[0] == "raised":
        assert fast == want_, f"{record}: fast {fast} != oracle {want_}"
        return
    got, want = fast[1], want_[1]
    assert type(got) is list
    assert len(got) == len(want) == len(transform.output_columns)
    for name, a, b in zip(transform.output_columns, got, want, strict=True):
        assert same(a, b), f"{name}: fast {a!r} != reference {b!r} for {record}"


# -- record strategies ------------------------------------------------------------------


class MyFloat(float):
    pass


special_floats = st.sampled_from(
    [0.0, -0.0, -1.0, -1.0000001, -0.9999999, 1e308, -1e308, 5e-324, -5e-324, 1e-300,
     math.inf, -math.inf, math.nan, -math.nan, float.fromhex("0x7ff8000000000123")]
)  # fmt: skip
plain_numbers = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    special_floats,
    st.floats(-100, 100),
    st.integers(-60, 60),
    st.integers(-(2**70), 2**70),
    st.booleans(),
)
other_numbers = st.one_of(  # what to_float accepts besides float, int and bool
    st.sampled_from(["1.5", " 2 ", "-0", "nan", "-inf", "1e999"]),
    st.sampled_from([Decimal("1.25"), Decimal("NaN"), Decimal("-0")]),
    st.floats(allow_nan=True).map(np.float64),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.floats(allow_nan=True).map(MyFloat),
)
numbers = st.one_of(plain_numbers, plain_numbers, other_numbers)
categories = st.one_of(
    st.none(),
    st.sampled_from([*KNOWN, "never-seen", "us", "US ", "true", "1", "1.0", "nan"]),
    st.text(max_size=4),
    st.integers(-3, 60),
    st.booleans(),
    st.floats(allow_nan=True),
    st.floats(allow_nan=True).map(np.float64),
)


class MyDatetime(datetime):
    pass


zones = st.sampled_from(
    [UTC, UTC, ZoneInfo("UTC"), timezone(timedelta(0)), timezone(timedelta(hours=-3)), KOLKATA,
     BERLIN, SYDNEY, ZoneInfo("America/New_York"), ZoneInfo("Etc/GMT-5")]
)  # fmt: skip
aware = st.datetimes(
    min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1), timezones=zones
)
naive = st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1))
timestamps = st.one_of(
    st.none(),
    aware,
    aware,
    naive,
    aware.map(lambda d: d.replace(fold=1)),
    aware.map(lambda d: MyDatetime.combine(d.date(), d.timetz())),
    aware.map(pd.Timestamp),
    naive.map(pd.Timestamp),
    st.dates(min_value=date(1900, 1, 2), max_value=date(2200, 1, 1)),
    aware.map(datetime.isoformat),
    naive.map(datetime.isoformat),
)
# for a column with a zone other than UTC, where a naive value is refused: mostly aware ones
zoned_timestamps = st.one_of(timestamps, st.none(), *[aware] * 4, aware.map(datetime.isoformat))
ids = st.one_of(
    st.none(),
    st.integers(-3, 45),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from(["12", "-3", "007", "1.0", "x", "s1", "s5", "s7", "", True, 3.0, math.nan]),
    st.integers(0, 40).map(np.int64),
    st.text(max_size=3),
)
# values some transformers refuse (InputError, OverflowError, TypeError, ...)
junk = st.sampled_from(
    ["abc", "", "0x10", "yesterday", "2026-13-01", 10**400, Decimal("sNaN"), [1.0], {"a": 1},
     1_700_000_000, object()]
)  # fmt: skip
BY_SOURCE = {
    "num": numbers, "pos": numbers, "neg": numbers, "cnt": numbers, "flag": numbers,
    "cat": categories, "ts": timestamps, "ts_zoned": zoned_timestamps, "ts_naive": timestamps,
    "ts_berlin": zoned_timestamps, "ts_sydney": zoned_timestamps, "pid": ids, "sku": ids,
}  # fmt: skip


def records_for(cases: list[str], junk_too: bool) -> st.SearchStrategy[dict[str, Any]]:
    """Records for a transform fitted on ``cases``; with ``junk_too`` values of any kind."""
    anything = st.one_of(*BY_SOURCE.values(), junk)
    fields = {c: anything if junk_too else BY_SOURCE[CASES[c][0]] for c in cases}
    fields.update({r: anything if junk_too else BY_SOURCE[s] for r, s in REFERENCES.items()})
    return st.fixed_dictionaries(fields)


# -- tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fast_path_is_the_reference_for_each_transformer(
    case: str, tables: dict[str, Path], data: st.DataObject
) -> None:
    transform = fitted([case], tables)
    record = data.draw(records_for([case], junk_too=data.draw(st.booleans())))
    assert_identical(transform, record)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_fast_path_is_the_reference_for_all_transformers_at_once(
    tables: dict[str, Path], data: st.DataObject
) -> None:
    transform = fitted(sorted(CASES), tables)
    record = data.draw(records_for(sorted(CASES), junk_too=False))
    # a few records lose a column or get a junk value (the first error in transformer order is
    # reported)
    if data.draw(st.integers(0, 9)) == 0:
        column = data.draw(st.sampled_from(sorted(record)))
        if data.draw(st.booleans()):
            del record[column]
        else:
            record[column] = data.draw(junk)
    assert_identical(transform, record)


def test_training_rows_are_identical(tables: dict[str, Path]) -> None:
    transform = fitted(sorted(CASES), tables)
    for record in training_frame(sorted(CASES)).iter_rows(named=True):
        assert_identical(transform, record)


def test_errors_are_the_reference_errors(tables: dict[str, Path]) -> None:
    transform = fitted(["standard", "onehot", "temporal_utc"], tables)
    good = {"standard": 1.0, "onehot": "US", "temporal_utc": START, "ref": START}
    assert transform.transform_one(good) == reference(transform)(good)
    cases = [
        ({k: v for k, v in good.items() if k != "onehot"}, "record has no column 'onehot'"),
        ({k: v for k, v in good.items() if k != "ref"}, "record has no column 'ref'"),
        ({**good, "standard": "abc"}, "column 'standard': expected a number, got 'abc'"),
        ({**good, "temporal_utc": "soon"}, "column 'temporal_utc': expected a timestamp"),
        ({**good, "ref": 7}, "column 'ref': expected a timestamp, got 7"),
    ]
    for record, message in cases:
        with pytest.raises(InputError, match=message):
            transform.transform_one(record)
        assert_identical(transform, record)
    # no reference column is read when the timestamp is missing (as the reference does)
    record = {"standard": 1.0, "onehot": "US", "temporal_utc": None}
    assert transform.transform_one(record)[-11:] == [None] * 11
    assert_identical(transform, record)
    # a naive value where it names no instant (a zone with DST; a reference fitted zoned)
    berlin = fitted(["temporal_dst"], tables)
    aware = datetime(2025, 3, 30, 1, 30, tzinfo=UTC)
    for record in ({"temporal_dst": datetime(2025, 3, 30, 2, 30), "ref_berlin": aware},
                   {"temporal_dst": aware, "ref_berlin": "2025-03-30T02:30"}):  # fmt: skip
        with pytest.raises(InputError, match=r"has no UTC offset .* in Europe/Berlin"):
            berlin.transform_one(record)
        assert_identical(berlin, record)


@pytest.mark.parametrize(
    ("case", "edit"),
    [
        # constants that have no float literal, or are not floats, as a state may hold them
        ("clip_fixed", {"min": -2, "max": math.inf}),
        ("clip_fixed", {"min": -math.inf, "max": 0}),
        ("clip_fixed", {"min": None, "max": -0.0}),
        ("clip_fixed", {"min": None, "max": None}),  # the config refuses it; a state may not
        ("standard", {"mean": -0.0, "scale": math.inf}),
        ("standard", {"mean": math.nan, "scale": 1}),
        ("standard", {"mean": 1.0, "scale": 0.0}),  # ZeroDivisionError in both
        ("minmax", {"scale": 0.0, "min": -0.0}),  # inf * 0 -> NaN flows on
        ("minmax_clip", {"clip": [-math.inf, 0.5]}),
        ("minmax_clip", {"scale": 0.0}),  # inf * 0: NaN reaches the clip, and stays NaN
        ("minmax_clip", {"min": math.nan}),
        ("log1p", {"shift": -0.0}),
        ("log1p", {"shift": math.inf}),
        ("fill_null_constant", {"value": math.nan}),
        ("fill_null_constant", {"value": -math.inf}),
        ("frequency", {"unknown_value": math.nan}),
        ("ordinal", {"unknown_value": -(2**60)}),
    ],
)
def test_unusual_state_constants(case: str, edit: dict[str, Any], tables: dict[str, Path]) -> None:
    outcome_ = fit_frame(
        TransformConfig.model_validate({"target": "y", "columns": {case: CASES[case][1]}}),
        training_frame([case]),
    )
    state = copy.deepcopy(outcome_.state)
    column = state["columns"][0]["state"]
    (column["steps"][0] if "steps" in column else column).update(edit)
    transform = FittedTransform(state, outcome_.tables)
    values = [None, 0.0, -0.0, 1.0, -1.0, -2.0, 0.5, 3, 1e308, math.inf, -math.inf, math.nan,
              "US", "zz", True, "1.5"]  # fmt: skip
    for value in values:
        assert_identical(transform, {case: value})


def test_user_strings_are_never_source(tables: dict[str, Path]) -> None:
    """Column names are written with repr; categories live in bound dicts, not the source."""
    evil = ["x'\n) or __import__('os')._exit(3) #", 'q"""\\', "\u2028line", "{0}", "é\x00"]
    frame = pl.DataFrame(
        {name: ["a", "b'\"", evil[0], None] * 5 for name in evil[:3]}
    ).with_columns(
        pl.Series(evil[3], [1.0, 2.0, None, 4.0] * 5), pl.Series(evil[4], [1, 2, 3, 4] * 5)
    )
    columns: dict[str, Any] = {
        evil[0]: [{"type": "onehot"}],
        evil[1]: [{"type": "ordinal"}],
        evil[2]: [{"type": "frequency"}],
        evil[3]: [{"type": "fill_null", "strategy": "constant", "value": 0}, {"type": "standard"}],
        evil[4]: [{"type": "passthrough"}],
    }
    transform = fit_frame(TransformConfig.model_validate({"columns": columns}), frame).transform
    source = transform.online_source
    assert "__import__" not in source.replace(repr(evil[0]), "")
    assert "b'\"" not in source
    for record in [*frame.iter_rows(named=True), dict.fromkeys(evil, "zz")]:
        assert_identical(transform, record)
    assert transform.transform_one(frame.row(2, named=True))[:4] == [0.0, 0.0, 1.0, 0.0]


def test_every_transformer_writes_its_own_online_path() -> None:
    """No transformer falls back to anything: each step type overrides ``emit``."""
    for cls in NUMERIC_STEPS.values():
        assert cls.emit is not NumericStep.emit, cls
    for cls in ENCODERS.values():
        assert cls.emit is not Encoder.emit, cls
    assert NumericChain.emit is not Encoder.emit


def test_compile_record_function_directly() -> None:
    class Constant:
        def emit(self, state: Any, tables: Any, src: Source) -> list[str]:
            src.line("c = record['a']")
            return ["c", src.const(state["b"])]

    fn, source = compile_record_function([(Constant(), {"b": 2.0})], {}, "v1")
    assert fn({"a": 1.0}) == [1.0, 2.0]
    with pytest.raises(InputError, match="record has no column 'a', which transform v1 expects"):
        fn({})
    assert "def transform_one(record):" in source


def test_constants_round_trip_exactly() -> None:
    src = Source()
    for value in [0.1, -0.0, 0.0, 5e-324, -1.7976931348623157e308, 1 / 3, 12, -7, 2**80]:
        text = src.const(value)
        assert text.strip("()") == repr(value)
        got = eval(text)
        assert type(got) is type(value)
        assert struct.pack("<d", float(got)) == struct.pack("<d", float(value))
    for value in [math.inf, -math.inf, math.nan, True, "s", (1,)]:
        name = src.const(value)
        assert src.namespace[name] is value


def test_loading_leaves_the_state_alone(tables: dict[str, Path]) -> None:
    """The function is derived at load; the state (and so the artifact hash) is untouched."""
    transform = fitted(sorted(CASES), tables)
    before = json.dumps(transform.state, sort_keys=True)
    again = FittedTransform(transform.state, transform.tables)
    assert json.dumps(transform.state, sort_keys=True) == before
    assert again.online_source == transform.online_source  # deterministic
