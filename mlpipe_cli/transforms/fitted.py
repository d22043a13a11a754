"""FittedTransform: one stored state driving a batch path (Polars) and an online path (Python).

The state document (``state.json``) lists every configured column with its steps, its fitted
state and its output names. Loading compiles it twice: into Polars expressions for
``transform_batch`` and into one generated plain-Python function for ``transform_one``
(codegen.py). Neither path ever fits anything; ``check_golden`` re-runs the stored golden
example through both and compares them with the outputs recorded at fit time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from mlpipe_cli.documents import TransformState, check
from mlpipe_cli.errors import ArtifactError
from mlpipe_cli.transforms.codegen import compile_record_function
from mlpipe_cli.transforms.numeric import NumericChain, Passthrough
from mlpipe_cli.transforms.registry import build

# dtype families an input column may have, per transformer kind
_NUMERIC = "numeric"


def dtype_family(dtype: pl.DataType) -> str:
    if dtype == pl.Boolean:
        return "bool"
    if dtype.is_integer():
        return "integer"
    if dtype.is_float() or dtype.is_decimal():
        return "float"
    if dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum)):
        return "string"
    if isinstance(dtype, pl.Datetime):
        return "datetime-tz" if dtype.time_zone else "datetime"
    if dtype == pl.Date:
        return "date"
    return str(dtype)


def accepted_families(kind: str, family: str) -> list[str]:
    """Families an input may have at transform time, given the training column's family."""
    if kind in ("numeric", "passthrough"):
        return ["bool", "float", "integer"]
    if kind == "temporal":
        return ["date", "datetime"] if family in ("date", "datetime") else ["datetime-tz"]
    return [family]


class FittedTransform:
    """A fitted, immutable transform. Build with ``load_transform`` or ``from_state``."""

    def __init__(
        self,
        state: Mapping[str, Any],
        tables: Mapping[str, pl.DataFrame],
        version: str = "unpublished",
    ) -> None:
        # the format versions it reads: documents.TransformState (2 added value policies)
        check(TransformState, dict(state), f"transform {version}: state.json")
        self.version = version
        self.state = state
        self.tables = dict(tables)
        self.input_schema: dict[str, str] = dict(state["input_schema"])
        self.input_columns: list[str] = list(self.input_schema)
        self._families: dict[str, list[str]] = {
            c: list(v) for c, v in state["input_families"].items()
        }
        self.dropped_columns: list[str] = [
            c["column"] for c in state["columns"] if c["steps"][0]["type"] == "drop"
        ]
        self._transformers = [
            (build(c["column"], c["steps"], self._families), c["state"]) for c in state["columns"]
        ]
        self.output_columns: list[str] = [
            name for t, s in self._transformers for name in t.outputs(s)
        ]
        if self.output_columns != list(state["output_columns"]):
            raise ArtifactError(f"transform {version}: output columns do not match the state")
        self._transform_one, self.online_source = compile_record_function(
            self._transformers, self.tables, version
        )

    # -- schema -------------------------------------------------------------------------

    def check_input_schema(self, schema: Mapping[str, pl.DataType]) -> None:
        """Raise ArtifactError naming the first missing or incompatible column."""
        for column in self.input_columns:
            if column not in schema:
                raise ArtifactError(
                    f"input has no column {column!r}, which transform {self.version} expects "
                    f"({self.input_schema[column]})",
                    hint="transform data with the same columns as the training data",
                )
            family = dtype_family(schema[column])
            if family not in self._families[column]:
                raise ArtifactError(
                    f"column {column!r} has dtype {schema[column]} but transform {self.version} "
                    f"was fitted on {self.input_schema[column]}",
                    hint="cast the column, or fit a new version on data of this dtype",
                )

    def numeric_columns(self) -> list[tuple[Any, Mapping[str, Any]]]:
        """(transformer, state) of every numeric column (chains and passthrough): the columns
        with a value policy for null / NaN / ±inf (report.py counts them)."""
        return [(t, s) for t, s in self._transformers if isinstance(t, (NumericChain, Passthrough))]

    # -- batch --------------------------------------------------------------------------

    def helper_exprs(self) -> list[pl.Expr]:
        """Intermediate columns (category codes, calendar parts, table rows) computed once."""
        return [
            e for t, s in self._transformers for e in getattr(t, "helpers", _none)(s, self.tables)
        ]

    def output_exprs(self) -> list[pl.Expr]:
        """One expression per output column; evaluate after ``helper_exprs``."""
        return [e for t, s in self._transformers for e in t.exprs(s, self.tables)]

    def transform_batch(self, frame: pl.LazyFrame) -> pl.LazyFrame:
        """Input columns are replaced by the outputs; other columns are kept in front."""
        schema = frame.collect_schema()
        self.check_input_schema(schema)
        consumed = set(self.input_columns) | set(self.dropped_columns) | set(self.output_columns)
        keep = [pl.col(c) for c in schema.names() if c not in consumed]
        helpers = self.helper_exprs()
        if helpers:
            frame = frame.with_columns(helpers)
        return frame.select(*keep, *self.output_exprs())

    # -- online -------------------------------------------------------------------------

    def transform_one(self, record: Mapping[str, Any]) -> list[float | None]:
        """One raw record -> the output vector (None where a numeric output is missing)."""
        return self._transform_one(record)

    # -- golden -------------------------------------------------------------------------

    def check_golden(self, records: pl.DataFrame, expected: Sequence[Sequence[Any]]) -> None:
        """Re-run the golden example through both paths; ArtifactError if not reproduced."""
        batch = self.transform_batch(records.lazy()).select(self.output_columns).collect()
        for i, record in enumerate(records.iter_rows(named=True)):
            online = self.transform_one(record)
            for path, got in (("online", online), ("batch", list(batch.row(i)))):
                for name, want, have in zip(self.output_columns, expected[i], got, strict=True):
                    if not same_value(want, have):
                        raise ArtifactError(
                            f"transform {self.version} does not reproduce its golden example in "
                            f"this environment: row {i}, {name}: expected {want!r}, {path} path "
                            f"gave {have!r}",
                            hint="use the library versions recorded in the manifest, or re-fit",
                        )


def _none(state: Any, tables: Any) -> list[pl.Expr]:
    return []


def same_value(a: Any, b: Any, rel: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = float(a), float(b)
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rel, abs_tol=abs_tol)
