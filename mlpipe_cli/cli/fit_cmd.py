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
        typer.Option("--data", help="Training data (Parquet file/dir/glob); default transforms.data."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the transformed training rows here (target "
                     "encodings cross-fitted, out of fold)."),
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
    from mlpipe_cli.errors import DataCheckFailed, UsageError
    from mlpipe_cli.transforms.fit import check_contract, load_transform, publish

    output = Output.create(json_mode=json_output, quiet=quiet)
    ctx = run_context(config, artifact_dir)
    section = ctx.config.transforms
    if section is None or not section.columns:
        raise UsageError(f"{config} has no `transforms:` section with columns to fit",
                         hint="see configs/example.yaml and docs/fit-transform.md")
    path = data if data is not None else section.data
    if path is None:
        raise UsageError("no training data: pass --data PATH or set transforms.data")
    try:
        check_contract(section, path, ctx.config.sources)
        result, outcome = publish(ctx.store, section, path)
    except DataCheckFailed as exc:
        report = exc.report if isinstance(exc.report, dict) else {}
        output.result({"ok": False, "problems": report.get("problems", [exc.message])})
        for problem in report.get("problems", []):
            output.info(f"  FAIL {problem}")
        raise
    transform = load_transform(ctx.store, result.version.version)  # golden re-run from disk
    if out is not None:
        from mlpipe_cli.io import scan_parquet, write_parquet_atomic

        write_parquet_atomic(outcome.training_outputs(scan_parquet(path)), out)
    doc = {
        "ok": True,
        "version": transform.version,
        "created": result.created,
        "path": str(result.version.path),
        "training_rows": outcome.training.height,
        "input_columns": transform.input_columns,
        "output_columns": transform.output_columns,
        "out": str(out) if out is not None else None,
    }
    verb = "published" if result.created else "unchanged (same data and config), reusing"
    output.result(
        doc,
        f"{verb} transform {transform.version}: {len(transform.input_columns)} inputs -> "
        f"{len(transform.output_columns)} outputs, fitted on {outcome.training.height} rows",
    )
