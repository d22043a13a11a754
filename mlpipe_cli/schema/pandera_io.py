"""The column contract as a pandera (Polars backend) schema, for schema export.

``validate`` does not use pandera (importing it costs 0.65 s: it pulls pandas and hypothesis);
its dtype verdict is computed from the Polars schema and tested equal to what
``to_pandera(..., checks=False)`` gives. pandera is imported lazily, inside these functions.

``to_pandera`` builds a ``pandera.polars.DataFrameSchema`` from a ``SourceConfig``. With
``checks=True`` (export) every value check that pandera can express is included; regexes are
wrapped as ``^(?:...)$`` because pandera's ``str_matches`` anchors only the start. Free-form
SQL row checks, tolerances and severities have no pandera equivalent; ``export_yaml`` lists
them in a comment header so nothing is dropped silently.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlpipe_cli.schema.dtypes import dtype_matches, to_polars

if TYPE_CHECKING:
    import pandera.polars as pa  # at run time through _pandera.pandera_polars (no pyspark probe)
    import polars as pl

    from mlpipe_cli.config.sources import ColumnContract, SourceConfig


def full_match(regex: str) -> str:
    """Anchor a regex at both ends so it must match the whole value."""
    return f"^(?:{regex})$"


def pandera_dtype(contract: ColumnContract, observed: pl.DataType | None = None) -> Any:
    """The Polars dtype pandera should require for a contract column.

    Contract dtypes are families (``datetime`` = any unit, ``array[float32]`` = any width):
    when the observed dtype belongs to the family its unit/width is adopted, so pandera
    compares what the contract actually pins (family, and the zone for datetimes).
    """
    import polars as pl

    if observed is not None and dtype_matches(contract.dtype, observed):
        if isinstance(observed, pl.Datetime):
            return pl.Datetime(observed.time_unit, contract.timezone)
        return observed
    return to_polars(contract.dtype, timezone=contract.timezone)


def to_pandera(
    source: SourceConfig,
    *,
    observed: pl.Schema | None = None,
    checks: bool = True,
    name: str | None = None,
) -> pa.DataFrameSchema:
    from mlpipe_cli._pandera import pandera_polars

    pa = pandera_polars()

    columns = {}
    for column, contract in source.columns.items():
        column_checks = []
        if checks:
            column_checks = _value_checks(contract)
        columns[column] = pa.Column(
            pandera_dtype(contract, observed.get(column) if observed is not None else None),
            nullable=contract.nullable if checks else True,
            unique=contract.unique if checks else False,
            checks=column_checks or None,
            required=True,
        )
    unique = list(source.primary_key) if checks and source.primary_key else None
    return pa.DataFrameSchema(
        columns, strict=source.strict if checks else False, unique=unique, name=name
    )


def _value_checks(contract: ColumnContract) -> list[Any]:
    from mlpipe_cli._pandera import pandera_polars

    pa = pandera_polars()

    out = []
    if contract.min is not None:
        out.append(pa.Check.ge(contract.min))
    if contract.max is not None:
        out.append(pa.Check.le(contract.max))
    if contract.gt is not None:
        out.append(pa.Check.gt(contract.gt))
    if contract.lt is not None:
        out.append(pa.Check.lt(contract.lt))
    if contract.allowed is not None:
        out.append(pa.Check.isin(list(contract.allowed)))
    if contract.regex is not None:
        out.append(pa.Check.str_matches(full_match(contract.regex)))
    if contract.min_length is not None or contract.max_length is not None:
        out.append(pa.Check.str_length(contract.min_length, contract.max_length))
    return out


def export_yaml(source_name: str, source: SourceConfig) -> str:
    """A pandera YAML schema for one source (loadable with DataFrameSchema.from_yaml)."""
    schema = to_pandera(source, name=source_name)
    notes = []
    for check in source.checks:
        notes.append(f"row check {check.name!r} ({check.expr}) has no pandera equivalent")
    for column, contract in source.columns.items():
        if contract.severity != "error":
            notes.append(f"column {column!r} has severity {contract.severity} (pandera: error)")
        if contract.max_failure_rate is not None or contract.max_failures is not None:
            notes.append(f"column {column!r} tolerance is not expressible in pandera")
    if source.min_rows is not None or source.max_rows is not None:
        notes.append("min_rows/max_rows are not expressible in pandera")
    header = f"# pandera schema for source {source_name!r}, exported by mlpipe schema export\n"
    header += (
        "# regexes are anchored ^(?:...)$ because pandera's str_matches anchors only the start\n"
    )
    header += "".join(f"# not exported: {note}\n" for note in notes)
    body = schema.to_yaml()
    assert body is not None  # to_yaml returns the text when given no stream
    return header + body + ("" if body.endswith("\n") else "\n")
