"""The run ledger: one JSON record per command run, appended under the artifact directory.

Layout: ``<artifact_dir>/<pipeline>/runs/<started>-<pid>-<rand>.json``. A run writes its record
once when it knows where the ledger lives (the config has loaded) and replaces it, atomically,
when it ends. One file per run means concurrent runs never contend for a lock, and a run that
was killed (kill -9, OOM, a lost machine) leaves a record with no end: readers count it as
failed once its process is gone (or, on another host, once it is older than a day).

A record (``documents.LedgerRecord``; ``format_version`` 1):

    run_id, command, args (secrets masked), pipeline, pid, host,
    started_at, ended_at, triggered_at (``--triggered-at`` / ``MLPIPE_TRIGGERED_AT``; default:
    started_at), exit_code, status (running | ok | data_failed | error | killed),
    rows_in, rows_out, rows_failed, versions_read, versions_written, as_of, switched_at

``status`` reads: ``ok`` exit 0; ``data_failed`` exit 1 (the run worked and the data failed a
check); ``error`` any other exit code; ``killed`` no end and the process is gone.

The feature server adds ``serve`` records too: its latency histogram, written periodically and
at shutdown (``write_serving_snapshot``), so ``mlpipe slo`` reads latency without Prometheus.

Recording never fails a run: a ledger that cannot be written is reported on stderr once.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

RUNS_DIR = "runs"
# A record with no end whose process we cannot see (another host) counts as killed after this.
FOREIGN_RUN_TIMEOUT = timedelta(hours=24)

_SECRET_FLAG = re.compile(r"(password|passwd|token|secret|api[-_]?key|signing[-_]?key)", re.I)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@", re.I)


def mask_args(args: Sequence[str]) -> list[str]:
    """Arguments as recorded: values of secret-looking flags and URL passwords replaced."""
    masked: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            masked.append("***")
            hide_next = False
            continue
        if arg.startswith("-") and _SECRET_FLAG.search(arg):
            if "=" in arg:
                masked.append(arg.split("=", 1)[0] + "=***")
            else:
                masked.append(arg)
                hide_next = True
            continue
        masked.append(_URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", arg))
    return masked


def parse_instant(text: str, what: str) -> datetime:
    """An ISO-8601 instant; naive means UTC. Raises UsageError naming ``what``."""
    from mlpipe_cli.errors import UsageError

    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{what}: expected an ISO-8601 time such as 2026-12-05T06:00:00Z, got {text!r}"
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat(timespec="microseconds")


# Keys of a command's result document that the ledger keeps (the first present wins).
_ROWS_IN = ("rows_in", "input_rows", "rows_read")
_ROWS_OUT = ("rows_out", "rows", "rows_written", "entity_count")
_ROWS_FAILED = ("rows_failed", "failed_rows", "quarantined")


@dataclass
class RunRecorder:
    """The record of the run in progress; the CLI (or the Python API) owns one per run."""

    command: str
    args: list[str]
    started_at: datetime
    triggered_at: datetime | None = None
    path: Path | None = None
    pipeline: str | None = None
    run_id: str = field(default_factory=lambda: secrets.token_hex(6))
    facts: dict[str, Any] = field(default_factory=dict)
    versions_read: list[str] = field(default_factory=list)
    versions_written: list[str] = field(default_factory=list)
    _warned: bool = False
    _opening: Callable[[], None] | None = None  # waits for the opening record's fsyncs

    def attach(self, artifact_dir: Path, pipeline: str) -> None:
        """The config has loaded: the ledger's place is known; write the opening record."""
        if self.path is not None:
            return
        stamp = self.started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        self.pipeline = pipeline
        self.path = (
            Path(artifact_dir) / pipeline / RUNS_DIR / f"{stamp}-{os.getpid()}-{self.run_id}.json"
        )
        # in place at once (a run killed from here on still reads as killed), synced on a
        # thread while the command goes on (#19)
        self._write(None, None, background=True)

    def note_result(self, document: Any) -> None:
        """Keep the row counts, versions and as-of of a command's result document."""
        if not isinstance(document, Mapping):
            return
        for target, keys in (
            ("rows_in", _ROWS_IN),
            ("rows_out", _ROWS_OUT),
            ("rows_failed", _ROWS_FAILED),
        ):
            for key in keys:
                value = document.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    self.facts.setdefault(target, value)
                    break
        # validate: per-source rows and failed rows
        sources = document.get("sources")
        if isinstance(sources, list):
            rows = failed = 0
            seen = False
            for source in sources:
                if isinstance(source, Mapping) and isinstance(source.get("rows"), int):
                    seen = True
                    rows += int(source["rows"])
                    failed += int(source.get("failed_rows") or 0)
            if seen:
                self.facts["rows_in"] = rows
                self.facts["rows_failed"] = failed
        if isinstance(document.get("as_of"), str):
            self.facts["as_of"] = document["as_of"]
        # a materialize run's finished_at is the moment its version went live
        if "chunks" in document and isinstance(document.get("finished_at"), str):
            self.facts["switched_at"] = document["finished_at"]

    def note_version(self, kind: str, version: str, *, written: bool) -> None:
        target = self.versions_written if written else self.versions_read
        name = f"{kind}/{version}"
        if name not in target:
            target.append(name)

    def finish(self, exit_code: int, ended_at: datetime) -> None:
        if self.path is not None:
            self._write(exit_code, ended_at)

    def _write(
        self, exit_code: int | None, ended_at: datetime | None, *, background: bool = False
    ) -> None:
        from mlpipe_cli.documents import LedgerRecord  # pydantic: not on `mlpipe --help`'s path

        assert self.path is not None
        self.settle()  # the opening record is synced before it is replaced
        record = {
            "format_version": LedgerRecord.FORMAT_VERSION,
            "run_id": self.run_id,
            "command": self.command,
            "args": mask_args(self.args),
            "pipeline": self.pipeline,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": _iso(self.started_at),
            "ended_at": _iso(ended_at),
            "triggered_at": _iso(self.triggered_at or self.started_at),
            "exit_code": exit_code,
            "status": "running" if exit_code is None else status_for(exit_code),
            "rows_in": self.facts.get("rows_in"),
            "rows_out": self.facts.get("rows_out"),
            "rows_failed": self.facts.get("rows_failed"),
            "versions_read": self.versions_read,
            "versions_written": self.versions_written,
            "as_of": self.facts.get("as_of"),
            "switched_at": self.facts.get("switched_at"),
        }
        data = json.dumps(record, indent=1).encode() + b"\n"
        try:
            from mlpipe_cli.io import atomic_write_bytes, atomic_write_bytes_started

            if background:
                self._opening = atomic_write_bytes_started(self.path, data, own_name=True)
            else:
                atomic_write_bytes(self.path, data, own_name=True)
        except Exception as exc:  # the ledger must never fail the run it records
            self._warn(exc)

    def settle(self) -> None:
        """Wait until the opening record is synced (``recording`` does, whatever happens)."""
        if self._opening is not None:
            wait, self._opening = self._opening, None
            try:
                wait()
            except Exception as exc:
                self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        if not self._warned:
            self._warned = True
            assert self.path is not None
            sys.stderr.write(f"warning: run ledger not written ({self.path.parent}): {exc}\n")


