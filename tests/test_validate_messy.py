"""SQL row checks on messy data: NaN and ±inf fail them as they fail the range checks.

Polars orders NaN above every number, so `amount > 0` used to pass a NaN amount, and a +inf
passed `amount > 0` although the range check `gt: 0` fails it. The rule now
(docs/validate.md, "NaN and ±inf"): NaN and ±inf in a float column a check reads are read as
NULL (unknown), and an unknown verdict they cause fails the row — so a row holding one passes
only when the expression is true whatever the value. Real NULLs keep the SQL CHECK rule
(unknown passes).

Oracles are plain Python loops over the rows with hand-written three-valued logic; they share
no code with the engine.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.validation import validate_source
from mlpipe_cli.validation.engine import _sql_check_fails

NAN, INF = math.nan, math.inf

# -- a tiny three-valued (Kleene) logic for the oracles; None = unknown --------------------


def unknown_if_not_finite(value: Any) -> Any:
    """What the rule reads a float as: NaN and ±inf are unknown, like NULL."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def cmp(a: Any, op: str, b: Any) -> bool | None:
    if a is None or b is None:
        return None
    return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b, "=": a == b}[op]


def and3(*values: bool | None) -> bool | None:
    if any(v is False for v in values):
        return False
    return None if any(v is None for v in values) else True


def or3(*values: bool | None) -> bool | None:
    if any(v is True for v in values):
        return True
    return None if any(v is None for v in values) else False


def not3(value: bool | None) -> bool | None:
    return None if value is None else not value


