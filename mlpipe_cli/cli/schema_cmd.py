"""`mlpipe schema`: infer, snapshot, diff and export column contracts."""

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

app = typer.Typer(
    help="Infer, snapshot, diff and export column contracts.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


@app.command("infer")
def infer(
    data: Annotated[Path, typer.Option("--data", help="Parquet file, directory or glob.")],
    source: Annotated[
        str, typer.Option("--source", help="Name for the proposed source.")
    ] = "source",
    out: Annotated[Path | None, typer.Option("--out", help="Write the YAML here.")] = None,
    max_allowed: Annotated[
        int,
        typer.Option(
            "--max-allowed",
            help="Propose `allowed` for string columns with at most this many distinct values.",
        ),
    ] = 20,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Propose a column contract (dtypes, nullability, observed ranges, small value sets).

    Prints YAML to paste under `sources:` in the config (or writes it with --out). Its
    `path:` is relative to the directory of -c/--config (the file it will be pasted into;
    default ./mlpipe.yaml), as the config loader reads it; absolute only when the data and
    the config share nothing but the root. Works from --data alone: the config file is
    neither read nor required, but --out may not overwrite it (exit 2).

    Example: mlpipe schema infer --data data/sample/orders.parquet --source orders
    """
    from mlpipe_cli.ops.schema import infer as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    result = run(
        data=data,
        source=source,
        max_allowed=max_allowed,
        out=out,
        config_dir=config.parent,
        config_file=config,
    )
    if out is not None:
        output.info(f"wrote {out}")
    output.result(result.to_dict(), None if out else result.yaml.rstrip())


@app.command("snapshot")
def snapshot(
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Save the contract of every source as a versioned `schema` artifact.

    Identical contracts give the same version (publishing is idempotent).

    Example: mlpipe schema snapshot -c configs/example.yaml
    """
    from mlpipe_cli.ops.schema import snapshot as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    result = run(run_context(config, artifact_dir))
    output.result(
        result.to_dict(),
        f"schema {result.version}" + ("" if result.created else " (unchanged; already published)"),
    )


@app.command("diff")
def diff(
    old: Annotated[
        str | None,
        typer.Argument(
            help="Old contract: schema version, 'latest', contract.json or pipeline YAML."
        ),
    ] = None,
    new: Annotated[
        str | None, typer.Argument(help="New contract (default: the current config).")
    ] = None,
    data: Annotated[
        Path | None, typer.Option("--data", help="Compare this data against the contract instead.")
    ] = None,
    source: Annotated[
        str | None, typer.Option("--source", help="Source the --data belongs to.")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Classify contract changes as breaking or compatible; exit 1 if any is breaking.

    OLD defaults to the latest schema snapshot, NEW to the config's current contract. With
    --data, the data is compared against OLD (default: latest snapshot, else the config).

    Example: mlpipe schema diff latest configs/example.yaml
    """
    from mlpipe_cli.ops.schema import diff as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    result = run(run_context(config, artifact_dir), old=old, new=new, data=data, source=source)
    for note in result.notes:
        output.info(note)
    changes, breaking = result.changes, result.breaking
    output.result(result.to_dict())
    output.line(f"{result.old} -> {result.new}: {len(breaking)} breaking, "
                f"{len(changes) - len(breaking)} compatible")  # fmt: skip
    if changes:
        output.table(
            ["classification", "source", "column", "change", "detail"],
            [
                ["BREAKING" if c.breaking else "compatible", c.source, c.column, c.change, c.detail]
                for c in changes
            ],
        )
    result.raise_for_status()


@app.command("export")
def export(
    fmt: Annotated[
        str, typer.Option("--format", help="pandera (YAML) or json (mlpipe contract).")
    ] = "pandera",
    source: Annotated[str | None, typer.Option("--source", help="Export only this source.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="File (one source) or directory (several).")
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Export a source's contract as a pandera YAML schema (or the mlpipe JSON contract).

    The pandera file loads with pandera.polars.DataFrameSchema.from_yaml; regexes are
    anchored ^(?:...)$ so they keep their full-match meaning. SQL row checks, severities and
    tolerances cannot be expressed in pandera and are listed in the file's header comment.

    With --json, stdout carries one JSON document: {"format", "sources", "files"} plus
    "content" (the exported text) when there is no --out.

    Example: mlpipe schema export --format pandera --source orders --out orders.yaml
    """
    from mlpipe_cli.ops.schema import export as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    result = run(run_context(config, artifact_dir), fmt=fmt, source=source, out=out)
    if result.content is not None:
        if json_output:
            output.emit_json(result.to_dict())
        else:  # the exported text is the output itself: printed even with -q
            typer.echo(result.content, nl=False)
        return
    if not json_output:
        for path in result.files:
            output.info(f"wrote {path}")
    output.result(result.to_dict())