def status_for(exit_code: int) -> str:
    if exit_code == 0:
        return "ok"
    if exit_code == 1:
        return "data_failed"
    return "error"


_current: ContextVar[RunRecorder | None] = ContextVar("mlpipe_run_recorder", default=None)


def current() -> RunRecorder | None:
    return _current.get()


@contextlib.contextmanager
def recording(
    command: str, args: Sequence[str], *, triggered_at: datetime | None = None
) -> Iterator[RunRecorder]:
    """Record one run; the caller reports the exit code with ``finish`` before leaving."""
    if triggered_at is None and os.environ.get("MLPIPE_TRIGGERED_AT"):
        triggered_at = parse_instant(os.environ["MLPIPE_TRIGGERED_AT"], "MLPIPE_TRIGGERED_AT")
    recorder = RunRecorder(
        command=command,
        args=list(args),
        started_at=datetime.now(UTC),
        triggered_at=triggered_at,
    )
    token = _current.set(recorder)
    try:
        yield recorder
    finally:
        recorder.settle()
        _current.reset(token)


def attach(artifact_dir: Path, pipeline: str) -> None:
    """Called where a command resolves its artifact directory; a no-op outside a run."""
    recorder = _current.get()
    if recorder is not None:
        recorder.attach(artifact_dir, pipeline)


