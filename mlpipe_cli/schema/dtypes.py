"""Contract dtype names (as written in YAML) <-> Polars dtypes, and dtype compatibility.

A contract names a dtype *family* for datetimes and fixed-size arrays: ``datetime`` accepts
any time unit (the zone is checked separately through ``timezone``), ``array[float32]`` any
width. Everything else must match exactly: ``int64`` is not satisfied by an ``int32`` column.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

INTEGER = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
FLOAT = ("float32", "float64")
NUMERIC = INTEGER + FLOAT
STRING_LIKE = ("string", "categorical")

# Lossless widening: a column may change OLD -> NEW without breaking readers.
_WIDENING: dict[str, set[str]] = {
    "int8": {"int16", "int32", "int64", "float32", "float64"},
    "int16": {"int32", "int64", "float32", "float64"},
    "int32": {"int64", "float64"},
    "int64": set(),
    "uint8": {"uint16", "uint32", "uint64", "int16", "int32", "int64", "float32", "float64"},
    "uint16": {"uint32", "uint64", "int32", "int64", "float32", "float64"},
    "uint32": {"uint64", "int64", "float64"},
    "uint64": set(),
    "float32": {"float64"},
    "categorical": {"string"},
    "list[float32]": {"list[float64]"},
    "array[float32]": {"array[float64]"},
}


def contract_dtype_of(dtype: pl.DataType | type[pl.DataType]) -> str | None:
    """The contract name of a Polars dtype, or None if contracts cannot name it."""
    import polars as pl

    simple = {
        pl.Int8: "int8", pl.Int16: "int16", pl.Int32: "int32", pl.Int64: "int64",
        pl.UInt8: "uint8", pl.UInt16: "uint16", pl.UInt32: "uint32", pl.UInt64: "uint64",
        pl.Float32: "float32", pl.Float64: "float64", pl.Boolean: "bool", pl.String: "string",
        pl.Date: "date",
    }  # fmt: skip
    for klass, name in simple.items():
        if dtype == klass:
            return name
    if isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "categorical"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if isinstance(dtype, pl.Duration):
        return "duration"
    if isinstance(dtype, pl.List) and dtype.inner in (pl.Float64, pl.Float32):
        return f"list[{contract_dtype_of(dtype.inner)}]"
    if isinstance(dtype, pl.Array) and dtype.inner in (pl.Float64, pl.Float32):
        return f"array[{contract_dtype_of(dtype.inner)}]"
    return None


def describe_dtype(dtype: pl.DataType) -> str:
    """Human spelling of an observed dtype, e.g. ``datetime[us, UTC]``, ``binary``."""
    import polars as pl

    if isinstance(dtype, pl.Datetime):
        zone = dtype.time_zone or "naive"
        return f"datetime[{dtype.time_unit}, {zone}]"
    if dtype == pl.Binary:
        return "binary (bytes, not UTF-8 text)"
    name = contract_dtype_of(dtype)
    return name if name is not None else str(dtype).lower()


def to_polars(
    name: str, *, timezone: str | None = None, time_unit: str = "us", width: int | None = None
) -> pl.DataType:
    """The concrete Polars dtype for a contract dtype (used for pandera schemas)."""
    import polars as pl

    table = {
        "int8": pl.Int8, "int16": pl.Int16, "int32": pl.Int32, "int64": pl.Int64,
        "uint8": pl.UInt8, "uint16": pl.UInt16, "uint32": pl.UInt32, "uint64": pl.UInt64,
        "float32": pl.Float32, "float64": pl.Float64, "bool": pl.Boolean, "string": pl.String,
        "date": pl.Date, "categorical": pl.Categorical,
    }  # fmt: skip
    if name in table:
        return table[name]()
    if name == "datetime":
        return pl.Datetime(time_unit, timezone)  # type: ignore[arg-type]
    if name == "duration":
        return pl.Duration(time_unit)  # type: ignore[arg-type]
    inner = pl.Float32() if name.endswith("float32]") else pl.Float64()
    if name.startswith("list["):
        return pl.List(inner)
    return pl.Array(inner, width or 1)


def dtype_matches(name: str, dtype: pl.DataType) -> bool:
    """Does an observed dtype satisfy the contract dtype family (zone checked elsewhere)?"""
    return contract_dtype_of(dtype) == name


def is_widening(old: str, new: str) -> bool:
    return old == new or new in _WIDENING.get(old, set())


def compatible_for_rename(name: str, dtype: pl.DataType) -> bool:
    """Could a column of ``dtype`` be the contract column ``name`` under another name?"""
    observed = contract_dtype_of(dtype)
    if observed is None:
        return False
    return observed == name or is_widening(observed, name) or is_widening(name, observed)
