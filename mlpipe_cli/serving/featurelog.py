"""Feature logging off the request path: a bounded queue and one background writer thread.

The request path calls :meth:`FeatureLogger.log`, which appends one tuple to a deque (no I/O,
no lock, no thread wake-up) or, when ``queue_rows`` rows are already waiting, drops the row
and counts it. The writer thread wakes every ``poll_interval`` seconds (never once per row:
per-row wake-ups cost the event loop a GIL hand-off per request and showed up as p99 spikes
of tens of milliseconds), drains the deque, converts the rows to a small columnar frame, and
publishes a Parquet segment when enough rows or enough time accumulated. Each segment is
published
atomically (temp file + fsync + rename) as ``segment-<UTC yyyymmddTHHMMSS>-<pid>-<seq>.parquet``
under the log directory — the format of docs/architecture.md §5, read by `mlpipe psi-report`.

A segment is written when it reaches ``segment_rows`` rows or when its oldest row is
``flush_interval`` seconds old, and on :meth:`close` (graceful shutdown), which drains the
queue completely. Counters (all exact): ``enqueued``, ``dropped``, ``written``, ``failed``.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# (served_at epoch µs, endpoint, entity JSON, store_version, cold_start, raw values, vector,
#  prediction)
LogRow = tuple[int, str, str, "str | None", bool, Sequence[Any], Sequence[float], "float | None"]


class FeatureLogger:
    """Queue + writer thread producing rotating Parquet segments."""

    def __init__(
        self,
        log_dir: Path,
        *,
        transform_version: str,
        raw_columns: Sequence[str],
        raw_dtypes: Mapping[str, str] | None = None,
        vec_columns: Sequence[str],
        queue_rows: int = 100_000,
        segment_rows: int = 50_000,
        flush_interval: float = 60.0,
        poll_interval: float = 0.05,
    ) -> None:
        self.log_dir = Path(log_dir)
        self.transform_version = transform_version
        self.raw_columns = list(raw_columns)
        self.raw_dtypes = dict(raw_dtypes or {})
        self.vec_columns = list(vec_columns)
        self.queue_rows = queue_rows
        self.segment_rows = segment_rows
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self._queue: deque[Any] = deque()
        # Single producer (the event-loop thread) increments enqueued/dropped; the single
        # consumer (the writer thread) increments dequeued/written/failed. Each int has one
        # writer, so the counters are exact and a read from another thread is a snapshot.
        self.enqueued = 0
        self.dropped = 0
        self._dequeued = 0
        self.written = 0
        self.failed = 0
        self.segments = 0
        self.last_error: str | None = None
        self._seq = 0
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- request path -------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Rows waiting in the queue."""
        return self.enqueued - self._dequeued

    def log(
        self,
        endpoint: str,
        entity: str,
        store_version: str | None,
        cold_start: bool,
        raw: Sequence[Any],
        vector: Sequence[float],
        prediction: float | None,
        served_at_us: int | None = None,
    ) -> bool:
        """Enqueue one served row; False (and counted in ``dropped``) when the queue is full."""
        if self._closed or self.enqueued - self._dequeued >= self.queue_rows:
            self.dropped += 1
            return False
        if served_at_us is None:
            served_at_us = time.time_ns() // 1000
        self._queue.append(
            (served_at_us, endpoint, entity, store_version, cold_start, raw, vector, prediction)
        )
        self.enqueued += 1
        return True

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._run, name="mlpipe-feature-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 120.0) -> None:
        """Stop accepting rows, write everything queued, and wait for the writer (idempotent)."""
        with self._lock:
            self._closed = True
            self._stop.set()
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
        else:
            # Never started: write what was queued, synchronously.
            self._run()

    # -- writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        frames: list[Any] = []  # converted chunks of the segment being built
        rows_in_segment = 0
        segment_started: float | None = None
        while True:
            stopping = self._stop.wait(self.poll_interval)
            rows = self._drain()
            if rows:
                try:
                    frames.append(self.frame(rows))
                except Exception as exc:  # a value polars cannot hold: count, keep going
                    self.failed += len(rows)
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    rows = []
                rows_in_segment += len(rows)
                if segment_started is None and rows:
                    segment_started = time.monotonic()
            due = segment_started is not None and (
                time.monotonic() - segment_started >= self.flush_interval
            )
            if frames and (stopping or due or rows_in_segment >= self.segment_rows):
                self._write_frames(frames, rows_in_segment)
                frames, rows_in_segment, segment_started = [], 0, None
            if stopping and not self._queue:
                return

    def _drain(self) -> list[LogRow]:
        queue_ = self._queue
        count = len(queue_)
        rows = [queue_.popleft() for _ in range(count)]
        self._dequeued += count
        return rows

    def _write_frames(self, frames: list[Any], rows: int) -> None:
        import polars as pl

        try:
            frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical_relaxed")
        except Exception as exc:
            self.failed += rows
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        self._write(frame)

    def _write(self, frame: Any) -> None:
        rows = frame.height
        try:
            self._seq += 1
            first = frame["served_at"][0]
            stamp = first.strftime("%Y%m%dT%H%M%S")
            name = f"segment-{stamp}-{self._pid}-{self._seq:06d}.parquet"
            from mlpipe_cli.io import write_parquet_atomic

            write_parquet_atomic(frame, self.log_dir / name)
        except Exception as exc:  # disk full, permissions: keep serving, count the loss
            self.failed += rows
            self.last_error = f"{type(exc).__name__}: {exc}"
            return
        self.written += rows
        self.segments += 1

    def frame(self, rows: Sequence[LogRow]) -> Any:
        """The Parquet frame of some rows (docs/architecture.md §5 column layout)."""
        import polars as pl

        n = len(rows)
        columns: dict[str, pl.Series] = {
            "served_at": pl.Series("served_at", [r[0] for r in rows], dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
            "endpoint": pl.Series("endpoint", [r[1] for r in rows], dtype=pl.String),
            "entity": pl.Series("entity", [r[2] for r in rows], dtype=pl.String),
            "transform_version": pl.Series(
                "transform_version", [self.transform_version] * n, dtype=pl.String
            ),
            "store_version": pl.Series("store_version", [r[3] for r in rows], dtype=pl.String),
            "cold_start": pl.Series("cold_start", [r[4] for r in rows], dtype=pl.Boolean),
        }
        for j, col in enumerate(self.raw_columns):
            name = f"raw.{col}"
            columns[name] = _raw_series(name, [r[5][j] for r in rows], self.raw_dtypes.get(col))
        if self.vec_columns:
            width = len(self.vec_columns)
            vectors = [r[6] for r in rows]
            if any(len(v) != width for v in vectors):
                raise ValueError(f"a logged vector does not have {width} values")
            for j, col in enumerate(self.vec_columns):
                name = f"vec.{col}"
                columns[name] = pl.Series(
                    name, [None if v[j] is None else float(v[j]) for v in vectors], dtype=pl.Float64
                )
        columns["prediction"] = pl.Series("prediction", [r[7] for r in rows], dtype=pl.Float64)
        return pl.DataFrame(list(columns.values()))


def _raw_series(name: str, values: list[Any], dtype_name: str | None) -> Any:
    """A raw feature column in its natural dtype (the transform's input schema when known)."""
    import polars as pl

    dtype = polars_dtype(dtype_name) if dtype_name else None
    if dtype is not None:
        try:
            return pl.Series(name, values, dtype=dtype, strict=False)
        except Exception:
            pass
    try:
        return pl.Series(name, values)
    except Exception:
        return pl.Series(name, [None if v is None else str(v) for v in values], dtype=pl.String)


def polars_dtype(name: str) -> Any:
    """'Int64', 'Float64', 'String', "Datetime(time_unit='us', time_zone='UTC')" -> a dtype."""
    import polars as pl

    text = name.strip()
    simple = {
        "int8": pl.Int8, "int16": pl.Int16, "int32": pl.Int32, "int64": pl.Int64,
        "uint8": pl.UInt8, "uint16": pl.UInt16, "uint32": pl.UInt32, "uint64": pl.UInt64,
        "float32": pl.Float32, "float64": pl.Float64, "bool": pl.Boolean,
        "boolean": pl.Boolean, "string": pl.String, "str": pl.String, "utf8": pl.String,
        "categorical": pl.String, "date": pl.Date,
    }  # fmt: skip
    lower = text.lower()
    if lower in simple:
        return simple[lower]
    if lower.startswith("datetime"):
        zone = "UTC" if "utc" in lower else None
        return pl.Datetime("us", zone)
    return None
