"""SQL row checks through a column selector follow the NaN/±inf rule too.

Polars SQL accepts ``COLUMNS('regex')`` for a column. Such a selector is no root name of the
expression, so the rule "NaN and ±inf in a float column the check reads are read as NULL, and
an unknown verdict they cause fails the row" did not see the column: ``COLUMNS('^amount$') > 0``
passed NaN (Polars orders NaN above every number). Now a selector that picks one column is
resolved to that column before the rule applies; one that picks several columns, a float among
them, cannot be read value by value and is refused (check status ``error``, exit 2); one that
picks no column is an ``error`` with a reason, not a crash.

The oracle is the plain Python loop with hand-written three-valued logic of
tests/test_validate_messy.py (it shares no code with the engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import pytest

from mlpipe_cli.validation import validate_source
from tests.test_validate_messy import (
    MESSY_ROWS,
    and3,
    check,
    cmp,
    config_for,
    frame_of,
    or3,
    oracle_fails_by,
)

oracle_fails = oracle_fails_by  # the Python loop of tests/test_validate_messy.py


# selector form -> (float columns read, hand-written verdict)
SELECTOR_CHECKS: dict[str, tuple[list[str], Any]] = {
    "COLUMNS('^amount$') > 0": (["amount"], lambda r: cmp(r["amount"], ">", 0)),
    "COLUMNS('^(amount)$') >= 0 AND COLUMNS('^amount$') <= 100": (
        ["amount"],
        lambda r: and3(cmp(r["amount"], ">=", 0), cmp(r["amount"], "<=", 100)),
    ),
    "kind = 'refund' OR COLUMNS('^amount$') >= 0": (
        ["amount"],
        lambda r: or3(cmp(r["kind"], "=", "refund"), cmp(r["amount"], ">=", 0)),
    ),
    "COLUMNS('^amo.nt$') IS NULL OR amount > 0": (
        ["amount"],
        lambda r: or3(r["amount"] is None, cmp(r["amount"], ">", 0)),
    ),
    "COLUMNS('^fee$') < 1.5": (["fee"], lambda r: cmp(r["fee"], "<", 1.5)),
    "COLUMNS('^n$') >= 0": ([], lambda r: cmp(r["n"], ">=", 0)),
}


@pytest.mark.parametrize("expr", sorted(SELECTOR_CHECKS))
def test_a_selector_check_fails_the_rows_the_python_loop_fails(tmp_path: Path, expr: str) -> None:
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(tmp_path, path, [{"name": "c", "expr": expr}])
    quarantine = tmp_path / "q.parquet"
    report = validate_source(config, "pay", quarantine_path=quarantine)
    floats, verdict = SELECTOR_CHECKS[expr]
    want = [i for i, row in enumerate(MESSY_ROWS) if oracle_fails(verdict, floats, row)]
    result = check(report, "pay.check.c")
    assert result.status == ("fail" if want else "pass"), result.message
    assert result.failures == len(want)
    assert pl.read_parquet(quarantine)["_row"].to_list() == want
    if floats:  # the report names the float columns the selector read
        assert result.details["non_finite_columns"] == sorted(floats)


def test_a_selector_reads_nan_as_the_named_column_does(tmp_path: Path) -> None:
    """By hand: rows 1 (NaN), 2 (+inf), 3 (-inf), 5 (-3.0), 6 (NaN), 7 (0.0) fail."""
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(tmp_path, path, [{"name": "by_name", "expr": "amount > 0"},
                                         {"name": "by_regex", "expr": "COLUMNS('^amount$') > 0"}])  # fmt: skip
    quarantine = tmp_path / "q.parquet"
    report = validate_source(config, "pay", quarantine_path=quarantine)
    by_name, by_regex = check(report, "pay.check.by_name"), check(report, "pay.check.by_regex")
    assert by_regex.failures == by_name.failures == 6
    assert [e["row"] for e in by_regex.examples] == [1, 2, 3, 5, 6]
    failed = pl.read_parquet(quarantine)
    assert failed["_row"].to_list() == [1, 2, 3, 5, 6, 7]
    assert failed["_failed_checks"].to_list() == [["pay.check.by_name", "pay.check.by_regex"]] * 6


@pytest.mark.parametrize(
    "expr",
    ["COLUMNS('^(amount|fee)$') > 0", "GREATEST(COLUMNS('^(amount|fee)$')) > 0"],
)
def test_a_selector_of_several_float_columns_is_refused(tmp_path: Path, expr: str) -> None:
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(tmp_path, path, [{"name": "c", "expr": expr}])
    report = validate_source(config, "pay")
    result = check(report, "pay.check.c")
    assert result.status == "error"
    assert "selector picks 2 columns" in result.message
    assert "'amount', 'fee'" in result.message
    assert "name each column instead" in result.message
    assert report.status == "error"


def test_a_selector_of_no_column_is_an_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "pay.parquet"
    frame_of(MESSY_ROWS).write_parquet(path)
    config = config_for(tmp_path, path, [{"name": "c", "expr": "COLUMNS('^nothing$') > 0"}])
    result = check(validate_source(config, "pay"), "pay.check.c")
    assert result.status == "error"
    assert "yields 0 columns, not one boolean" in result.message


def test_the_cli_exits_2_on_a_refused_selector_and_1_on_a_nan_only_failure(
    cli: Any, tmp_path: Path
) -> None:
    import yaml

    path = tmp_path / "pay.parquet"
    only_nan = [{"n": 1, "amount": 1.0, "fee": 1.0, "kind": "a"},
                {"n": 2, "amount": float("nan"), "fee": 1.0, "kind": "b"}]  # fmt: skip
    frame_of(only_nan).write_parquet(path)
    columns = {c: {"dtype": d, "nullable": True} for c, d in
               (("n", "int64"), ("amount", "float64"), ("fee", "float32"), ("kind", "string"))}  # fmt: skip
    for expr, code in (("COLUMNS('^amount$') > 0", 1), ("COLUMNS('^(amount|fee)$') > 0", 2)):
        config = tmp_path / "mlpipe.yaml"
        config.write_text(yaml.safe_dump({"pipeline": "t", "artifact_dir": str(tmp_path / "a"),
            "sources": {"pay": {"path": str(path), "columns": columns,
                                "checks": [{"name": "c", "expr": expr}]}}}))  # fmt: skip
        result = cli("validate", "--no-publish", "--json", "-c", config)
        assert result.exit_code == code, (expr, result.stderr)
        [got] = [c for c in result.json()["sources"][0]["checks"] if c["id"] == "pay.check.c"]
        assert got["status"] == ("fail" if code == 1 else "error")
        if code == 1:
            assert got["failures"] == 1
