"""`mlpipe init`: scaffold a project directory that every other command works in."""

from __future__ import annotations

from enum import StrEnum
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


class Example(StrEnum):
    churn = "churn"


def init(
    directory: Annotated[
        Path, typer.Argument(help="Project directory to create (default: the current one).")
    ] = Path("."),
    example: Annotated[
        Example, typer.Option("--example", help="Which example pipeline to start from.")
    ] = Example.churn,
    rows: Annotated[
        int, typer.Option("--rows", help="Orders in the sample data (users = rows/20).")
    ] = 20_000,
    seed: Annotated[
        int, typer.Option("--seed", help="Sample-data seed; same seed, same bytes.")
    ] = 42,
    no_data: Annotated[
        bool, typer.Option("--no-data", help="Skip the sample data (`make data` writes it later).")
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Scaffold into a non-empty directory: add the missing files, keep existing ones.",
        ),
    ] = False,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Create a project: mlpipe.yaml (every key commented), sample data, Makefile, train_model.py.

    Afterwards every command works from DIRECTORY with no -c: `cd DIRECTORY && make all` runs
    the pipeline's steps (see its Makefile). A non-empty DIRECTORY is refused (exit 2) unless
    --force; existing files are never overwritten, even then (the output names the ones kept).
    A data/sample/ holding some of the sample tables but not all is refused (exit 2): tables
    from two runs would not join; remove it, or pass --no-data.
    Like every subcommand it accepts -c/--config and --artifact-dir, but it reads neither.

    Example: mlpipe init churn-demo --rows 20000
    """
    from mlpipe_cli.ops.init import init as run

    out = Output.create(json_mode=json_output, quiet=quiet)
    result = run(
        directory,
        example=example.value,
        rows=rows,
        seed=seed,
        force=force,
        sample_data=not no_data,
    )
    out.result(result.to_dict())
    if result.wrote_all_sample_data:  # one entry for the whole data set
        written = [str(p) for p in result.written if p.parts[:1] != ("data",)]
        written.append(f"data/sample/ ({result.sample_rows['orders']} orders)")
    else:
        written = [str(p) for p in result.written]
    where = str(result.project_dir)
    out.line(
        f"created a {result.example} project in {where}/: {', '.join(written) or 'nothing new'}"
    )
    if result.kept:
        out.line(f"kept existing (not overwritten): {', '.join(str(p) for p in result.kept)}")
    step_in = "" if result.project_dir.resolve() == Path.cwd().resolve() else f"cd {where} && "
    out.line(f"next: {step_in}make all   (or one step at a time: mlpipe validate, mlpipe --help)")
