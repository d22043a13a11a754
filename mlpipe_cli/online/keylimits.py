"""The longest entity key a lookup accepts: one home for the reader and every writer.

`serve` refuses a string key value longer than ``MAX_KEY_BYTES`` UTF-8 bytes
(``serving/keys.py`` ``check_str_key``: each string key column's value on its own, so a
composite key ``[zone, driver_id]`` may hold two values of up to 512 bytes each; integer key
columns are bounded by their 64 bits instead). A writer that stored a longer key would hold
an entity that no request can ever reach: `materialize` and the stream's bootstrap refuse
such keys before writing anything (``check_key_sizes``, exit 2), and `push` dead-letters an
event carrying one (``oversized_rows``). All of them measure what serve measures: the UTF-8
bytes of each string key value, not the store key's JSON (whose quotes and escapes would
make the limit depend on the characters used).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mlpipe_cli.errors import InputError

if TYPE_CHECKING:
    import polars as pl

MAX_KEY_BYTES = 512
_SHOWN = 40  # characters of an offending key an error message shows


def _string_columns(frame: pl.DataFrame | pl.LazyFrame, columns: Sequence[str]) -> list[str]:
    """The key columns serve reads as text (``features.keys.key_kind`` "str")."""
    import polars as pl

    schema = frame.collect_schema() if isinstance(frame, pl.LazyFrame) else frame.schema
    return [c for c in columns if isinstance(schema[c], pl.String | pl.Categorical | pl.Enum)]


def _sizes(column: str) -> pl.Expr:
    import polars as pl

    return pl.col(column).cast(pl.String).str.len_bytes()


def oversized_rows(frame: pl.DataFrame, columns: Sequence[str]) -> dict[str, pl.Series]:
    """Per string key column with a value over the limit: a Boolean mask of those rows."""
    out = {}
    for column in _string_columns(frame, columns):
        mask = frame.select((_sizes(column) > MAX_KEY_BYTES).fill_null(False)).to_series()
        if mask.any():
            out[column] = mask
    return out


def check_key_sizes(
    frame: pl.DataFrame | pl.LazyFrame, columns: Sequence[str], what: str, outcome: str
) -> None:
    """InputError (exit 2) when an entity's string key value is longer than serve accepts;
    the one line names the column(s), how many distinct entities, the longest size and an
    example. ``what`` says where the keys come from, ``outcome`` what was left undone."""
    import polars as pl

    strings = _string_columns(frame, columns)
    if not strings:
        return
    too_long = pl.any_horizontal([(_sizes(c) > MAX_KEY_BYTES).fill_null(False) for c in strings])
    over = frame.lazy().filter(too_long).select(list(columns)).unique().collect()
    if over.height == 0:
        return
    sizes = over.select([_sizes(c).fill_null(0).alias(c) for c in strings])
    # a byte-length column: its max is an int (Polars types it as any literal)
    longest_of = {c: int(sizes[c].max() or 0) for c in strings}  # type: ignore[arg-type]
    named = [c for c in strings if longest_of[c] > MAX_KEY_BYTES]
    widest = max(named, key=longest_of.__getitem__)  # the first of equals
    example = over[widest][int(sizes[widest].arg_max() or 0)]
    shown = repr(example[:_SHOWN]) + ("…" if len(example) > _SHOWN else "")
    raise InputError(
        f"{what}: {over.height} entity key(s) longer than {MAX_KEY_BYTES} UTF-8 bytes in key "
        f"column(s) {', '.join(repr(c) for c in named)} (longest {longest_of[widest]} bytes: "
        f"{shown}); `serve` refuses keys that long, so those entities could never be served; "
        f"{outcome}",
        hint="shorten or hash the key, e.g. in a `derived:` column of the source",
    )
