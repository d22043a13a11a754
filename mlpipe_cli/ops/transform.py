"""`mlpipe transform`: apply a published transform version to data (never fits)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.transforms.report import TransformReport


@dataclass(frozen=True)
class TransformResult:
    version: str
    rows: int
    out: Path
    output_columns: list[str]
    report: TransformReport | None = None
    seconds: float = 0.0  # wall time: load + verify the version, count, write

    def handled(self) -> dict[str, dict[str, int]]:
        """column -> {what the fitted policy did (null filled, NaN as null, inf clipped):
        count}, only for columns where anything was done."""
        return self.report.handled() if self.report is not None else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": self.version,
            "rows": self.rows,
            "out": str(self.out),
            "output_columns": self.output_columns,
            "values": self.report.to_dict() if self.report is not None else None,
            "seconds": round(self.seconds, 3),
        }


def transform(
    project: Project, *, data: Path, out: Path, artifact: str = "latest", engine: str | None = None
) -> TransformResult:
    """Stream ``data`` through transform version ``artifact`` into ``out`` (atomic Parquet).

    ArtifactError (exit 3) for an unknown or tampered version, or an input column that is
    missing or of an incompatible dtype. DataCheckFailed (exit 1), before anything is
    written, when the version's null/NaN/inf policy refuses a value (naming the column and
    the count); what the policy did handle is counted in the result. ``engine`` (default:
    the config's) is polars or spark; on spark an ``out`` without the .parquet suffix is a
    directory of part files.
    """
    from mlpipe_cli.engines import choose_engine
    from mlpipe_cli.io import parquet_row_count, scan_parquet, sink_parquet_atomic
    from mlpipe_cli.progress import task as progress_task
    from mlpipe_cli.transforms import load_transform
    from mlpipe_cli.transforms.report import transform_frame

    started = time.perf_counter()
    with progress_task("transform", total=3, unit="steps") as steps:
        steps.note(f"loading and verifying {artifact}")
        fitted = load_transform(project.store, artifact)
        if choose_engine(project.config, engine) == "spark":
            from mlpipe_cli.engines.spark.transform import run as run_on_spark

            rows, report = run_on_spark(project.config, fitted, data=data, out=out)
            return TransformResult(
                version=fitted.version,
                rows=rows,
                out=out,
                output_columns=fitted.output_columns,
                report=report,
                seconds=time.perf_counter() - started,
            )
        lazy = scan_parquet(data)
        fitted.check_input_schema(lazy.collect_schema())
        run = transform_frame(fitted, lazy)
        steps.advance()
        # The counts read only the numeric inputs: a refused value stops the run before any
        # output exists, instead of after a half-useful file was written.
        steps.note("counting null/NaN/inf inputs")
        report = run.report()
        report.check()
        steps.advance()
        # snappy: features are dense floats that compress poorly; zstd triples the write time
        steps.note(f"writing {out.name}")
        sink_parquet_atomic(run.output, out, compression="snappy")
        rows = parquet_row_count(out)
    return TransformResult(
        version=fitted.version,
        rows=rows,
        out=out,
        output_columns=fitted.output_columns,
        report=report,
        seconds=time.perf_counter() - started,
    )
