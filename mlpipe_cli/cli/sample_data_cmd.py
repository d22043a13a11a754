"""`mlpipe sample-data`: write the deterministic synthetic data set."""

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
)


def sample_data(
    out: Annotated[
        Path, typer.Option("--out", help="Directory to write the Parquet files to.")
    ] = Path("data/sample"),
    rows: Annotated[
        int, typer.Option("--rows", help="Number of orders (users = rows/20).")
    ] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed; same seed, same bytes.")] = 42,
    fault: Annotated[
        list[str] | None,
        typer.Option(
            "--fault",
            help="Inject a fault: renamed-column, out-of-range, drift, bad-dtype (repeatable).",
        ),
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Write a synthetic e-commerce data set (users, orders, products, embeddings, labels).

    Like every subcommand it accepts -c/--config and --artifact-dir, but it reads neither: the
    data set depends only on --rows, --seed and --fault.

    Example: mlpipe sample-data --out data/sample --rows 100000 --seed 42 --fault drift
    """
    from mlpipe_cli.ops.sample_data import sample_data as run

    out_ctl = Output.create(json_mode=json_output, quiet=quiet)
    result = run(out=out, rows=rows, seed=seed, faults=tuple(fault or ()))
    out_ctl.result(result.to_dict())
    out_ctl.table(
        ["table", "rows", "file"],
        [[name, result.rows[name], str(path)] for name, path in result.files.items()],
        title=f"sample data (seed {seed}{', faults: ' + ', '.join(result.faults) if result.faults else ''})",
    )
