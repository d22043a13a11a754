"""Quarantine/out split: no row lost or duplicated, and the split matches a brute-force oracle."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import polars as pl
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlpipe_cli.config.loader import load_config_text
from mlpipe_cli.validation import validate_source

SQL = "a >= 0 OR s = 'a'"

ints = st.one_of(st.none(), st.integers(-5, 5))
floats = st.one_of(
    st.none(), st.sampled_from([math.nan, math.inf, -math.inf]), st.floats(-10, 10, allow_nan=False)
)
strings = st.one_of(st.none(), st.sampled_from(["a", "b", "ab", "ba", "c", "abc", ""]))
rows = st.lists(st.tuples(ints, floats, strings), min_size=0, max_size=40)


@st.composite
def contracts(draw):  # type: ignore[no-untyped-def]
    sev = st.sampled_from(["error", "warn"])
    a = {"dtype": "int64", "nullable": draw(st.booleans()), "unique": draw(st.booleans()),
         "severity": draw(sev)}  # fmt: skip
    if draw(st.booleans()):
        a["min"] = draw(st.integers(-5, 5))
    f = {"dtype": "float64", "nullable": True, "severity": draw(sev)}
    if draw(st.booleans()):
        f["max"] = draw(st.floats(-10, 10))
    s = {"dtype": "string", "nullable": draw(st.booleans()), "severity": draw(sev)}
    if draw(st.booleans()):
        s["allowed"] = draw(st.lists(st.sampled_from(["a", "b", "ab", "c"]), unique=True))
    if draw(st.booleans()):
        s["regex"] = "[ab]+"
    checks = [{"name": "sql", "expr": SQL, "severity": draw(sev)}] if draw(st.booleans()) else []
    return {"a": a, "f": f, "s": s}, checks


def oracle(data, columns, checks):  # type: ignore[no-untyped-def]
    """Per row: the list of failed check ids and whether an error-severity check failed."""
    out = []
    seen_a: set[int] = set()
    for a, f, s in data:
        failed: list[tuple[str, str]] = []
        ca, cf, cs = columns["a"], columns["f"], columns["s"]
        if not ca["nullable"] and a is None:
            failed.append(("t.a.nullable", ca["severity"]))
        if ca["unique"] and a is not None:
            if a in seen_a:
                failed.append(("t.a.unique", ca["severity"]))
            seen_a.add(a)
        if "min" in ca and a is not None and not a >= ca["min"]:
            failed.append(("t.a.min", ca["severity"]))
        if "max" in cf and f is not None and (not math.isfinite(f) or f > cf["max"]):
            failed.append(("t.f.max", cf["severity"]))
        if not cs["nullable"] and s is None:
            failed.append(("t.s.nullable", cs["severity"]))
        if "allowed" in cs and s is not None and s not in cs["allowed"]:
            failed.append(("t.s.allowed", cs["severity"]))
        if "regex" in cs and s is not None and not re.fullmatch(cs["regex"], s):
            failed.append(("t.s.regex", cs["severity"]))
        if checks:
            left = None if a is None else a >= 0
            right = None if s is None else s == "a"
            value = True if (left is True or right is True) else (
                None if (left is None or right is None) else False)  # fmt: skip
            if value is False:  # SQL CHECK semantics: unknown (null) passes
                failed.append(("t.check.sql", checks[0]["severity"]))
        out.append(failed)
    return out


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=rows, contract=contracts())
def test_quarantine_plus_out_is_the_input(tmp_path_factory, data, contract) -> None:
    columns, checks = contract
    tmp: Path = tmp_path_factory.mktemp("split")
    frame = pl.DataFrame(
        data, schema={"a": pl.Int64, "f": pl.Float64, "s": pl.String}, orient="row"
    )
    path = tmp / "in.parquet"
    frame.write_parquet(path)
    text = yaml.safe_dump({"pipeline": "p", "sources": {"t": {
        "path": str(path), "columns": columns, "checks": checks}}})  # fmt: skip
    config = load_config_text(text, source_name="p.yaml", base_dir=tmp)
    report = validate_source(
        config, "t", quarantine_path=tmp / "q.parquet", out_path=tmp / "o.parquet"
    )
    quarantined = pl.read_parquet(tmp / "q.parquet")
    passed = pl.read_parquet(tmp / "o.parquet")

    # nothing lost, nothing duplicated
    assert report.rows == frame.height == passed.height + quarantined.height
    assert report.quarantine["rows"] + report.out["rows"] == report.rows
    assert quarantined["_row"].n_unique() == quarantined.height

    def bag(df: pl.DataFrame) -> Counter:
        return Counter(tuple("nan" if isinstance(v, float) and math.isnan(v) else v for v in row)
                       for row in df.select("a", "f", "s").iter_rows())  # fmt: skip

    assert bag(frame) == bag(passed) + bag(quarantined)

    # the split is exactly the brute-force oracle, row for row
    expected = oracle(data, columns, checks)
    bad_rows = [i for i, failed in enumerate(expected) if any(sev == "error" for _, sev in failed)]
    assert quarantined["_row"].to_list() == bad_rows
    for row, failed in zip(quarantined["_row"], quarantined["_failed_checks"], strict=True):
        assert sorted(failed) == sorted(cid for cid, _ in expected[row])
    assert report.failed_rows == len(bad_rows)
    counts = Counter(cid for failed in expected for cid, _ in failed)
    for check in report.checks:
        if check.failures is not None and check.kind not in ("row_failure_rate", "all_null"):
            assert check.failures == counts.get(check.id, 0), check.id
