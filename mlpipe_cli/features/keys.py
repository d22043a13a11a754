"""The one rule for comparing entity keys, offline (spine vs source columns) and online
(request values vs stored keys).

Two key columns join when their dtypes are compatible, compared as one common dtype:

* integers of any width and sign: as Int64 (UInt64 with UInt64: UInt64; UInt64 with a
  signed integer: Int128), so an Int32 spine key meets an Int64 source key, never overflowing;
* strings, categoricals and enums: as String (two categoricals compare by their text);
* an all-null column (dtype Null): as the other side;
* any other pair of equal dtypes (dates, booleans, ...): as that dtype.

Everything else is refused, loudly: in particular an integer key never meets a string key,
because "007" and 7 are different entities to one system and the same to another. Cast one
side explicitly instead (a source's ``derived: {user_id: "CAST(user_id AS BIGINT)"}``).

Online, request values arrive untyped (query strings are text); ``coerce_key_value`` maps a
value to the stored key's kind by the same rule: an integer key accepts an int or the decimal
text of one, a string key accepts text or an int (as its decimal text, since that is what the
request meant); anything else is an error, never a silent miss.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from mlpipe_cli.errors import InputError

if TYPE_CHECKING:
    from mlpipe_cli.config import PipelineConfig
    from mlpipe_cli.config.features import FeatureConfig

KeyKind = Literal["int", "str", "other"]

_DECIMAL_INT = re.compile(r"^[+-]?[0-9]+$")


class KeyTypeMismatch(InputError):
    """Two key dtypes that cannot be compared; the message says why (callers re-raise it
    naming the feature and columns)."""


def key_kind(dtype: pl.DataType) -> KeyKind:
    """'int' for integers, 'str' for strings/categoricals/enums, else 'other'."""
    if dtype.is_integer():
        return "int"
    if isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
        return "str"
    return "other"


def join_key_dtype(left: pl.DataType, right: pl.DataType) -> pl.DataType:
    """The dtype both key columns are cast to before they are compared (see the module
    docstring); raises KeyTypeMismatch when they cannot match."""
    if isinstance(left, pl.Null):
        return _canonical(right)
    if isinstance(right, pl.Null):
        return _canonical(left)
    kinds = (key_kind(left), key_kind(right))
    if kinds == ("int", "int"):
        unsigned64 = (left == pl.UInt64(), right == pl.UInt64())
        if all(unsigned64):
            return pl.UInt64()
        if any(unsigned64):
            return pl.Int128()
        return pl.Int64()
    if kinds == ("str", "str"):
        return pl.String()
    if "int" in kinds and "str" in kinds:
        raise KeyTypeMismatch("an integer key never equals a string key")
    if left == right and not left.is_float():
        return left
    if left.is_float() or right.is_float():
        raise KeyTypeMismatch("floating-point keys are not compared (rounding makes them miss)")
    raise KeyTypeMismatch("these types cannot be compared")


def _canonical(dtype: pl.DataType) -> pl.DataType:
    kind = key_kind(dtype)
    if kind == "int":
        return pl.UInt64() if dtype == pl.UInt64() else pl.Int64()
    if kind == "str":
        return pl.String()
    return dtype


def coerce_key_value(value: Any, kind: KeyKind, name: str) -> Any:
    """One request value as the stored key's kind (raises ValueError naming ``name``)."""
    if kind == "int":
        if isinstance(value, bool):
            raise ValueError(f"entity key {name} must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str) and _DECIMAL_INT.match(value):
            return int(value)
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ValueError(f"entity key {name} must be an integer, got {value!r}")
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise ValueError(f"entity key {name} must be a string, got {value!r}")
    return value


def join_columns(
    config: PipelineConfig, feature: FeatureConfig, default_keys: Mapping[str, str] | None = None
) -> list[tuple[str, str]]:
    """(spine column, source key column) for each key a feature joins on, in source key order.

    The source key columns are the feature's ``entity_keys``, else its source's, else the
    pipeline's; each meets the spine column its ``join`` maps onto it (the feature's, else the
    source's), else the spine column holding that pipeline key (``default_keys``: pipeline key
    -> spine column), else the spine column of the same name. `training-set` and
    `materialize` (whose store namespaces are these spine column sets) both use this rule.
    """
    source = config.sources[feature.source]
    defaults = dict(default_keys or {})
    keys = list(
        feature.entity_keys or source.entity_keys or config.entity_keys or defaults.values()
    )
    mapping = feature.join if feature.join is not None else (source.join or {})
    onto = {key: spine for spine, key in mapping.items()}
    return [(onto.get(key) or defaults.get(key, key), key) for key in keys]
