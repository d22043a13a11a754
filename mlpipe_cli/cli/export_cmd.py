"""`mlpipe export`: write a transform version as an equivalent scikit-learn pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    JsonOption,
    Output,
    QuietOption,
    run_context,
)


def export(
    out: Annotated[Path, typer.Option("--out", help="Output file (.joblib).")],
    artifact: Annotated[
        str, typer.Option("--artifact", help="Transform version (id, number, hash prefix, latest).")
    ] = "latest",
    fmt: Annotated[str, typer.Option("--format", help="Export format (only 'sklearn').")] = "sklearn",
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export a transform version as a fitted scikit-learn ColumnTransformer (joblib).

    The exported object takes a pandas DataFrame with the version's input columns and returns
    the same matrix `mlpipe transform` produces (columns in `output_columns` order; see
    `get_feature_names_out()`). Scalers and encoders with a scikit-learn equivalent are real
    scikit-learn estimators; the rest are FunctionTransformer steps backed by
    `mlpipe_cli.transforms.export`, so loading the file needs mlpipe installed. joblib files
    run code when loaded: only load files you produced.

    Example: mlpipe export -c configs/example.yaml --artifact latest --format sklearn --out prep.joblib
    """
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.transforms import load_transform
    from mlpipe_cli.transforms.export import write_sklearn

    if fmt != "sklearn":
        raise UsageError(f"unknown --format {fmt!r} (supported: sklearn)")
    if out.suffix != ".joblib":
        raise UsageError(f"--out must end in .joblib, got {out.name}")
    output = Output.create(json_mode=json_output, quiet=quiet)
    fitted = load_transform(run_context(config, artifact_dir).store, artifact)
    write_sklearn(fitted, out)
    output.result(
        {"ok": True, "version": fitted.version, "format": fmt, "out": str(out),
         "output_columns": fitted.output_columns},
        f"exported transform {fitted.version} as a scikit-learn ColumnTransformer to {out}",
    )
