"""Propose a column contract from data (`mlpipe schema infer`), in one pass over the scan."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.schema.dtypes import FLOAT, INTEGER, contract_dtype_of

if TYPE_CHECKING:
    import polars as pl

MAX_ALLOWED = 20  # string columns with at most this many distinct values get `allowed`


def observe(lazy: pl.LazyFrame, *, max_allowed: int = MAX_ALLOWED) -> dict[str, Any]:
    """Per-column facts: dtype, rows, nulls, min/max (numeric), distinct values (strings).

    One streaming ``select`` computes every statistic; the distinct values of low-cardinality
    string columns are fetched only for columns whose distinct count is small.
    """
    import polars as pl

    schema = lazy.collect_schema()
    exprs: list[pl.Expr] = [pl.len().cast(pl.Int64).alias("__len")]
    for name, dtype in schema.items():
        col = pl.col(name)
        exprs.append(col.null_count().cast(pl.Int64).alias(f"null:{name}"))
        kind = contract_dtype_of(dtype)
        if kind in INTEGER or kind in FLOAT:
            finite = col.filter(col.is_finite()) if kind in FLOAT else col
            exprs.append(finite.min().cast(pl.Float64).alias(f"min:{name}"))
            exprs.append(finite.max().cast(pl.Float64).alias(f"max:{name}"))
            if kind in FLOAT:
                exprs.append((~col.is_finite()).sum().cast(pl.Int64).alias(f"nonfinite:{name}"))
        elif kind in ("string", "categorical"):
            exprs.append(col.cast(pl.String).n_unique().cast(pl.Int64).alias(f"nunique:{name}"))
        if dtype == pl.Boolean or kind in INTEGER:
            exprs.append(col.n_unique().cast(pl.Int64).alias(f"nunique:{name}"))
    from mlpipe_cli.errors import InputError

    try:
        row = lazy.select(exprs).collect(engine="streaming").row(0, named=True)
    except Exception as exc:
        raise InputError(f"cannot read the data: {str(exc).splitlines()[0]}") from None
    columns: dict[str, Any] = {}
    small = []
    for name, dtype in schema.items():
        fact: dict[str, Any] = {
            "dtype": contract_dtype_of(dtype),
            "polars_dtype": str(dtype),
            "nulls": row[f"null:{name}"],
        }
        if isinstance(dtype, pl.Datetime):
            fact["timezone"] = dtype.time_zone
        for key in ("min", "max", "nonfinite", "nunique"):
            if f"{key}:{name}" in row:
                fact[key] = row[f"{key}:{name}"]
        if (
            fact["dtype"] in ("string", "categorical")
            and 0 < (fact.get("nunique") or 0) <= max_allowed
        ):
            small.append(name)
        columns[name] = fact
    if small:
        values = lazy.select(
            [pl.col(c).cast(pl.String).drop_nulls().unique().sort().implode() for c in small]
        ).collect(engine="streaming")
        for name in small:
            columns[name]["values"] = values[name][0].to_list()
    return {"rows": row["__len"], "columns": columns}


def infer_contract(lazy: pl.LazyFrame, *, max_allowed: int = MAX_ALLOWED) -> dict[str, Any]:
    """A proposed source contract (YAML-ready dict): dtypes, nullability, ranges, sets."""
    facts = observe(lazy, max_allowed=max_allowed)
    rows = facts["rows"]
    columns: dict[str, Any] = {}
    notes: dict[str, str] = {}  # column -> why a check was left out (a YAML comment)
    unsupported = []
    for name, fact in facts["columns"].items():
        if fact["dtype"] is None:
            unsupported.append(f"{name} ({fact['polars_dtype']})")
            continue
        entry: dict[str, Any] = {"dtype": fact["dtype"]}
        if fact["nulls"]:
            entry["nullable"] = True
        if "timezone" in fact:
            entry["timezone"] = fact["timezone"]
        nonfinite = fact.get("nonfinite") or 0
        if nonfinite:
            # NaN and +-inf fail every range check and the contract has no key allowing them,
            # so a range would fail the very data it was inferred from: leave it out and say so
            span = ""
            if fact.get("min") is not None:
                span = f"; finite values span {_tidy(fact['min'])}..{_tidy(fact['max'])}"
            notes[name] = (
                f"{nonfinite} NaN/inf value{'s' if nonfinite != 1 else ''}: no min/max, "
                f"as NaN and inf fail every range check{span}"
            )
        elif fact.get("min") is not None and math.isfinite(fact["min"]):
            entry["min"] = _tidy(fact["min"])
            entry["max"] = _tidy(fact["max"])
        if fact["dtype"] in INTEGER and rows and fact.get("nunique") == rows and not fact["nulls"]:
            entry["unique"] = True
        if "values" in fact:
            entry["allowed"] = fact["values"]
        columns[name] = entry
    return {"columns": columns, "notes": notes, "unsupported": unsupported, "rows": rows}


def _tidy(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def path_for_config(data: Path | str, config_dir: Path | str) -> str:
    """``data`` as a config file in ``config_dir`` should name it: relative to that directory
    (the loader resolves relative paths from the config file's directory), so the project
    can move. Absolute only when no sensible relative path exists: another drive, or the two
    share nothing below the file-system root (``../../../tmp/x`` would break as soon as the
    project moves). Globs pass through unchanged apart from the prefix."""
    import os

    target = os.path.abspath(data)
    base = os.path.abspath(config_dir)
    try:
        relative = os.path.relpath(target, base)
        shared = os.path.commonpath([target, base])
    except ValueError:  # another drive (Windows)
        return Path(target).as_posix()
    if shared == os.path.splitdrive(target)[0] + os.sep:
        return Path(target).as_posix()
    return Path(relative).as_posix()


def contract_yaml(
    source_name: str, path: Path | str, proposal: dict[str, Any], *, config_path: str | None = None
) -> str:
    """YAML for a `sources:` entry, with one flow-style line per column. ``config_path`` is
    the entry's ``path:`` (default: ``path`` as given)."""
    import yaml

    lines = [
        f"# proposed contract for {source_name}, inferred from {proposal['rows']} rows of {path}",
        "# review it: observed ranges and value sets are a starting point, not a rule",
    ]
    for item in proposal["unsupported"]:
        lines.append(f"# column {item}: dtype not expressible in a contract, left out")
    lines.append(f"{source_name}:")
    # quoted when YAML needs it (a glob's leading `*` would read as an alias)
    lines.append(f"  path: {_key(str(path if config_path is None else config_path))}")
    lines.append("  columns:")
    notes = proposal.get("notes", {})
    for name, entry in proposal["columns"].items():
        flow = yaml.safe_dump(
            entry, default_flow_style=True, sort_keys=False, width=1_000_000, allow_unicode=True
        )
        note = f"  # {notes[name]}" if name in notes else ""
        lines.append(f"    {_key(name)}: {flow.strip()}{note}")
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    import yaml

    text = yaml.safe_dump(name, default_style=None, allow_unicode=True)
    return text.strip().removesuffix("\n...").strip()
