"""`mlpipe export`: write a transform version as an equivalent scikit-learn pipeline."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpipe_cli.argnames import arg_name

if TYPE_CHECKING:
    from mlpipe_cli.ops.project import Project

FORMATS = ("sklearn",)


@dataclass(frozen=True)
class ExportResult:
    version: str
    format: str
    out: Path
    output_columns: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": True,
            "version": self.version,
            "format": self.format,
            "out": str(self.out),
            "output_columns": self.output_columns,
        }


def export(
    project: Project, *, out: Path, artifact: str = "latest", fmt: str = "sklearn"
) -> ExportResult:
    """Write transform version ``artifact`` to ``out`` (.joblib) as a fitted ColumnTransformer."""
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.transforms import load_transform
    from mlpipe_cli.transforms.export import write_sklearn

    if fmt not in FORMATS:
        raise UsageError(f"unknown {arg_name('fmt', flag='--format')} {fmt!r} (supported: sklearn)")
    if out.suffix != ".joblib":
        raise UsageError(f"{arg_name('out')} must end in .joblib, got {out.name}")
    fitted = load_transform(project.store, artifact)
    write_sklearn(fitted, out)
    return ExportResult(
        version=fitted.version, format=fmt, out=out, output_columns=fitted.output_columns
    )
