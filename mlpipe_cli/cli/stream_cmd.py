"""`mlpipe stream`: the long-running consumer that keeps streamed features current."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

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


def stream(
    sources: Annotated[
        list[str] | None,
        typer.Option(
            "--sources",
            "--source",
            "-s",
            help="Streamed sources to consume (comma-separated or repeated; default: "
            "every source with a stream: section).",
        ),
    ] = None,
    consumer: Annotated[
        str | None,
        typer.Option("--consumer", help="Consumer name in the group (default: host-pid)."),
    ] = None,
    once: Annotated[
        bool, typer.Option("--once", help="Stop when the streams are drained.")
    ] = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Drop the streamed state and rebuild it from the "
            "live materialized version; every stream event is applied again.",
        ),
    ] = False,
    status_every: Annotated[
        float, typer.Option("--status-every", help="Seconds between status lines.", min=0.1)
    ] = 10.0,
    max_seconds: Annotated[
        float | None, typer.Option("--max-seconds", help="Stop after this long.", min=0)
    ] = None,
    config: ConfigOption = DEFAULT_CONFIG,
    artifact_dir: ArtifactDirOption = None,
    json_output: JsonOption = False,
    quiet: QuietOption = False,
) -> None:
    """Consume the streamed sources' events into per-entity state (Ctrl-C / SIGTERM stops).

    Bootstraps each source's state from the batch as of the live materialized version's
    as-of (once), then applies every event at or after it: read, update and acknowledge in
    one atomic Redis step, so a killed consumer loses nothing and counts nothing twice. Run
    several with different --consumer names to share the work. A status line (events/s,
    lag in events and seconds, dead-lettered counts) goes to stderr every --status-every
    seconds; with --json each status is a JSON line on stdout and the final result follows.
    Exit codes: 0 stopped cleanly, 2 config error or nothing materialized, 4 Redis down.

    Example: mlpipe stream -c configs/example.yaml --sources orders --consumer worker-1
    """
    from mlpipe_cli.ops.stream import stream as run

    output = Output.create(json_mode=json_output, quiet=quiet)
    names = [n.strip() for item in sources or [] for n in item.split(",") if n.strip()]

    def on_status(status: dict[str, Any]) -> None:
        if json_output:
            sys.stdout.write(json.dumps({"status": status}, default=str) + "\n")
            sys.stdout.flush()
        else:
            output.info(status_line(status))

    result = run(
        run_context(config, artifact_dir),
        sources=names or None,
        consumer=consumer,
        once=once,
        reset=reset,
        max_seconds=max_seconds,
        status_interval=status_every,
        on_status=on_status,
        on_note=output.info,
    )
    doc = result.to_dict()
    output.result(doc, f"stream stopped ({result.stopped}) after {result.seconds:.1f}s: "
                  + status_line(result.status))  # fmt: skip


def status_line(status: dict[str, Any]) -> str:
    parts = []
    rate = status.get("events_per_second")
    if rate is not None:
        parts.append(f"{rate:,.0f} events/s")
    for name, src in status["sources"].items():
        mine = src["this_consumer"]
        lag = f"{src['lag_events']}{'+' if src['lag_events_capped'] else ''}"
        parts.append(
            f"{name}: applied {mine['applied']}, dead-lettered {mine['dead_lettered']} "
            f"(late {mine['late']}, before batch {mine['before_batch']}, malformed "
            f"{mine['malformed']}), duplicates {mine['duplicate']}, lag {lag} events / "
            f"{src['lag_seconds']:.1f}s"
        )
    return "; ".join(parts)
