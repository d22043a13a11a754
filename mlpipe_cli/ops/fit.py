"""`mlpipe fit`: fit the configured preprocessing and publish it as a `transform` artifact.

Checks the training data's column contract, fits and publishes (``transforms.fit``), loads
the published version back from disk (which re-runs its golden example) and, when asked,
writes the transformed training rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg

if TYPE_CHECKING:
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.transforms import FittedTransform


@dataclass(frozen=True)
class FitResult:
    version: str
    created: bool  # False: the same data and config were fitted before; that version is reused
    path: Path
    training_rows: int
    input_columns: list[str]
    output_columns: list[str]
    out: Path | None
    transform: FittedTransform = field(repr=False, compare=False)
    seconds: float = 0.0  # wall time: contract check, fit, publish, golden re-run, --out

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": self.version,
            "created": self.created,
            "path": str(self.path),
            "training_rows": self.training_rows,
            "input_columns": self.input_columns,
            "output_columns": self.output_columns,
            "out": str(self.out) if self.out is not None else None,
            "seconds": round(self.seconds, 3),
        }


def fit(project: Project, *, data: Path | None = None, out: Path | None = None) -> FitResult:
    """Fit the `transforms:` section on ``data`` (default ``transforms.data``) and publish.

    DataCheckFailed (exit 1) when the data fails the transform's column contract; its
    ``report["problems"]`` lists every failing check.
    """
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.progress import task as progress_task
    from mlpipe_cli.transforms.fit import check_contract, load_transform, publish

    started = time.perf_counter()

    section = project.config.transforms
    if section is None or not section.columns:
        raise UsageError(
            f"{project.config_path} has no `transforms:` section with columns to fit",
            hint="see configs/example.yaml and docs/fit-transform.md",
        )
    path = data if data is not None else section.data
    if path is None:
        raise UsageError(f"no training data: pass {arg('data', 'PATH')} or set transforms.data")
    with progress_task("fit", total=3 + (out is not None), unit="steps") as steps:
        steps.note("checking the column contract")
        check_contract(section, path, project.config.sources)
        steps.advance()
        steps.note(f"fitting {len(section.columns)} columns, publishing")
        result, outcome = publish(project.store, section, path)
        steps.advance()
        steps.note("re-running the golden example")
        transform = load_transform(project.store, result.version.version)  # from disk
        steps.advance()
        if out is not None:
            from mlpipe_cli.io import scan_parquet, write_parquet_atomic

            steps.note(f"writing {out.name}")
            write_parquet_atomic(outcome.training_outputs(scan_parquet(path)), out)
    return FitResult(
        version=transform.version,
        created=result.created,
        path=result.version.path,
        training_rows=outcome.training.height,
        input_columns=transform.input_columns,
        output_columns=transform.output_columns,
        out=out,
        transform=transform,
        seconds=time.perf_counter() - started,
    )
