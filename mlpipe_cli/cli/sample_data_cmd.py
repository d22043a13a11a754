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
        int | None,
        typer.Option(
            "--rows",
            help="Orders (churn; users = rows/20; default 100000) or rides (rides; default 50000).",
        ),
    ] = None,
    seed: Annotated[
        int | None,
        typer.Option(
            "--seed", help="Random seed (default 42 churn, 7 rides); same seed, same bytes."
        ),
    ] = None,
    dataset: Annotated[
        str,
        typer.Option(
            "--dataset",
            help="churn (users and orders, configs/example.yaml) or rides (rides by rider, "
            "driver and zone, configs/rides.yaml).",
        ),
    ] = "churn",
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
    """Write a synthetic data set: e-commerce churn (default) or rides (--dataset rides).

    churn: users, orders, products, embeddings, labels (configs/example.yaml). rides: rides,
    drivers, zone_weather, labels, keyed by rider, driver and zone with string keys of
    different lengths, some non-ASCII (configs/rides.yaml).

    Like every subcommand it accepts -c/--config and --artifact-dir, but it reads neither: the
    data set depends only on --dataset, --rows, --seed and --fault.

    Example: mlpipe sample-data --out data/sample --rows 100000 --seed 42 --fault drift
    Example: mlpipe sample-data --dataset rides --out data/rides
    """
    from mlpipe_cli.ops.sample_data import sample_data as run

    out_ctl = Output.create(json_mode=json_output, quiet=quiet)
    result = run(out=out, rows=rows, seed=seed, faults=tuple(fault or ()), dataset=dataset)
    out_ctl.result(result.to_dict())
    out_ctl.table(
        ["table", "rows", "file"],
        [[name, result.rows[name], str(path)] for name, path in result.files.items()],
        title=f"sample data ({dataset}, seed {result.seed}{', faults: ' + ', '.join(result.faults) if result.faults else ''})",
    )