def add3(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


# expression -> (float columns it reads, oracle over a row dict with non-finite read as None)
CHECKS: dict[str, tuple[list[str], Callable[[dict[str, Any]], bool | None]]] = {
    "amount > 0": (["amount"], lambda r: cmp(r["amount"], ">", 0)),
    "amount >= 0 AND amount <= 100": (
        ["amount"],
        lambda r: and3(cmp(r["amount"], ">=", 0), cmp(r["amount"], "<=", 100)),
    ),
    "NOT (amount <= 0)": (["amount"], lambda r: not3(cmp(r["amount"], "<=", 0))),
    "kind = 'refund' OR amount >= 0": (
        ["amount"],
        lambda r: or3(cmp(r["kind"], "=", "refund"), cmp(r["amount"], ">=", 0)),
    ),
    "amount IS NULL OR amount > 0": (
        ["amount"],
        lambda r: or3(r["amount"] is None, cmp(r["amount"], ">", 0)),
    ),
    "amount + fee < 50": (["amount", "fee"], lambda r: cmp(add3(r["amount"], r["fee"]), "<", 50)),
    "n >= 0": ([], lambda r: cmp(r["n"], ">=", 0)),
    # an explicit NULL allowance must not let ±inf through by reading them as NULL
    "amount IS NULL OR amount < 1000": (
        ["amount"],
        lambda r: or3(r["amount"] is None, cmp(r["amount"], "<", 1000)),
    ),
    "COALESCE(amount, 0) >= 0": (
        ["amount"],
        lambda r: cmp(0 if r["amount"] is None else r["amount"], ">=", 0),
    ),
    # SQL CASE: a condition that is not true (false or unknown) takes the ELSE branch
    "CASE WHEN amount > 100 THEN kind = 'sale' ELSE TRUE END": (
        ["amount"],
        lambda r: cmp(r["kind"], "=", "sale") if cmp(r["amount"], ">", 100) is True else True,
    ),
    "amount IS NOT NULL": (["amount"], lambda r: r["amount"] is not None),
}


def nan_as_unknown(value: Any) -> Any:
    """NaN read as unknown, ±inf kept as the numbers they are."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def oracle_fails_by(verdict: Callable[[dict[str, Any]], bool | None], floats: list[str],
                    row: dict[str, Any]) -> bool:  # fmt: skip
    """Does this row fail the check? With NaN/±inf read as unknown: false fails, and unknown
    fails when a NaN/±inf caused it; a row holding ±inf must also hold with ±inf as numbers."""
    holds_non_finite = any(isinstance(row[c], float) and not math.isfinite(row[c]) for c in floats)
    value = verdict({k: unknown_if_not_finite(v) for k, v in row.items()})
    if value is False or (value is None and holds_non_finite):
        return True
    if any(isinstance(row[c], float) and math.isinf(row[c]) for c in floats):
        return verdict({k: nan_as_unknown(v) for k, v in row.items()}) is not True
    return False


def oracle_fails(expr: str, row: dict[str, Any]) -> bool:
    floats, verdict = CHECKS[expr]
    return oracle_fails_by(verdict, floats, row)


# -- helpers ---------------------------------------------------------------------------------


SCHEMA = {"n": pl.Int64, "amount": pl.Float64, "fee": pl.Float32, "kind": pl.String}


def frame_of(rows: list[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=SCHEMA)


def config_for(tmp: Path, path: Path, checks: list[dict[str, Any]]) -> Any:
    columns = {
        "n": {"dtype": "int64", "nullable": True},
        "amount": {"dtype": "float64", "nullable": True},
        "fee": {"dtype": "float32", "nullable": True},
        "kind": {"dtype": "string", "nullable": True},
    }
    text = yaml.safe_dump(
        {
            "pipeline": "t",
            "sources": {"pay": {"path": str(path), "columns": columns, "checks": checks}},
        }
    )
    return load_config_text(text, source_name="t.yaml", base_dir=tmp)


def check(report: Any, check_id: str) -> Any:
    return next(c for c in report.checks if c.id == check_id)


MESSY_ROWS = [
    {"n": 1, "amount": 12.5, "fee": 1.0, "kind": "sale"},
    {"n": 2, "amount": NAN, "fee": 1.0, "kind": "sale"},  # NaN: fails amount > 0
    {"n": 3, "amount": INF, "fee": 0.5, "kind": "sälë"},  # +inf: fails like a range check
    {"n": 4, "amount": -INF, "fee": 0.5, "kind": "refund"},  # -inf, but a refund
    {"n": 5, "amount": None, "fee": None, "kind": None},  # NULL: unknown passes (SQL CHECK)
    {"n": -6, "amount": -3.0, "fee": NAN, "kind": "退款"},  # a plain failure; NaN fee
    {"n": 7, "amount": NAN, "fee": 2.0, "kind": "refund"},  # NaN, but a refund
    {"n": None, "amount": 0.0, "fee": -INF, "kind": ""},
]


# -- the reported bug, by hand ----------------------------------------------------------


def test_nan_fails_a_sql_comparison_check_and_is_quarantined(tmp_path) -> None:
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(tmp_path, path, [{"name": "positive", "expr": "amount > 0"}])
    report = validate_source(
        config, "pay", quarantine_path=tmp_path / "q.parquet", out_path=tmp_path / "o.parquet"
    )
    result = check(report, "pay.check.positive")
    # rows 1 (NaN), 2 (+inf), 3 (-inf), 5 (-3.0), 6 (NaN), 7 (0.0); row 4 is NULL and passes
    assert result.status == "fail"
    assert result.failures == 6
    assert [e["row"] for e in result.examples] == [1, 2, 3, 5, 6]
    assert "(or hold NaN/inf in 'amount')" in result.message
    quarantined = pl.read_parquet(tmp_path / "q.parquet")
    assert quarantined["_row"].to_list() == [1, 2, 3, 5, 6, 7]
    assert all(f == ["pay.check.positive"] for f in quarantined["_failed_checks"].to_list())
    assert pl.read_parquet(tmp_path / "o.parquet")["n"].to_list() == [1, 5]


def test_nan_and_inf_give_the_sql_check_the_range_checks_verdict(tmp_path) -> None:
    """`amount >= 0 AND amount <= 100` as SQL fails the rows `min: 0, max: 100` fails."""
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    text = yaml.safe_dump(
        {
            "pipeline": "t",
            "sources": {
                "pay": {
                    "path": str(path),
                    "columns": {
                        "amount": {"dtype": "float64", "nullable": True, "min": 0, "max": 100}
                    },
                    "checks": [{"name": "range", "expr": "amount >= 0 AND amount <= 100"}],
                }
            },
        }
    )
    config = load_config_text(text, source_name="t.yaml", base_dir=tmp_path)
    report = validate_source(config, "pay", quarantine_path=tmp_path / "q.parquet")
    sql_rows = {e["row"] for e in check(report, "pay.check.range").examples}
    range_rows = {e["row"] for e in check(report, "pay.amount.min").examples} | {
        e["row"] for e in check(report, "pay.amount.max").examples
    }
    assert sql_rows == range_rows == {1, 2, 3, 5, 6}
    failed = pl.read_parquet(tmp_path / "q.parquet").select("_row", "_failed_checks")
    for row, checks in failed.iter_rows():
        assert "pay.check.range" in checks, row


def test_a_check_true_whatever_the_value_still_passes(tmp_path) -> None:
    """Kleene logic: a refund passes `kind = 'refund' OR amount >= 0` with a NaN/-inf amount;
    `amount IS NULL OR amount > 0` lets NaN through on purpose (read as NULL), and +inf (a
    number > 0), but not -inf (row 3: neither NULL nor > 0)."""
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(
        tmp_path,
        path,
        [
            {"name": "refunds", "expr": "kind = 'refund' OR amount >= 0"},
            {"name": "nan_ok", "expr": "amount IS NULL OR amount > 0"},
        ],
    )
    report = validate_source(config, "pay")
    assert [e["row"] for e in check(report, "pay.check.refunds").examples] == [1, 2, 5]
    assert [e["row"] for e in check(report, "pay.check.nan_ok").examples] == [3, 5, 7]


def test_checks_on_non_float_columns_are_unchanged(tmp_path) -> None:
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(tmp_path, path, [{"name": "n_ok", "expr": "n >= 0"}])
    result = check(validate_source(config, "pay"), "pay.check.n_ok")
    assert [e["row"] for e in result.examples] == [5]  # the null n (row 7) passes
    assert "NaN" not in result.message


def test_a_cast_that_crashed_on_nan_now_fails_the_row(tmp_path) -> None:
    """`CAST(amount AS INT)` used to crash the whole check (status error, exit 2) on a NaN."""
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(tmp_path, path, [{"name": "whole", "expr": "CAST(amount AS INT) >= 0"}])
    result = check(validate_source(config, "pay"), "pay.check.whole")
    assert result.status == "fail"
    assert [e["row"] for e in result.examples] == [1, 2, 3, 5, 6]


def test_validate_cli_exits_1_on_a_nan_only_failure(cli, tmp_path) -> None:
    """Through the CLI, over a two-part Parquet directory: the NaN sits in the second part."""
    parts = tmp_path / "pay"
    parts.mkdir()
    frame_of([{"n": 1, "amount": 1.0, "fee": 0.0, "kind": "a"}]).write_parquet(
        parts / "part-0.parquet"
    )
    frame_of(
        [
            {"n": 2, "amount": 2.0, "fee": 0.0, "kind": "ü"},
            {"n": 3, "amount": NAN, "fee": 0.0, "kind": "b"},
        ]
    ).write_parquet(parts / "part-1.parquet")
    config_path = tmp_path / "mlpipe.yaml"
    config_path.write_text(
        yaml.safe_dump(
            {
                "pipeline": "t",
                "artifact_dir": str(tmp_path / "artifacts"),
                "sources": {
                    "pay": {
                        "path": str(parts),
                        "columns": {"amount": {"dtype": "float64"}},
                        "checks": [{"name": "positive", "expr": "amount > 0"}],
                    }
                },
            }
        )
    )
    result = cli("validate", "-c", config_path, "--quarantine", tmp_path / "q.parquet", "--json")
    assert result.exit_code == 1, result.stdout + result.stderr
    assert pl.read_parquet(tmp_path / "q.parquet")["_row"].to_list() == [2]


def test_the_rewrite_falls_back_to_failing_every_non_finite_row() -> None:
    """A column referenced in a shape the rewrite does not recognise (here a regex selector)
    cannot be read as NULL; then every row holding NaN/±inf fails — never a silent pass."""
    frame = pl.DataFrame({"amount": [1.0, NAN, INF, None, -1.0, -INF]})
    selector = pl.col("^amount$") > 0
    fails = frame.select(_sql_check_fails(selector, ["amount"]).fill_null(False))
    assert fails.to_series().to_list() == [False, True, True, False, True, True]


# -- property: the engine equals the Python oracle, and the split loses nothing ----------

finite_or_not = st.one_of(
    st.none(),
    st.sampled_from([NAN, INF, -INF, 0.0, -0.0]),
    st.floats(-200, 200, allow_nan=False, allow_infinity=False),
)
messy_rows = st.lists(
    st.fixed_dictionaries(
        {
            "n": st.one_of(st.none(), st.integers(-3, 3)),
            "amount": finite_or_not,
            # float32 values: exactly representable, so Python and Polars add the same numbers
            "fee": finite_or_not.map(
                lambda v: v if v is None else float(pl.Series([v]).cast(pl.Float32)[0])
            ),
            "kind": st.one_of(st.none(), st.sampled_from(["refund", "sale", "ré", "退款", ""])),
        }
    ),
    max_size=30,
)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=messy_rows,
    exprs=st.lists(st.sampled_from(sorted(CHECKS)), min_size=1, max_size=3, unique=True),
)
def test_sql_checks_match_a_python_loop_on_messy_rows(tmp_path_factory, rows, exprs) -> None:
    tmp = tmp_path_factory.mktemp("messy")
    path = tmp / "pay.parquet"
    frame = frame_of(rows)
    frame.write_parquet(path)
    checks = [{"name": f"c{i}", "expr": e} for i, e in enumerate(exprs)]
    report = validate_source(
        config_for(tmp, path, checks),
        "pay",
        quarantine_path=tmp / "q.parquet",
        out_path=tmp / "o.parquet",
    )
    # Polars wrote and read the Float32 fee: compare with what it holds
    stored = pl.read_parquet(path).to_dicts()
    expected_bad: list[int] = []
    for i, row in enumerate(stored):
        failed = [f"pay.check.c{j}" for j, e in enumerate(exprs) if oracle_fails(e, row)]
        if failed:
            expected_bad.append(i)
    for j, expr in enumerate(exprs):
        result = check(report, f"pay.check.c{j}")
        want = [i for i, row in enumerate(stored) if oracle_fails(expr, row)]
        assert result.failures == len(want), expr
        assert [e["row"] for e in result.examples] == want[:5], expr
    quarantined = pl.read_parquet(tmp / "q.parquet")
    passed = pl.read_parquet(tmp / "o.parquet")
    assert quarantined["_row"].to_list() == expected_bad
    assert passed.height + quarantined.height == frame.height

    def bag(df: pl.DataFrame) -> Counter:
        return Counter(
            tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)
            for row in df.select(list(SCHEMA)).iter_rows()
        )

    assert bag(passed) + bag(quarantined) == bag(frame)


@pytest.mark.parametrize("expr", sorted(CHECKS))
def test_every_oracle_expression_is_exercised_by_the_messy_rows(tmp_path, expr) -> None:
    """The hand-written rows make each expression fail on NaN/±inf somewhere (the property
    test above could draw rows that never do)."""
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    report = validate_source(config_for(tmp_path, path, [{"name": "c", "expr": expr}]), "pay")
    stored = pl.read_parquet(path).to_dicts()
    want = [i for i, row in enumerate(stored) if oracle_fails(expr, row)]
    assert check(report, "pay.check.c").failures == len(want)
    assert [e["row"] for e in check(report, "pay.check.c").examples] == want[:5]
