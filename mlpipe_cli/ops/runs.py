"""`mlpipe runs`: the run ledger's records (the ledger itself lives in ``mlpipe_cli.ledger``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from mlpipe_cli.argnames import arg_name
from mlpipe_cli.ledger import Run, read_runs
from mlpipe_cli.ops.project import Project


def list_runs(
    project: Project, *, command: str | None = None, since: str | timedelta | None = None
) -> list[Run]:
    """Every recorded run (oldest first), optionally of one ``command`` and started within
    ``since`` (a timedelta or a span as the CLI writes it, e.g. "24h"); UsageError (exit 2)
    for a span that does not parse."""
    start = None
    if since is not None:
        if not isinstance(since, timedelta):
            from mlpipe_cli.config.base import parse_duration
            from mlpipe_cli.errors import UsageError

            try:
                since = parse_duration(since)
            except ValueError as exc:
                raise UsageError(f"{arg_name('since')}: {exc}") from None
        start = datetime.now(UTC) - since
    return read_runs(project.artifact_dir, project.config.pipeline, since=start, command=command)
