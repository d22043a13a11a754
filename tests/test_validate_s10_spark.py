"""engine: spark fails NaN/±inf in SQL row checks as the Polars engine does.

The rule (docs/validate.md, "NaN and ±inf"): NaN and ±inf in a float column a check reads are
read as NULL, and an unknown verdict they cause fails the row; a real NULL keeps the SQL CHECK
rule (unknown passes). Spark evaluates the row checks on Arrow batches of its tasks, so this
compares both engines' reports and splits on messy data split over two Parquet parts, and
both against a plain Python loop with hand-written three-valued logic.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from tests.test_validate_messy import MESSY_ROWS, and3, cmp, frame_of, or3, unknown_if_not_finite

pytestmark = [pytest.mark.spark, pytest.mark.slow]


def add3(a: Any, b: Any) -> Any:
    return None if a is None or b is None else a + b


# check -> (float columns it reads, hand-written verdict over a row with NaN/±inf as None)
CHECKS: dict[str, tuple[list[str], Any]] = {
    "positive": (["amount"], lambda r: cmp(r["amount"], ">", 0)),
    "refund_or_positive": (
        ["amount"],
        lambda r: or3(cmp(r["kind"], "=", "refund"), cmp(r["amount"], ">=", 0)),
    ),
    "bounded": (["amount"], lambda r: and3(cmp(r["amount"], ">=", 0), cmp(r["amount"], "<=", 100))),
    "total": (["amount", "fee"], lambda r: cmp(add3(r["amount"], r["fee"]), "<", 50)),
    "by_regex": (["amount"], lambda r: cmp(r["amount"], ">", 0)),
}
EXPRESSIONS = {
    "positive": "amount > 0",
    "refund_or_positive": "kind = 'refund' OR amount >= 0",
    "bounded": "amount >= 0 AND amount <= 100",
    "total": "amount + fee < 50",
    "by_regex": "COLUMNS('^amount$') > 0",
}


def failing_rows(name: str, rows: list[dict[str, Any]]) -> list[int]:
    floats, verdict = CHECKS[name]
    out = []
    for i, row in enumerate(rows):
        holds_non_finite = any(
            isinstance(row[c], float) and not math.isfinite(row[c]) for c in floats
        )
        value = verdict({k: unknown_if_not_finite(v) for k, v in row.items()})
        if value is False or (value is None and holds_non_finite):
            out.append(i)
    return out


def test_spark_fails_nan_and_inf_in_sql_checks_as_polars_does(
    spark: object, tmp_path: Path
) -> None:
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.validate import validate

    rows = MESSY_ROWS * 2  # 16 rows over two parts: a part boundary inside the data
    parts = tmp_path / "pay"
    parts.mkdir()
    frame_of(rows[:5]).write_parquet(parts / "a.parquet")
    frame_of(rows[5:]).write_parquet(parts / "b.parquet")
    columns = {c: {"dtype": d, "nullable": True} for c, d in
               (("n", "int64"), ("amount", "float64"), ("fee", "float32"), ("kind", "string"))}  # fmt: skip
    config = tmp_path / "mlpipe.yaml"
    config.write_text(yaml.safe_dump({
        "pipeline": "t",
        "artifact_dir": str(tmp_path / "artifacts"),
        "sources": {"pay": {"path": str(parts), "columns": columns,
                            "checks": [{"name": n, "expr": e} for n, e in EXPRESSIONS.items()]}},
    }))  # fmt: skip

    documents = {}
    for engine in ("polars", "spark"):
        result = validate(Project(config), engine=engine, publish=False,
                          quarantine=tmp_path / engine / "bad.parquet",
                          out=tmp_path / engine / "good.parquet")  # fmt: skip
        document = result.to_dict()
        document.pop("seconds")  # wall time, not a result
        for source in document["sources"]:  # their paths differ: compared below by content
            assert source.pop("quarantine")["rows"] + source.pop("out")["rows"] == len(rows)
        documents[engine] = document
    assert documents["spark"] == documents["polars"]

    checks = {c["id"]: c for c in documents["spark"]["sources"][0]["checks"]}
    for name in CHECKS:
        want = failing_rows(name, rows)
        got = checks[f"pay.check.{name}"]
        assert got["failures"] == len(want), (name, got)
        assert [e["row"] for e in got["examples"]] == want[:5], name
    bad = pl.read_parquet(tmp_path / "spark" / "bad.parquet")
    good = pl.read_parquet(tmp_path / "spark" / "good.parquet")
    quarantined = sorted(set().union(*(failing_rows(n, rows) for n in CHECKS)))
    assert bad["_row"].to_list() == quarantined
    assert bad.height + good.height == len(rows)
    assert bad.equals(pl.read_parquet(tmp_path / "polars" / "bad.parquet"))
    assert good.equals(pl.read_parquet(tmp_path / "polars" / "good.parquet"))
