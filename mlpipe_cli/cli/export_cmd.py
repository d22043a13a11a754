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
    fmt: Annotated[
        str, typer.Option("--format", help="Export format (only 'sklearn').")
    ] = "sklearn",
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
    from mlpipe_cli.ops.export import export as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    result = run(run_context(config, artifact_dir), out=out, artifact=artifact, fmt=fmt)
    output.result(
        result.to_dict(),
        f"exported transform {result.version} as a scikit-learn ColumnTransformer to {out}",
    )
