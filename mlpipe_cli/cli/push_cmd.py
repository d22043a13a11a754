"""`mlpipe push`: append events to a source's stream, each checked against its contract."""

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


def push(
    events: Annotated[
        Path | None,
        typer.Argument(
            help="Parquet file/dir/glob, or JSON lines; '-' or nothing: JSON lines on stdin.",
            show_default=False,
        ),
    ] = None,
    source: Annotated[str, typer.Option("--source", "-s", help="The streamed source.")] = "",
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Append events to a source's stream; exit 1 if any failed the source's contract.

    Every event is checked with validate's column contract first; good events are appended
    to sources.<name>.stream.key in input order, rejected ones go to the dead-letter stream
    with their failed check ids (never dropped). Exit codes: 0 all pushed, 1 some events
    were dead-lettered, 2 bad input or config, 4 Redis unavailable.

    Example: mlpipe push -c configs/example.yaml --source orders new_orders.jsonl
    """
    from mlpipe_cli.errors import UsageError
    from mlpipe_cli.ops.push import push as run

    if not source:
        raise UsageError("--source is required", hint="name a source with a stream: section")
    output = Output.create(json_mode=json_output, quiet=quiet)
    result = run(run_context(config, artifact_dir), source=source,
                 path=None if events is None or str(events) == "-" else events)  # fmt: skip
    doc = result.to_dict()
    human = f"pushed {result.pushed} of {result.read} events to {result.stream}"
    if result.dead_lettered:
        human += f"; {result.dead_lettered} dead-lettered to {result.dead_letter}"
    output.result(doc, human)
    for check, count in sorted(result.failed_checks.items()):
        output.info(f"  {check}: {count}")
    result.raise_for_status()
