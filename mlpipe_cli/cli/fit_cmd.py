"""`mlpipe fit`: fit the configured preprocessing and publish it as a `transform` artifact."""

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


def fit(
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Training data (Parquet file/dir/glob); default transforms.data."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Also write the transformed training rows here (target "
            "encodings cross-fitted, out of fold).",
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Fit the `transforms:` section on training data and publish a new transform version.

    The version holds the fitted state (JSON + Parquet, no pickle), input and output schema,
    a reference profile of every input and output, the embedding tables and a golden example
    that `transform` and `serve` re-run at load. Fitting the same data with the same config
    again returns the same version. Exit codes: 0 published, 1 the training data fails the
    transform's column contract, 2 bad config/input, 3 the published version does not
    reproduce its golden example.

    Example: mlpipe fit -c configs/example.yaml --data data/training_set.parquet
    """
    from mlpipe_cli.errors import DataCheckFailed
    from mlpipe_cli.ops.fit import fit as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    try:
        with output.reporting():
            result = run(run_context(config, artifact_dir), data=data, out=out)
    except DataCheckFailed as exc:
        report = exc.report if isinstance(exc.report, dict) else {}
        output.result({"ok": False, "problems": report.get("problems", [exc.message])})
        for problem in report.get("problems", []):
            output.info(f"  FAIL {problem}")
        raise
    verb = "published" if result.created else "unchanged (same data and config), reusing"
    output.result(
        result.to_dict(),
        f"{verb} transform {result.version}: {len(result.input_columns)} inputs -> "
        f"{len(result.output_columns)} outputs, fitted on {result.training_rows} rows",
    )
    output.summary(
        "fit",
        rows=result.training_rows,
        seconds=result.seconds,
        detail=f" x {len(result.input_columns)} columns",
        output=f"transform/{result.version}" + (f" + {result.out}" if result.out else ""),
    )
