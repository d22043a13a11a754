"""`mlpipe transform`: apply a published transform version to data (never fits)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlpipe_cli.ops.project import Project


@dataclass(frozen=True)
class TransformResult:
    version: str
    rows: int
    out: Path
    output_columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"ok": True, "version": self.version, "rows": self.rows, "out": str(self.out),
                "output_columns": self.output_columns}


def transform(project: Project, *, data: Path, out: Path, artifact: str = "latest",
              engine: str | None = None) -> TransformResult:
    """Stream ``data`` through transform version ``artifact`` into ``out`` (atomic Parquet).

    ArtifactError (exit 3) for an unknown or tampered version, or an input column that is
    missing or of an incompatible dtype. ``engine`` (default: the config's) is polars or
    spark; on spark an ``out`` without the .parquet suffix is a directory of part files.
    """
    from mlpipe_cli.engines import choose_engine
    from mlpipe_cli.io import parquet_row_count, scan_parquet, sink_parquet_atomic
    from mlpipe_cli.transforms import load_transform

    fitted = load_transform(project.store, artifact)
    if choose_engine(project.config, engine) == "spark":
        from mlpipe_cli.engines.spark.transform import run as run_on_spark

        rows = run_on_spark(project.config, fitted, data=data, out=out)
        return TransformResult(version=fitted.version, rows=rows, out=out,
                               output_columns=fitted.output_columns)
    lazy = scan_parquet(data)
    fitted.check_input_schema(lazy.collect_schema())
    # snappy: features are dense floats that compress poorly; zstd triples the write time
    sink_parquet_atomic(fitted.transform_batch(lazy), out, compression="snappy")
    rows = parquet_row_count(out)
    return TransformResult(version=fitted.version, rows=rows, out=out,
                           output_columns=fitted.output_columns)
