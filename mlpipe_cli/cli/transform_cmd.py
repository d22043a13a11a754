"""`mlpipe transform`: apply a published transform version to data (never fits)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    EngineOption,
    JsonOption,
    Output,
    QuietOption,
    run_context,
)


def transform(
    data: Annotated[Path, typer.Option("--data", help="Input Parquet file/dir/glob.")],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file (written atomically).")],
    artifact: Annotated[
        str,
        typer.Option(
            "--artifact", help="Transform version: id, sequence number, hash prefix or 'latest'."
        ),
    ] = "latest",
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    engine: EngineOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Apply a fitted transform version to data, streaming, and write Parquet atomically.

    Verifies the version's files and golden example, checks the input against the version's
    input schema, then replaces each input column by its outputs (other columns are kept in
    front). Nothing is fitted. Null, NaN and +-inf inputs of numeric columns are handled as
    the version's fitted policy says (on_null / on_nan / on_inf) and counted. Exit codes: 0
    written, 1 the policy refused a value (nothing written; the column and count are named),
    2 unreadable input, 3 unknown or tampered version, or an input column
    missing/incompatible (named with the version).

    With --engine spark the state is applied per Spark task (no refit); an --out without
    the .parquet suffix is then a directory of part files in input order.

    Example: mlpipe transform -c configs/example.yaml --data new.parquet --out features.parquet
    """
    from mlpipe_cli.ops.transform import transform as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    with output.reporting():
        result = run(
            run_context(config, artifact_dir), data=data, out=out, artifact=artifact, engine=engine
        )
    output.result(result.to_dict(), f"wrote {result.out} (transform {result.version})")
    for column, done in result.handled().items():
        what = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in done.items())
        output.info(f"{column}: {what}")
    output.summary(
        "transform",
        rows=result.rows,
        seconds=result.seconds,
        detail=f" x {len(result.output_columns)} features",
        output=result.out,
    )
