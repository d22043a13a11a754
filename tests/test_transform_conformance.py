"""One conformance suite over every transformer (the sklearn `parametrize_with_checks` idea).

For each case of the one shared table (tests/transform_cases.py, checked complete against the
registry): fitting is deterministic (twice, and on shuffled rows), the state survives a JSON
round trip, and the batch path (Polars) and the online path (pure Python)
agree — exactly or within 1e-12 — on random records with nulls, NaN, unknown categories,
unseen ids and extreme values (hypothesis).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config.transforms import NUMERIC_STEPS as CONFIG_NUMERIC_STEPS
from mlpipe_cli.config.transforms import Step
from mlpipe_cli.errors import DataCheckFailed, InputError
from mlpipe_cli.transforms import FitOutcome, FittedTransform, fit_frame, transform_frame
from mlpipe_cli.transforms.numeric import NUMERIC_STEPS
from mlpipe_cli.transforms.registry import STEP_TYPES
from tests.transform_cases import (
    CASES,
    KNOWN,
    config_for,
    fitted_outcome,
    training_frame,
    write_tables,
)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_tables(tmp_path_factory.mktemp("emb"))


def fitted(case: str, tables: dict[str, Path]) -> FitOutcome:
    return fitted_outcome([case], tables)


def test_the_case_table_covers_every_registered_step_type() -> None:
    """One shared table (tests/transform_cases.py): every step type the registry knows, and
    every step type the config accepts, has a case — and they are the same set."""
    covered = {step["type"] for _, steps in CASES.values() for step in steps}
    assert covered == set(STEP_TYPES)
    config_types = {
        get_args(m.model_fields["type"].annotation)[0] for m in get_args(get_args(Step)[0])
    }
    assert config_types == set(STEP_TYPES)
    assert set(NUMERIC_STEPS) == set(CONFIG_NUMERIC_STEPS)


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-12 * max(1.0, abs(a), abs(b))


def refused(transform: FittedTransform, record: dict[str, Any]) -> InputError | None:
    try:
        transform.transform_one(record)
    except InputError as exc:
        return exc
    return None


def assert_parity(transform: FittedTransform, frame: pl.DataFrame) -> None:
    """Online == batch on every row the policy accepts; a row online refuses is a row whose
    batch report refuses it (and the other way round)."""
    records = frame.to_dicts()
    refusals = [refused(transform, r) for r in records]
    accepted = frame.filter(pl.Series([e is None for e in refusals]))
    run = transform_frame(transform, accepted.lazy())
    counts, batch = pl.collect_all([run.counts, run.output.select(transform.output_columns)])
    assert run.report_from(counts).problems() == []  # every accepted row passes batch too
    assert batch.columns == transform.output_columns
    assert all(dtype == pl.Float64 for dtype in batch.dtypes)
    online = [
        transform.transform_one(r) for r, e in zip(records, refusals, strict=True) if e is None
    ]
    rows = batch.rows() if batch.width else [()] * accepted.height
    for i, (got, row) in enumerate(zip(online, rows, strict=True)):
        assert len(got) == len(row)
        for name, a, b in zip(transform.output_columns, got, row, strict=True):
            assert close(a, b), f"row {i} {name}: online {a!r} != batch {b!r}"
    for i, error in enumerate(refusals):
        if error is not None:  # the same row alone: the batch report refuses it
            report = transform_frame(transform, frame.slice(i, 1).lazy()).report()
            assert report.problems(), (records[i], error)
            with pytest.raises(DataCheckFailed, match="transform unpublished: column "):
                report.check()


@pytest.mark.parametrize("case", sorted(CASES))
def test_fit_is_deterministic(case: str, tables: dict[str, Path]) -> None:
    first = fitted(case, tables).state
    frame = training_frame([case])
    again = fit_frame(config_for([case], tables), frame).state
    assert json.dumps(first, sort_keys=True) == json.dumps(again, sort_keys=True)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    other = fit_frame(config_for([case], tables), shuffled)
    if CASES[case][1][0]["type"] == "target":
        # encodings are sums of 0/1 labels: exact in any order
        assert (
            other.state["columns"][0]["state"]["vocabulary"]
            == (first["columns"][0]["state"]["vocabulary"])
        )
    head = frame.head(50)
    a = fitted(case, tables).transform.transform_batch(head.lazy()).collect()
    b = other.transform.transform_batch(head.lazy()).collect()
    for column in a.columns:
        for x, y in zip(a[column].to_list(), b[column].to_list(), strict=True):
            if isinstance(x, float) or isinstance(y, float):
                assert close(x, y), (column, x, y)
            else:
                assert x == y


@pytest.mark.parametrize("case", sorted(CASES))
def test_state_round_trips_through_json(case: str, tables: dict[str, Path]) -> None:
    outcome = fitted(case, tables)
    state = json.loads(json.dumps(outcome.state))
    reloaded = FittedTransform(state, outcome.tables)
    frame = training_frame([case])
    a = outcome.transform.transform_batch(frame.lazy()).collect()
    b = reloaded.transform_batch(frame.lazy()).collect()
    assert a.equals(b)
    assert reloaded.output_columns == outcome.transform.output_columns
    assert reloaded.online_source == outcome.transform.online_source


@pytest.mark.parametrize("case", sorted(CASES))
def test_batch_and_online_agree_on_training_rows(case: str, tables: dict[str, Path]) -> None:
    assert_parity(fitted(case, tables).transform, training_frame([case]))


extreme_floats = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, -1.0, -1.0000001, 1e308, -1e308, 5e-324, 1e-300]),
    st.floats(-100, 100),
)
categories = st.one_of(st.none(), st.sampled_from(KNOWN), st.text(max_size=4))
instants = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
)
aware = st.one_of(st.none(), instants)
naive = st.one_of(st.none(), instants.map(lambda t: t.replace(tzinfo=None)))
# values a batch column of each training column's dtype can hold (an aware instant becomes the
# column's zone); the generated function's odd inputs are tests/test_transform_online_fast.py
BY_SOURCE = {
    "num": extreme_floats, "pos": extreme_floats, "neg": extreme_floats,
    "cnt": st.one_of(st.none(), st.integers(-(2**62), 2**62), st.integers(0, 60)),
    "flag": st.one_of(st.none(), st.booleans()),
    "cat": categories,
    "ts": aware, "ts_zoned": aware, "ts_berlin": aware, "ts_sydney": aware, "ts_naive": naive,
    "ref": aware, "ref_zoned": aware, "ref_berlin": aware, "ref_naive": naive,
    "pid": st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1), st.integers(-3, 45)),
    "sku": st.one_of(st.none(), st.sampled_from([f"s{i}" for i in range(9)]), st.text(max_size=3)),
    "y": st.booleans(),
}  # fmt: skip


def records_for(case: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = {name: BY_SOURCE[name] for name in training_frame([case]).columns if name != case}
    return st.fixed_dictionaries({case: BY_SOURCE[CASES[case][0]], **fields})


@pytest.mark.parametrize("case", sorted(CASES))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_batch_and_online_agree_on_random_records(
    case: str, tables: dict[str, Path], data: st.DataObject
) -> None:
    records = data.draw(st.lists(records_for(case), min_size=1, max_size=12))
    frame = pl.DataFrame(records, schema=training_frame([case]).schema)
    assert_parity(fitted(case, tables).transform, frame)


@pytest.mark.parametrize("case", sorted(CASES))
def test_unknown_and_missing_values(case: str, tables: dict[str, Path]) -> None:
    """Unknown categories and ids never fail; a missing value fails only a numeric column
    whose policy refuses it (with a one-line InputError naming the column)."""
    transform = fitted(case, tables).transform
    frame = training_frame([case])
    blank = dict.fromkeys(frame.columns)
    unknown = frame.row(0, named=True)
    source = CASES[case][0]
    unknown[case] = {"cat": "never-seen", "pid": 10**12, "sku": "zzz"}.get(source, unknown[case])
    assert len(transform.transform_one(unknown)) == len(transform.output_columns)
    kind = CASES[case][1][0]["type"]
    policy = transform.state["columns"][0]["state"].get("policy")
    if policy is not None and policy["null"] == "error":
        with pytest.raises(
            InputError,
            match=rf"^column '{case}': None is missing and nothing "
            r"fills it \(on_null: error\)",
        ):
            transform.transform_one(blank)
        return
    out = transform.transform_one(blank)
    assert len(out) == len(transform.output_columns)
    if kind in ("onehot", "ordinal", "frequency", "target", "embedding"):
        # encoders never emit a missing value for a missing categorical/id input
        assert None not in out
    elif kind == "temporal":
        assert out == [None] * len(transform.output_columns)
    elif policy is not None and policy["null"] == "keep":
        assert out == [None]
    elif policy is not None:
        assert None not in out  # filled
