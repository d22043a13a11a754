"""Reading a configured source: the one place its derived columns are computed.

``scan_source`` is what every reader of a source calls (`training-set` and `materialize`
through the feature engine, `validate`, entity listing), so a derived column has the same
value wherever it is read, and contracts may cover it like any stored column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlpipe_cli.errors import ConfigError, InputError

if TYPE_CHECKING:
    import polars as pl

    from mlpipe_cli.config.sources import SourceConfig


def scan_source(source: SourceConfig, name: str) -> pl.LazyFrame:
    """The source's rows with its ``derived`` columns added (in config order, so a derived
    column may use an earlier one; a derived column named like a stored one replaces it).

    Raises ConfigError naming ``sources.<name>.derived.<column>`` when an expression does not
    parse or refers to a column that does not exist.
    """
    import polars as pl

    from mlpipe_cli.io import scan_parquet

    lazy = scan_parquet(source.path)
    if not source.derived:
        return lazy
    try:
        columns = lazy.collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise InputError(f"cannot read source {name!r}: {_first_line(exc)}") from None
    for column, text in source.derived.items():
        where = f"sources.{name}.derived.{column}"
        try:
            expr = pl.sql_expr(text)
        except (pl.exceptions.PolarsError, ValueError) as exc:
            raise ConfigError(
                f"{where}: {text!r} is not a Polars SQL expression: {_first_line(exc)}"
            ) from None
        lazy = lazy.with_columns(expr.alias(column))
        try:
            lazy.collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise ConfigError(
                f"{where}: cannot compute {text!r}: {_first_line(exc)}",
                hint=f"columns available: {', '.join(columns)}",
            ) from None
        if column not in columns:
            columns.append(column)
    return lazy


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
