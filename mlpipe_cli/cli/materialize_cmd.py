"""`mlpipe materialize`: load the latest feature values into the online store."""

from __future__ import annotations

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


def materialize(
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Point in time the values are as of (ISO 8601; naive = config timezone or "
            "UTC). Default: now.",
        ),
    ] = None,
    features: FeaturesOption = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Continue the newest abandoned run with its own as-of and chunk size (exit 2 if none).",
        ),
    ] = False,
    chunk_size: Annotated[
        int | None,
        typer.Option(
            "--chunk-size", min=1, help="Entities per chunk (default: online_store.chunk_size)."
        ),
    ] = None,
    check_freshness: Annotated[
        bool,
        typer.Option(
            "--check-freshness",
            help="Only check the live version's age; exit 1 when older than --max-age.",
        ),
    ] = False,
    max_age: Annotated[
        str | None,
        typer.Option("--max-age", help="Freshness SLO for --check-freshness, e.g. 1h, 30m."),
    ] = None,
    rollback: Annotated[
        bool,
        typer.Option("--rollback", help="Make the previous version live again (atomic swap)."),
    ] = False,
    allow_older: Annotated[
        bool,
        typer.Option(
            "--allow-older",
            help="Make this run live even when its --as-of is older than the live version's "
            "(a deliberate backfill); without it such a run is not made live and its rows are removed (exit 1).",
        ),
    ] = False,
    engine: EngineOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Compute every entity's latest feature values and load them into the online store.

    Values come from the same point-in-time code as `training-set` (a spine of every entity
    at --as-of). A run writes a new version and switches readers to it atomically only after
    every row is written; the previous version is kept for --rollback. A run whose --as-of
    is older than the live version's (a backfill finishing after a newer run) is written
    but not made live, unless --allow-older; the same as-of (a retry) goes live. Exit codes:
    0 ok, 1 stale (--check-freshness), no entities, or an as-of older than the live one
    (not made live), 2 usage/config/input error (also an entity key longer than serve
    accepts), 4 store unreachable or credentials rejected.

    Example: mlpipe materialize -c configs/example.yaml --as-of 2026-07-01T00:00:00Z
    """
    from mlpipe_cli.errors import UsageError

    modes = [
        name
        for name, on in (("--check-freshness", check_freshness), ("--rollback", rollback))
        if on
    ]
    if len(modes) > 1:
        raise UsageError(f"{modes[0]} and {modes[1]} cannot be combined")
    if max_age is not None and not check_freshness:
        raise UsageError("--max-age only applies with --check-freshness")
    if modes and (as_of or features or resume or chunk_size or allow_older):
        raise UsageError(
            f"{modes[0]} takes no --as-of/--features/--resume/--chunk-size/--allow-older"
        )
    if check_freshness and max_age is None:
        raise UsageError("--check-freshness needs --max-age, e.g. --max-age 1h")
    from mlpipe_cli.ops import materialize as ops

    out = Output.create(json_mode=json_output, quiet=quiet)
    ctx = run_context(config, artifact_dir)
    if check_freshness:
        assert max_age is not None
        freshness = ops.check_freshness(ctx, max_age=max_age)
        # a stale verdict is said once, by the error line (exit 1), not also on stdout
        out.result(freshness.to_dict(), freshness.message if freshness.ok else None)
        freshness.raise_for_status()
        return
    if rollback:
        rolled = ops.rollback(ctx)
        live, previous = rolled.live, rolled.previous
        out.result(
            rolled.to_dict(),
            f"rolled back: live is now {live.version} (as of {live.as_of.isoformat()}); "
            f"{previous.version} (as of {previous.as_of.isoformat()}) is kept as previous "
            "(--rollback again to undo)",
        )
        return
    from mlpipe_cli.progress import task as progress_task

    names = parse_features(features)
    with out.reporting(), progress_task("materialize", unit="entities") as bar:
        result = ops.materialize(
            ctx,
            as_of=as_of,
            features=names,
            resume=resume,
            chunk_size=chunk_size,
            on_total=bar.set_total,
            on_progress=bar.advance,
            on_note=out.info,
            engine=engine,
            allow_older=allow_older,
        )
    out.result(result.to_dict())
    out.line(
        f"materialized {result.entity_count} entities x {len(result.features)} features "
        f"as of {result.as_of.isoformat()} into {result.store} (version {result.version})"
    )
    if result.removed_versions:
        out.line(f"removed old versions: {', '.join(result.removed_versions)}")
    if result.artifact_version:
        out.line(f"artifact: materialization/{result.artifact_version}")
    out.summary(
        "materialize",
        rows=result.entity_count,
        unit="entities",
        seconds=result.seconds_total,
        detail=f" x {len(result.features)} features",
        output=f"{result.store} version {result.version}",
    )
