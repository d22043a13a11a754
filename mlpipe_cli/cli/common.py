"""Options every subcommand shares, the run context, and output rendering.

Results go to stdout, diagnostics to stderr. On a TTY human output uses rich; otherwise it
is plain text (no colour codes, no box art). ``--json`` prints exactly one JSON document on
stdout; ``-q`` prints only errors.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any

import typer

from mlpipe_cli.ops.project import DEFAULT_ARTIFACT_DIR as DEFAULT_ARTIFACT_DIR
from mlpipe_cli.ops.project import DEFAULT_CONFIG as DEFAULT_CONFIG
from mlpipe_cli.ops.project import Project

ConfigOption = Annotated[
    Path,
    typer.Option(
        "-c", "--config", help="Pipeline YAML config.", envvar="MLPIPE_CONFIG", show_default=True
    ),
]
ArtifactDirOption = Annotated[
    Path | None,
    typer.Option(
        "--artifact-dir",
        help="Artifact directory (overrides the config; default ./artifacts).",
        envvar="MLPIPE_ARTIFACT_DIR",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="Print only errors.")]


@dataclass
class Output:
    """Where and how a command prints. Build one per command with ``Output.create``."""

    json_mode: bool = False
    quiet: bool = False
    stdout_tty: bool = False
    stderr_tty: bool = False

    @classmethod
    def create(cls, *, json_mode: bool = False, quiet: bool = False) -> Output:
        return cls(
            json_mode=json_mode,
            quiet=quiet,
            stdout_tty=_isatty(sys.stdout),
            stderr_tty=_isatty(sys.stderr),
        )

    @cached_property
    def console(self) -> Any:
        from rich.console import Console

        return Console(file=sys.stdout, highlight=False)

    def emit_json(self, document: Any) -> None:
        sys.stdout.write(json.dumps(document, indent=2, sort_keys=False, default=str) + "\n")
        sys.stdout.flush()

    def result(self, document: Any, human: str | None = None) -> None:
        """Print a command's result: JSON in --json mode, else the human text (unless -q).

        The run ledger keeps the result's row counts and versions (every command's result
        passes here, so no command has to remember to report them)."""
        from mlpipe_cli import ledger

        ledger.note_result(document)
        if self.json_mode:
            self.emit_json(document)
        elif not self.quiet and human is not None:
            self.line(human)

    def line(self, text: str = "") -> None:
        if self.json_mode or self.quiet:
            return
        sys.stdout.write(text + "\n")

    def info(self, text: str) -> None:
        """A diagnostic on stderr (suppressed by -q and --json stays clean on stdout)."""
        if not self.quiet:
            sys.stderr.write(text + "\n")

    def warn(self, text: str) -> None:
        if not self.quiet:
            sys.stderr.write(f"warning: {text}\n")

    def table(
        self, headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None
    ) -> None:
        """A table: rich on a TTY, aligned plain text otherwise."""
        if self.json_mode or self.quiet:
            return
        cells = [[_cell(v) for v in row] for row in rows]
        if self.stdout_tty:
            from rich.table import Table

            table = Table(title=title)
            for header in headers:
                table.add_column(header)
            for row in cells:
                table.add_row(*row)
            self.console.print(table)
            return
        if title:
            sys.stdout.write(title + "\n")
        widths = [len(h) for h in headers]
        for row in cells:
            widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
        sys.stdout.write(
            "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
        )
        sys.stdout.write("\n")
        for row in cells:
            sys.stdout.write(
                "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
            )
            sys.stdout.write("\n")

    @property
    def draws_progress(self) -> bool:
        """Progress bars only where a person watches: stderr is a terminal, no -q/--json."""
        return self.stderr_tty and not self.quiet and not self.json_mode

    @contextmanager
    def reporting(self) -> Iterator[None]:
        """Draw the progress the core reports (``mlpipe_cli.progress``) while the block runs:
        rich bars on stderr on a TTY, nothing otherwise. The bars are transient: once the
        block ends only the summary line stays."""
        if not self.draws_progress:
            yield
            return
        from mlpipe_cli import progress

        renderer = _RichRenderer()
        try:
            with progress.reporting(renderer):
                yield
        finally:
            renderer.close()

    def summary(
        self,
        command: str,
        *,
        rows: int,
        seconds: float,
        unit: str = "rows",
        detail: str = "",
        status: str | None = None,
        output: str | Path | None = None,
    ) -> None:
        """The one line a long command ends with, on stderr (human mode only)."""
        if self.json_mode or self.quiet:
            return
        sys.stderr.write(
            summary_line(
                command,
                rows=rows,
                seconds=seconds,
                unit=unit,
                detail=detail,
                status=status,
                output=output,
            )
            + "\n"
        )
        sys.stderr.flush()


def summary_line(
    command: str,
    *,
    rows: int,
    seconds: float,
    unit: str = "rows",
    detail: str = "",
    status: str | None = None,
    output: str | Path | None = None,
) -> str:
    """``training-set: 100,000 rows x 8 features in 1.9 s (52,600 rows/s) -> train.parquet``.

    ``detail`` follows the count (" x 8 features"); ``status`` follows the rate (", failed");
    ``output`` is what the command produced (a file, an artifact version)."""
    text = (
        f"{command}: {rows:,} {unit}{detail} in {format_seconds(seconds)} "
        f"({format_rate(rows, seconds)} {unit}/s)"
    )
    if status:
        text += f", {status}"
    if output is not None and str(output):
        text += f" -> {output}"
    return text


def format_seconds(seconds: float) -> str:
    """1.9 s, 0.05 s, 2m 05s, 1h 02m."""
    if seconds < 1:
        return f"{seconds:.2f} s"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60}m {whole % 60:02d}s"
    return f"{whole // 3600}h {whole % 3600 // 60:02d}m"


def format_rate(count: int, seconds: float) -> str:
    """Items per second to three significant digits (52,631 -> 52,600): the clock's noise
    makes more digits meaningless."""
    if seconds <= 0:
        return "-"
    rate = count / seconds
    if rate == 0:
        return "0"
    if rate < 100:
        return f"{rate:.3g}"
    digits = len(str(int(rate))) - 3
    return f"{round(rate, -digits):,.0f}"


class _RichRenderer:
    """mlpipe_cli.progress tasks as rich bars on stderr, one line per open task (nested
    tasks, e.g. the feature groups of one materialize batch, below their parent)."""

    def __init__(self) -> None:
        self._bar: Any = None

    def _progress(self) -> Any:
        if self._bar is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(bar_width=30),
                _count_column(),
                TextColumn("{task.fields[detail]}"),
                TimeElapsedColumn(),
                # only built when stderr is a terminal (or MLPIPE_FORCE_TTY=1 says to act so)
                console=Console(file=sys.stderr, force_terminal=True, highlight=False),
                transient=True,
                redirect_stdout=False,  # results on stdout stay on stdout, even when piped
            )
            self._bar.start()
        return self._bar

    def add(self, description: str, total: float | None, unit: str) -> Any:
        return self._progress().add_task(description, total=total, unit=unit, detail="")

    def update(self, handle: Any, *, completed: float, total: float | None, detail: str) -> None:
        bar = self._progress()
        # a total that just became known is drawn at once, not at the next tick
        redraw = bar.tasks[bar.task_ids.index(handle)].total != total
        bar.update(handle, completed=completed, total=total, detail=detail, refresh=redraw)

    def remove(self, handle: Any) -> None:
        self._progress().remove_task(handle)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _count_text(completed: float, total: float | None, unit: str, speed: float | None) -> str:
    if total is None and not completed:
        return ""  # a step of unknown size: the pulsing bar and the clock say enough
    done = f"{int(completed):,}"
    text = f"{done}/{int(total):,}" if total is not None else done
    if unit:
        text += f" {unit}"
    if speed and unit in _RATE_UNITS:
        text += f" ({speed:,.0f} {unit}/s)"
    return text


# units worth a rate beside the bar (steps and groups are too coarse for one)
_RATE_UNITS = frozenset({"rows", "entities"})


def _count_column() -> Any:
    """``3/8 groups``, ``1,200/20,000 rows (9,800 rows/s)`` (built on first use: rich is
    imported only when a bar is drawn)."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class CountColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(_count_text(task.completed, task.total, task.fields.get("unit", ""), speed))

    return CountColumn()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _isatty(stream: Any) -> bool:
    if os.environ.get("MLPIPE_FORCE_TTY") == "1":
        return True
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


# The run context is the ops layer's Project: the CLI builds one per command from -c and
# --artifact-dir and hands it to the ops function.
RunContext = Project


def run_context(config: Path, artifact_dir: Path | None) -> RunContext:
    return Project(config_path=config, artifact_dir_override=artifact_dir)


FeaturesOption = Annotated[
    list[str] | None,
    typer.Option(
        "--features",
        help="Only these features (comma-separated; repeatable). Default: all.",
    ),
]


def parse_features(values: str | Sequence[str] | None) -> list[str] | None:
    """The one reading of --features: comma-separated and repeatable, names stripped,
    duplicates dropped (first occurrence kept). None (flag not given) means every feature;
    a flag that names nothing (``--features ,``) is a usage error rather than "all"."""
    if values is None:
        return None
    items = [values] if isinstance(values, str) else list(values)
    names = [n.strip() for item in items for n in item.split(",") if n.strip()]
    if not names:
        from mlpipe_cli.errors import UsageError

        raise UsageError("--features is empty", hint="give names like total_orders,plan")
    return list(dict.fromkeys(names))


EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="Batch engine: polars (this process) or spark (the config's spark: cluster); "
        "default: the config's engine:.",
    ),
]
