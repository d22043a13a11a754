"""Embedding encoder: id -> vector from a lookup table copied into the artifact."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from mlpipe_cli.errors import InputError
from mlpipe_cli.transforms.base import Encoder, lookup, to_category
from mlpipe_cli.transforms.codegen import Source

if TYPE_CHECKING:
    import numpy as np


class EmbeddingEnc(Encoder):
    """id -> fixed-dimension vector from a lookup table copied into the artifact."""

    kind = "embedding"
    type = "embedding"

    def table_file(self) -> str:
        return f"embedding__{self.column}.parquet"

    def load_table(self) -> pl.DataFrame:
        from mlpipe_cli.io import read_parquet

        key, vector = self.params["key"], self.params["vector"]
        raw = read_parquet(self.params["table"])
        for name in (key, vector):
            if name not in raw.columns:
                raise InputError(
                    f"embedding table {self.params['table']} for column {self.column!r} has no "
                    f"column {name!r} (has: {', '.join(raw.columns)})"
                )
        dtype = raw.schema[vector]
        if not isinstance(dtype, (pl.Array, pl.List)) or not dtype.inner.is_numeric():
            raise InputError(
                f"embedding column {vector!r} must be an Array/List of numbers, got {dtype}"
            )
        table = raw.select(
            pl.col(key).alias("key"), pl.col(vector).cast(pl.List(pl.Float64)).alias("vector")
        )
        table = table.drop_nulls("key").sort("key")
        if table["key"].is_duplicated().any():
            raise InputError(f"embedding table {self.params['table']}: duplicate ids in {key!r}")
        lengths = table["vector"].list.len().unique().to_list()
        if len(lengths) != 1 or table["vector"].null_count():
            raise InputError(
                f"embedding table {self.params['table']}: vectors must all have one length"
            )
        dim = int(lengths[0])
        return table.with_columns(pl.col("vector").cast(pl.Array(pl.Float64, dim)))

    def fit(self, frame: pl.DataFrame, target: np.ndarray | None = None) -> dict[str, Any]:
        table = self.load_table()
        vector = table.schema["vector"]
        assert isinstance(vector, pl.Array)  # load_table casts it to Array(Float64, dim)
        dim = vector.size
        matrix = table["vector"].to_numpy()
        if self.params.get("unknown", "zero") == "mean":
            fallback = [math.fsum(matrix[:, d].tolist()) / len(matrix) for d in range(dim)]
        else:
            fallback = [0.0] * dim
        return {
            "file": self.table_file(),
            "dim": dim,
            "rows": table.height,
            "key_dtype": str(table.schema["key"]),
            "unknown": self.params.get("unknown", "zero"),
            "fallback": fallback,
            "_table": table,  # side output: fit_frame pops "_" keys and stores the table as Parquet
        }

    def outputs(self, state: Mapping[str, Any]) -> list[str]:
        width = max(2, len(str(state["dim"] - 1)))
        return [f"{self.column}__emb_{d:0{width}d}" for d in range(state["dim"])]

    def helpers(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        """The id's row in the table (UInt32); unknown or missing ids -> the fallback row n."""
        keys = tables[state["file"]]["key"]
        n = len(keys)
        if keys.dtype.is_integer() and n and keys[-1] - keys[0] + 1 == n:
            # dense sorted integer ids: the row is the id minus the first id
            first, last = int(keys[0]), int(keys[-1])
            key = pl.col(self.column).cast(pl.Int64, strict=False)
            row: pl.Expr = pl.when(key.is_between(first, last)).then(key - first)
        elif keys.dtype == pl.String:
            row = (
                pl.col(self.column).cast(pl.String).cast(pl.Enum(keys), strict=False).to_physical()
            )
        else:
            row = (
                pl.col(self.column)
                .cast(keys.dtype, strict=False)
                .replace_strict(
                    keys,
                    pl.int_range(n, dtype=pl.Int64, eager=True),
                    default=None,
                    return_dtype=pl.Int64,
                )
            )
        return [row.cast(pl.UInt32).fill_null(n).alias(self.helper("row"))]

    def exprs(self, state: Mapping[str, Any], tables: Mapping[str, Any]) -> list[pl.Expr]:
        # one gather per dimension from that dimension's values with the fallback appended as
        # row n: no fill_null pass, no list/array ops
        table: pl.DataFrame = tables[state["file"]]
        idx = pl.col(self.helper("row"))
        # dimension d of every vector, read by Polars (numpy's import would be most of a small
        # `mlpipe transform`'s fixed cost); a missing element is NaN, as to_numpy gave it.
        # All dimensions in one select: a Series method per dimension ran a query each
        # (32 for 16 dimensions, ~4 ms of every transform_batch, #19).
        names = self.outputs(state)
        dims = table.select(
            pl.col("vector").arr.get(d).fill_null(math.nan).alias(name)
            for d, name in enumerate(names)
        )
        return [
            lookup(dims.get_column(name).to_list(), state["fallback"][d], idx).alias(name)
            for d, name in enumerate(names)
        ]

    def emit(self, state: Mapping[str, Any], tables: Mapping[str, Any], src: Source) -> list[str]:
        """The lookup written out, with a shortcut for the common exact-int id."""
        table: pl.DataFrame = tables[state["file"]]
        keys, rows = table["key"].to_list(), (tuple(v) for v in table["vector"].to_list())
        lookup = src.bind(dict(zip(keys, rows, strict=True)), "embedding")
        fallback = src.bind(tuple(float(v) for v in state["fallback"]), "fallback")
        numeric_key = table.schema["key"].is_integer()
        v = src.name("v")
        src.line(f"# {self.column!r}: embedding")
        src.line(f"{v} = record[{self.column!r}]")
        if numeric_key:
            with src.block(f"if {v}.__class__ is int:"):
                src.line(f"{v} = {lookup}.get({v}, {fallback})")
            with src.block("else:"):
                with src.block(f"if isinstance({v}, str) and {v}.lstrip('-').isdigit():"):
                    src.line(f"{v} = int({v})")
                self._emit_get(src, v, lookup, fallback)
        else:
            with src.block(f"if {v} is not None and not isinstance({v}, str):"):
                src.line(f"{v} = {src.bind(to_category, 'to_category')}({v})")
            self._emit_get(src, v, lookup, fallback)
        return [f"*{v}"]

    @staticmethod
    def _emit_get(src: Source, v: str, lookup: str, fallback: str) -> None:
        with src.block(f"if isinstance({v}, (bool, float)):"):
            src.line(f"{v} = {fallback}")
        with src.block("else:"):  # vectors are never None (load_table refuses null vectors)
            src.line(f"{v} = {lookup}.get({v}, {fallback})")