def note_result(document: Any) -> None:
    recorder = _current.get()
    if recorder is not None:
        recorder.note_result(document)


# -- reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One ledger record as read back, with the status a reader should believe."""

    record: dict[str, Any]
    status: str
    path: Path

    @property
    def command(self) -> str:
        return str(self.record.get("command"))

    @property
    def started_at(self) -> datetime:
        return parse_instant(self.record["started_at"], "started_at")

    @property
    def ended_at(self) -> datetime | None:
        value = self.record.get("ended_at")
        return None if value is None else parse_instant(value, "ended_at")

    @property
    def triggered_at(self) -> datetime:
        value = self.record.get("triggered_at") or self.record["started_at"]
        return parse_instant(value, "triggered_at")

    def to_dict(self) -> dict[str, Any]:
        return {**self.record, "status": self.status, "file": self.path.name}


def runs_dir(artifact_dir: Path, pipeline: str) -> Path:
    return Path(artifact_dir) / pipeline / RUNS_DIR


def read_runs(
    artifact_dir: Path,
    pipeline: str,
    *,
    since: datetime | None = None,
    command: str | None = None,
    now: datetime | None = None,
) -> list[Run]:
    """Every recorded run (oldest first), optionally since a time and for one command.

    Unreadable records (a disk that filled mid-rename cannot leave one, but a hand-edited file
    can, and so can a power loss in the milliseconds before an opening record is synced: an
    empty file) are skipped with a warning rather than failing the whole read. A record of a
    format_version this mlpipe does not read (a newer mlpipe wrote it) is ArtifactError (exit
    3): counting it as unreadable would silently drop runs from the SLO figures.
    """
    from mlpipe_cli.documents import LedgerRecord, check
    from mlpipe_cli.errors import InputError
    from mlpipe_cli.io import pid_alive

    now = now or datetime.now(UTC)
    host = socket.gethostname()
    directory = runs_dir(artifact_dir, pipeline)
    if not directory.is_dir():
        return []
    runs: list[Run] = []
    for path in sorted(directory.glob("*.json")):
        try:
            record = json.loads(path.read_text())
            check(LedgerRecord, record, str(path), invalid=InputError)
            started = parse_instant(record["started_at"], "started_at")
        except (OSError, ValueError, KeyError, TypeError, InputError):
            sys.stderr.write(f"warning: skipping unreadable run record {path}\n")
            continue
        if command is not None and record.get("command") != command:
            continue
        if since is not None and started < since:
            continue
        status = str(record.get("status") or "running")
        if record.get("exit_code") is None:
            pid = record.get("pid")
            if record.get("host") == host and isinstance(pid, int):
                gone = not pid_alive(pid)
            else:
                gone = now - started > FOREIGN_RUN_TIMEOUT
            status = "killed" if gone else "running"
        runs.append(Run(record, status, path))
    return runs


def write_serving_snapshot(
    artifact_dir: Path,
    pipeline: str,
    *,
    started_at: datetime,
    snapshot: Mapping[str, Any],
    final: bool = False,
) -> Path:
    """The server's latency histogram so far, as one ``serve`` record per server process
    (replaced on each write; ``final`` at shutdown). ``snapshot``: ``{"buckets": [upper
    bounds in seconds], "counts": [per bucket, the last one +Inf], "sum": seconds}``."""
    from mlpipe_cli.documents import LedgerRecord
    from mlpipe_cli.io import atomic_write_bytes

    stamp = started_at.astimezone(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    path = runs_dir(artifact_dir, pipeline) / f"{stamp}-{os.getpid()}-serve.json"
    now = datetime.now(UTC)
    record = {
        "format_version": LedgerRecord.FORMAT_VERSION,
        "run_id": f"serve-{os.getpid()}",
        "command": "serve",
        "pipeline": pipeline,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": _iso(started_at),
        "ended_at": _iso(now) if final else None,
        "updated_at": _iso(now),
        "triggered_at": _iso(started_at),
        "exit_code": 0 if final else None,
        "status": "ok" if final else "running",
        "latency": dict(snapshot),
    }
    atomic_write_bytes(path, json.dumps(record, indent=1).encode() + b"\n")
    return path
