"""`mlpipe validate`: check each source against its column contract (the data gate)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

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

if TYPE_CHECKING:
    from mlpipe_cli.validation.report import ValidationReport


def validate(
    source: Annotated[
        list[str] | None,
        typer.Option("--source", "-s", help="Validate only this source (repeatable)."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data", help="Validate this Parquet file/dir/glob instead of the source's path."
        ),
    ] = None,
    quarantine: Annotated[
        Path | None,
        typer.Option(
            "--quarantine",
            help="Write failing rows here (.parquet file, or a directory "
            "of <source>.parquet when several sources are validated).",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Write passing rows here (same rules as --quarantine)."),
    ] = None,
    reference: Annotated[
        str | None,
        typer.Option(
            "--reference",
            help="Compare distributions against this saved profile "
            "version (or 'latest' for the source).",
        ),
    ] = None,
    save_profile: Annotated[
        bool,
        typer.Option("--save-profile", help="Save a reference profile of each source that passes."),
    ] = False,
    junit: Annotated[
        Path | None, typer.Option("--junit", help="Also write a JUnit XML report to FILE.")
    ] = None,
    no_publish: Annotated[
        bool,
        typer.Option("--no-publish", help="Do not publish the report as a validation artifact."),
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    engine: EngineOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Validate sources against their column contracts; exit 1 if any error-severity check fails.

    Runs schema checks (presence, dtype, strict/required/forbidden columns), then every row
    check in one streaming pass over the file, then distribution checks against --reference.
    Warnings never fail the run. Exit codes: 0 passed (warnings allowed), 1 a check failed,
    2 unreadable input, bad config, or a check that crashed.

    Example: mlpipe validate -c configs/example.yaml --source orders --quarantine bad.parquet
    """
    from mlpipe_cli.ops.validate import validate as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    with output.reporting():
        result = run(
            run_context(config, artifact_dir),
            sources=source,
            data=data,
            quarantine=quarantine,
            out=out,
            reference=reference,
            save_profile=save_profile,
            junit=junit,
            publish=not no_publish,
            engine=engine,
        )
    output.result(result.to_dict())
    _render(output, result.report)
    sources = result.report.sources
    output.summary(
        "validate",
        rows=sum(s.rows or 0 for s in sources),
        seconds=result.seconds,
        detail=f" from {len(sources)} source{'s' if len(sources) != 1 else ''}",
        status=result.report.status,
        output=f"validation/{result.artifact_version}" if result.artifact_version else None,
    )
    result.raise_for_status()


def _render(output: Output, report: ValidationReport) -> None:
    from mlpipe_cli.validation.report import PASS, summary_line

    for source in report.sources:
        counts = source.counts()
        output.line(
            f"{source.source}: {source.status.upper()}  rows={source.rows}  "
            f"checks={len(source.checks)} passed={counts['pass']} failed={counts['fail']} "
            f"warn={counts['warn']} skipped={counts['skipped']} error={counts['error']}  "
            f"({source.path})"
        )
        shown = [c for c in source.checks if c.status != PASS]
        if shown:
            output.table(
                ["check", "status", "failures", "rate", "statistic", "threshold", "detail"],
                [
                    [c.id, c.status, c.failures, c.rate, c.statistic, c.threshold, summary_line(c)]
                    for c in shown
                ],
            )
        for label, split in (("quarantine", source.quarantine), ("out", source.out)):
            if split is not None:
                if split.get("path"):
                    output.line(f"  {label}: {split['rows']} rows -> {split['path']}")
                else:
                    output.line(f"  {label}: {split.get('reason')}")
        if (
            source.quarantine
            and source.out
            and source.quarantine.get("path")
            and source.out.get("path")
        ):
            output.line(
                f"  input rows {source.rows} = passed {source.out['rows']} + "
                f"quarantined {source.quarantine['rows']}"
            )
        if source.profile:
            output.line(f"  saved reference profile {source.profile}")
        if source.reference:
            output.line(f"  compared against profile {source.reference}")
