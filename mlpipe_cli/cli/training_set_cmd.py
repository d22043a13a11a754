"""`mlpipe training-set`: point-in-time-correct features joined onto a label spine."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mlpipe_cli.cli.common import (
    DEFAULT_CONFIG,
    ArtifactDirOption,
    ConfigOption,
    EngineOption,
    FeaturesOption,
    JsonOption,
    Output,
    QuietOption,
    parse_features,
    run_context,
)


def training_set(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output Parquet file.")],
    config: ConfigOption = DEFAULT_CONFIG,
    spine: Annotated[
        Path | None,
        typer.Option("--spine", help="Spine Parquet (default: training_set.spine)."),
    ] = None,
    features: FeaturesOption = None,
    timestamp: Annotated[
        str | None,
        typer.Option(
            "--timestamp", help="Spine timestamp column (default: training_set.timestamp)."
        ),
    ] = None,
    no_publish: Annotated[
        bool,
        typer.Option("--no-publish", help="Only write <out>.manifest.json, no artifact."),
    ] = False,
    artifact_dir: ArtifactDirOption = None,
    engine: EngineOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Build a training set: every feature as of each spine row's time, never later.

    One output row per spine row, in spine order (duplicates kept); source rows count only
    when strictly before the row's timestamp (inclusive: true opts in), within ttl and, with
    a created_timestamp, already ingested. Inputs are validated first (exit 1 on a contract
    failure, 2 on missing columns/files or a null entity key in the spine). Each feature's
    nulls, NaN, ±inf and matched rows (spine rows whose entity has a source row) are printed
    and recorded; a feature matching no row, or fewer than its min_match_rate, exits 1
    before anything is written. Writes OUT atomically plus OUT.manifest.json
    (config hash, input fingerprints, row counts, features) and publishes the manifest as a
    `training-set` artifact.

    With --engine spark (docs/scale.md) the same features are computed on a Spark cluster;
    an --out without the .parquet suffix is then a directory of part files in spine order.

    Example: mlpipe training-set -c configs/example.yaml --out data/train.parquet
    """
    from mlpipe_cli.ops.training_set import training_set as run

    out_ = Output.create(json_mode=json_output, quiet=quiet)
    names = parse_features(features)
    with out_.reporting():
        result = run(
            run_context(config, artifact_dir),
            out=out,
            spine=spine,
            timestamp=timestamp,
            features=names,
            publish=not no_publish,
            engine=engine,
        )
    out_.result(result.to_dict(), f"wrote {result.out}")
    out_.line(f"manifest: {result.manifest_path}")
    if result.artifact_version:
        out_.line(f"artifact: training-set/{result.artifact_version}")
    # NaN and ±inf are values to Parquet (not nulls), so they get their own columns: a
    # feature full of NaN must not look complete
    out_.table(
        ["feature", "dtype", "nulls", "nan", "inf", "matched"],
        [
            [
                s["feature"], s["dtype"], s["nulls"], s["nans"], s["infs"],
                _matched(s["matched"], result.rows),
            ]
            for s in result.feature_stats
        ],
    )  # fmt: skip
    out_.summary(
        "training-set",
        rows=result.rows,
        seconds=result.seconds,
        detail=f" x {len(result.features)} features",
        output=result.out,
    )


def _matched(matched: int | None, rows: int) -> str:
    """Spine rows whose entity has a source row in scope, e.g. ``9876 (98.4%)``."""
    if matched is None:
        return "-"  # not counted by this engine
    return f"{matched} ({matched / rows:.1%})" if rows else "0"
