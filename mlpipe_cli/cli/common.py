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

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Any]:
        """A rich progress bar on a TTY (stderr); a no-op advance() elsewhere."""
        if not (self.stderr_tty and not self.quiet and not self.json_mode):
            yield _NullProgress()
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(file=sys.stderr),
            transient=True,
        ) as bar:
            task = bar.add_task(description, total=total)
            yield _RichProgress(bar, task)


class _NullProgress:
    def advance(self, amount: float = 1) -> None:
        pass


class _RichProgress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def advance(self, amount: float = 1) -> None:
        self._bar.advance(self._task, amount)


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
