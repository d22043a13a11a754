"""Feature logging off the request path: a bounded queue, and a writer that works between
requests.

The request path calls :meth:`FeatureLogger.log`, which appends one tuple to a deque (no I/O,
no lock, no thread wake-up) or, when ``queue_rows`` rows are already waiting, drops the row
and counts it. With a ``sample_rate`` below 1 the callers first ask :meth:`FeatureLogger.keep`
whether to log an entity at all, before building its row; the ones it leaves out are counted
in ``sampled_out``. Every ``poll_interval`` seconds (never once per row: per-row wake-ups
cost the event loop a GIL hand-off per request and showed up as p99 spikes of tens of
milliseconds) the writer turns the queued rows into Parquet segments. Each segment is
published atomically (temp file + fsync + rename) as
``segment-<UTC yyyymmddTHHMMSS>-<pid>-<seq>.parquet`` under the log directory — the format of
docs/architecture.md §5, read by `mlpipe psi-report`.

The writer has two drivers. Started with the server's event loop (``start(loop)``, what
`mlpipe serve` does), its steps run **on the loop**, a few at a time between requests, and
only the Parquet write itself goes to a helper thread (Polars runs it with the GIL released);
started without one, it runs on a **thread** of its own. On 2 cores the loop driver served
more requests per second: a second Python thread that wants the GIL costs the server more
than the writer's own work (docs/serve.md, seventh round).

A segment is written when it reaches ``segment_rows`` rows (checked after each poll's rows
were taken) or when its oldest row is ``flush_interval`` seconds old, and on :meth:`close`
(graceful shutdown), which drains the queue completely. Counters (all exact): ``enqueued``,
``dropped``, ``sampled_out``, ``written``, ``failed``. A malformed row (fewer raw values than raw columns, a
vector of the wrong width) fails alone; a value Polars cannot hold fails its group of
``_RETRY_ROWS`` rows; a failed write fails its segment. Failures are counted, never raised.

Either way the writer never works long at a time: on its thread, every stretch of its Python
work ends after about ``_HOLD_SECONDS`` with a short real sleep (it shares the GIL with the
event loop); on the loop, it gives the loop back after ``_HOLD_SECONDS``. Each step is small
enough to keep a stretch well under a millisecond:

1. take — rows leave the deque ``_SLICE_ROWS`` at a time and are transposed (``zip``, in C)
   into one Python list per output column; the row tuples are freed a slice at a time;
2. convert — once ``_BATCH_ROWS`` rows are waiting (or the segment is due), each column list
   becomes a Polars Series, column by column. Building a Series from Python objects holds the
   GIL for the whole call and its cost per value depends on the type (a float ~20 ns, a
   timezone-aware datetime ~3 µs), so each column is converted in pieces sized from the
   measured cost of the previous call (``_CALL_SECONDS`` per call at most);
3. write — the converted parts of the segment are concatenated lazily and streamed to
   Parquet by Polars (``sink_parquet``), which runs with the GIL released (on Polars' thread
   pool: it competes with the event loop for CPU, ~30 ms per 20,000 rows, not for the GIL).

Converting column by column in large batches also keeps Polars' fixed cost per call (~30 µs
a Series) off the per-row cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import threading
import time
from collections import deque
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from pathlib import Path
from typing import Any

from mlpipe_cli.servinglog import (
    SERVED_AT,
    raw_column,
    segment_metadata,
    segment_name,
    vec_column,
)

# (served_at epoch µs, endpoint, entity JSON, store_version, cold_start, raw values, vector,
#  prediction)
LogRow = tuple[int, str, str, "str | None", bool, Sequence[Any], Sequence[float], "float | None"]

# Rows moved from the queue and transposed per step. zip(*rows) creates one GC-tracked
# iterator per row all at once: a large slice pushes the GC's allocation count over its
# threshold, and every extra young collection promotes the rows still queued, which brings
# the next full collection (~20-40 ms with Polars loaded) sooner.
_SLICE_ROWS = 64
_BATCH_ROWS = 4096  # rows converted together (one Polars call per column when values are cheap)
_RETRY_ROWS = 64  # after a failed conversion the batch is retried in groups this size
_HOLD_SECONDS = 0.0001  # writer work between two releases of the GIL
_PAUSE_SECONDS = 0.0001  # the release: a real sleep (after sleep(0) this thread may win it back)
_CALL_SECONDS = 0.00025  # target duration of one Series construction (it holds the GIL)
_CALL_OVERHEAD = 0.00003  # fixed cost of one pl.Series call, not part of the per-value cost
_FIRST_PIECE = 128  # values per call before a column's cost has been measured
_MEASURE_MIN = 64  # fewer values than this in a fast call: its time is mostly overhead

# Segment sequence numbers are per process, not per logger: the server starts a new logger
# when the live version switches (`mlpipe promote`), and two segments must never share a name.
_SEGMENT_SEQ = itertools.count(1)

# Column kinds, in the order of _Columns.lists (transform_version is a constant, not a list).
_SERVED_AT, _STRING, _BOOLEAN, _RAW, _FLOAT = range(5)


class _Columns:
    """Rows taken from the queue, transposed: one Python list per output column.

    Order: served_at, endpoint, entity, store_version, cold_start, raw.* , vec.*, prediction
    (the frame's column order without transform_version).
    """

    __slots__ = ("lists", "rows")

    def __init__(self, count: int) -> None:
        self.lists: list[list[Any]] = [[] for _ in range(count)]
        self.rows = 0


class _Pacer:
    """Called between writer steps: sleeps briefly once ``_HOLD_SECONDS`` of work went by.

    Work is this thread's CPU time: the time it spent waiting for the GIL (the event loop
    took it back) is not work, and counting it would pause, and hand the GIL over, for
    nothing.

    The stretch is short because a request releases the GIL while it waits for the store: a
    writer due to work takes it then, and the request, its reply arrived, waits for the
    stretch to end. ``bench_serve.py --trace-tail`` measured it: with 0.3 ms stretches,
    requests that overlapped one had a median of ~600 µs against ~120-180 µs for the others,
    and they were most of the slowest 1 %; with 0.1 ms, ~340-390 µs against ~170 µs.
    """

    __slots__ = ("_last", "enabled")

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._last = time.thread_time()

    def __call__(self) -> None:
        if self.enabled and time.thread_time() - self._last >= _HOLD_SECONDS:
            time.sleep(_PAUSE_SECONDS)
            self._last = time.thread_time()

    def reset(self) -> None:
        """The GIL was just released (a blocking wait): a new stretch starts."""
        self._last = time.thread_time()


_NO_PACE = _Pacer(enabled=False)


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
        sample_rate: float = 1.0,
        shadow: Any = None,
    ) -> None:
        if not 0.0 < sample_rate <= 1.0:  # also refuses NaN
            raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
        self.log_dir = Path(log_dir)
        self.transform_version = transform_version
        self.raw_columns = list(raw_columns)
        self.raw_dtypes = dict(raw_dtypes or {})
        self.vec_columns = list(vec_columns)
        self.queue_rows = queue_rows
        self.segment_rows = segment_rows
        self.flush_interval = flush_interval
        self.poll_interval = poll_interval
        self.sample_rate = sample_rate
        # A private generator: the process-wide one belongs to whoever else seeds it.
        self._draw = random.Random().random
        # serving.shadow.ShadowScorer: adds shadow.* columns to each row, in this thread
        self.shadow = shadow
        self._queue: deque[Any] = deque()
        # Single producer (the event-loop thread) increments enqueued/dropped; the single
        # consumer (the writer: its thread, or the loop and the sink thread taking turns, see
        # _turn) increments dequeued/written/failed. Each int has one writer at a time, so
        # the counters are exact and a read from another thread is a snapshot.
        self.enqueued = 0
        self.dropped = 0
        self.sampled_out = 0
        self._dequeued = 0
        self.written = 0
        self.failed = 0
        self.segments = 0
        self.last_error: str | None = None
        self._seq = 0
        self._pid = os.getpid()
        self._metadata = segment_metadata()  # the header of every segment
        self._thread: threading.Thread | None = None
        # With the event loop as the driver: the loop, the pending steps of a poll, the
        # segment write in flight on the sink thread.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._steps: Iterator[Any] | None = None
        self._writing: Future[None] | None = None
        self._sink: ThreadPoolExecutor | None = None
        self._closed = False
        self._stop = threading.Event()
        self._lock = threading.Lock()
        # (name, kind, raw dtype name) per list of _Columns, and the values per Polars call
        # learnt for each of them.
        self._specs: list[tuple[str, int, str | None]] = [
            (SERVED_AT, _SERVED_AT, None), ("endpoint", _STRING, None),
            ("entity", _STRING, None), ("store_version", _STRING, None),
            ("cold_start", _BOOLEAN, None),
            *((raw_column(c), _RAW, self.raw_dtypes.get(c)) for c in self.raw_columns),
            *((vec_column(c), _FLOAT, None) for c in self.vec_columns),
            ("prediction", _FLOAT, None),
        ]  # fmt: skip
        if shadow is not None:
            names = shadow.column_names()  # shadow.vec.*, shadow.prediction, version
            self._specs += [(n, _FLOAT, None) for n in names[:-1]]
            self._specs.append((names[-1], _STRING, None))
        self._pieces = [_FIRST_PIECE] * len(self._specs)
        # The writer's state between two polls: rows taken from the queue, not converted
        # yet; converted frames of the segment being built, their rows; when the segment's
        # first row was taken.
        self._columns = _Columns(len(self._specs))
        self._parts: list[Any] = []
        self._converted = 0
        self._started: float | None = None

    # -- request path -------------------------------------------------------------------

    @property
    def depth(self) -> int:
        """Rows waiting in the queue."""
        return self.enqueued - self._dequeued

    def keep(self) -> bool:
        """Whether to log the next served entity: True with probability ``sample_rate``
        (always at 1.0); a False is counted in ``sampled_out``. Callers ask before building
        the row, so an entity left out costs one random draw."""
        if self.sample_rate >= 1.0 or self._draw() < self.sample_rate:
            return True
        self.sampled_out += 1
        return False

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

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Start writing segments: on ``loop`` (the server's event loop) when given and no
        shadow is attached, else on a thread of its own. Callable from any thread."""
        if self._thread is not None or self._loop is not None:
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        # Import Polars and run every conversion once now, at startup: the writer doing it
        # mid-serving would hold the GIL for the import (~0.3 s when Polars was not loaded
        # yet) and the first conversions (~5 ms).
        blank = (0, "", "", None, False, (None,) * len(self.raw_columns),
                 (0.0,) * len(self.vec_columns), None)  # fmt: skip
        with contextlib.suppress(Exception):  # a frame that cannot be built fails later, counted
            self.frame([blank])
        if self.shadow is not None:
            self.shadow.reset()  # the warm-up row is not a served row
        # A shadow scorer runs a whole transform and model per slice of rows, mostly in
        # Polars and NumPy with the GIL released: on a thread that overlaps the requests, on
        # the loop it would hold every request up for the whole call.
        if loop is not None and self.shadow is None:
            self._loop = loop
            # Only the Parquet write leaves the loop: Polars runs it with the GIL released.
            self._sink = ThreadPoolExecutor(1, thread_name_prefix="mlpipe-feature-log-sink")
            loop.call_soon_threadsafe(self._schedule, self.poll_interval)
            return
        self._thread = threading.Thread(target=self._run, name="mlpipe-feature-log", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 120.0) -> None:
        """Stop accepting rows, write everything queued, and wait for the writer (idempotent)."""
        with self._lock:
            self._closed = True
            self._stop.set()
            thread = self._thread
            if thread is None:
                # On the loop, or never started: finish in this thread. Holding the lock,
                # no loop turn runs the steps meanwhile.
                if self._writing is not None:
                    with contextlib.suppress(Exception):
                        self._writing.result(timeout)
                    self._writing = None
                if self._steps is not None:  # a poll the loop left half done: end it first
                    self._finish(self._steps)
                    self._steps = None
                # then one stopping poll even with nothing queued: it writes what that poll
                # took and converted but did not write (its segment was not due yet)
                self._finish(self._poll(stopping=True))
                while self._queue:
                    self._finish(self._poll(stopping=True))
                if self._sink is not None:
                    self._sink.shutdown(wait=True)
        if thread is not None:
            thread.join(timeout)

    # -- the writer's work --------------------------------------------------------------------
    #
    # One poll's work is the generator ``_poll``: it yields None between two small steps and
    # a (parts, rows) pair when a segment is due. Two drivers run it: a thread of its own
    # (``_run``: it pauses at the Nones once it has worked ``_HOLD_SECONDS``, because it
    # competes with the event loop for the GIL), or the event loop itself (``_turn``: it
    # gives the loop back at the Nones, so requests run between the steps). On 2 cores the
    # loop driver served more: a second Python thread wanting the GIL cost the server more
    # than the writer's work (docs/serve.md, seventh round).

    def _run(self) -> None:
        pace = _Pacer()
        while True:
            stopping = self._stop.wait(self.poll_interval)
            pace.reset()
            for segment in self._poll(stopping):
                if segment is None:
                    pace()
                else:
                    parts, rows = segment
                    self._write_parts(parts, rows, pace)
            if stopping and not self._queue:
                return

    def _finish(self, steps: Iterator[Any]) -> None:
        """Run ``steps`` to the end in this thread, writing its segments here."""
        for segment in steps:
            if segment is not None:
                self._write_parts(*segment)

    def _schedule(self, delay: float) -> None:
        """(On the loop.) The next turn in ``delay`` seconds."""
        assert self._loop is not None
        if not self._closed:
            self._loop.call_later(delay, self._turn)

    def _turn(self) -> None:
        """(On the loop.) Work until ``_HOLD_SECONDS`` of CPU time went by, then give the
        loop back: the next step runs after the requests that are ready."""
        loop = self._loop
        assert loop is not None
        if not self._lock.acquire(blocking=False):
            return  # close() is finishing the work in another thread
        try:
            if self._closed:
                return
            steps = self._steps or self._poll(stopping=False)
            started = time.thread_time()
            for segment in steps:
                if segment is not None:
                    # The write runs on the sink thread; the steps resume when it is done
                    # (one segment at a time, and the counters keep one writer at a time).
                    try:
                        writing = self._sink.submit(self._write_parts, *segment)  # type: ignore[union-attr]
                    except RuntimeError:  # the sink takes no more work (interpreter exit)
                        self._write_parts(*segment)  # here, then: its rows are not lost
                        continue
                    self._steps = steps
                    self._writing = writing
                    writing.add_done_callback(self._written)
                    return
                if time.thread_time() - started >= _HOLD_SECONDS:
                    self._steps = steps
                    loop.call_soon(self._turn)
                    return
            self._steps = None
            loop.call_later(self.poll_interval, self._turn)
        except Exception as exc:  # a bug must not stop the log (each step already counts)
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._steps = None
            loop.call_later(self.poll_interval, self._turn)
        finally:
            self._lock.release()

    def _written(self, future: Future[None]) -> None:
        """(On the sink thread.) A segment was written: the loop takes the steps up again."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: close() finishes
            self._loop.call_soon_threadsafe(self._after_write, future)

    def _after_write(self, future: Future[None]) -> None:
        if self._writing is future:
            self._writing = None
            self._turn()

    def _poll(self, stopping: bool) -> Iterator[tuple[list[Any], int] | None]:
        """One poll's work: take what is queued now, convert it once ``_BATCH_ROWS`` rows
        wait, and hand over a segment when it is due (or when ``stopping``)."""
        try:
            columns = self._columns
            budget = len(self._queue)  # queued now; later rows wait for the next poll
            while budget > 0:
                count = min(budget, _SLICE_ROWS)
                self._take(columns, count)
                budget -= count
                if self._started is None:
                    self._started = time.monotonic()
                yield None
                if columns.rows >= _BATCH_ROWS:
                    self._converted += yield from self._convert_into(self._parts, columns)
            if self._started is not None and (
                stopping
                or self._converted + columns.rows >= self.segment_rows
                or time.monotonic() - self._started >= self.flush_interval
            ):
                self._converted += yield from self._convert_into(self._parts, columns)
                parts, rows = self._parts, self._converted
                self._parts, self._converted, self._started = [], 0, None
                if parts:
                    yield parts, rows
        except Exception as exc:  # a bug must not stop the log: count what it held
            self.failed += self._converted + self._columns.rows
            self.last_error = f"{type(exc).__name__}: {exc}"
            self._columns = _Columns(len(self._specs))
            self._parts, self._converted, self._started = [], 0, None

    def _take(self, columns: _Columns, count: int) -> None:
        """Move ``count`` queued rows into ``columns``; a malformed row is counted as failed."""
        popleft = self._queue.popleft
        rows = [popleft() for _ in range(count)]
        self._dequeued += count
        try:
            transposed = self._transpose(rows)
        except Exception:
            good = []
            for row in rows:
                try:
                    self._transpose([row])
                except Exception as exc:
                    self.failed += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                else:
                    good.append(row)
            if not good:
                return
            rows = good
            transposed = self._transpose(rows)
        if self.shadow is not None:
            transposed += self._shadow_columns(rows)
        for target, values in zip(columns.lists, transposed, strict=True):
            target.extend(values)
        columns.rows += len(rows)

    def _transpose(self, rows: Sequence[LogRow]) -> list[Sequence[Any]]:
        """The values of ``rows`` column by column (the order of _Columns.lists)."""
        served, endpoint, entity, store, cold, raws, vectors, predictions = zip(*rows, strict=True)
        out: list[Sequence[Any]] = [served, endpoint, entity, store, cold]
        width = len(self.raw_columns)
        if width:
            raw = list(islice(zip(*raws, strict=False), width))  # extra values: ignored
            if len(raw) < width:
                raise IndexError(f"a logged row has fewer than {width} raw values")
            out += raw
        width = len(self.vec_columns)
        if width:
            if set(map(len, vectors)) != {width}:
                raise ValueError(f"a logged vector does not have {width} values")
            out += zip(*vectors, strict=True)
        out.append(predictions)
        return out

    def _shadow_columns(self, rows: Sequence[LogRow]) -> list[Sequence[Any]]:
        """The shadow.* columns of ``rows`` (serving/shadow.py); all null if the scorer
        itself breaks, so the live row is still written."""
        shadow = self.shadow
        try:
            return shadow.columns([r[5] for r in rows], [r[0] for r in rows])
        except Exception as exc:
            shadow.transform_failures += len(rows)
            shadow.last_error = f"{type(exc).__name__}: {exc}"
            return [[None] * len(rows) for _ in shadow.column_names()]

    def _convert_into(self, parts: list[Any], columns: _Columns) -> Generator[None, None, int]:
        """Convert (and empty) ``columns`` into frames appended to ``parts``; rows converted.

        A value Polars cannot hold fails the batch; it is then retried ``_RETRY_ROWS`` rows
        at a time so only the groups holding such a value are lost (counted in ``failed``).
        """
        rows = columns.rows
        if not rows:
            return 0
        try:
            frames = [(yield from self._convert(columns, 0, rows))]
        except Exception:
            frames = []
            for lo in range(0, rows, _RETRY_ROWS):
                hi = min(rows, lo + _RETRY_ROWS)
                try:
                    frames.append((yield from self._convert(columns, lo, hi)))
                except Exception as exc:
                    self.failed += hi - lo
                    self.last_error = f"{type(exc).__name__}: {exc}"
        parts += frames
        for values in columns.lists:  # freeing the Python values is work too: a list a step
            values.clear()
            yield None
        columns.rows = 0
        return sum(frame.height for frame in frames)

    def _convert(self, columns: _Columns, lo: int, hi: int) -> Generator[None, None, Any]:
        """The frame of rows ``lo:hi`` of ``columns`` (docs/architecture.md §5 column layout)."""
        import polars as pl

        whole = lo == 0 and hi == columns.rows
        series = []
        for k, values in enumerate(columns.lists):
            series.append((yield from self._column(k, values if whole else values[lo:hi])))
        constant = pl.Series("transform_version", [self.transform_version], dtype=pl.String)
        series.insert(3, constant.new_from_index(0, hi - lo))
        frame = pl.DataFrame(series)
        yield None
        return frame

    def _column(self, k: int, values: list[Any]) -> Generator[None, None, Any]:
        """Column ``k`` as a Series, built ``self._pieces[k]`` values per Polars call."""
        name, kind, dtype_name = self._specs[k]
        total = len(values)
        pieces = []
        lo = 0
        while True:
            count = self._pieces[k]
            chunk = values if lo == 0 and total <= count else values[lo : lo + count]
            t0 = time.thread_time()  # CPU time: waiting for the GIL is not the call's cost
            pieces.append(_series(kind, name, chunk, dtype_name))
            elapsed = time.thread_time() - t0
            self._pieces[k] = _next_piece(count, len(chunk), elapsed)
            yield None
            lo += len(chunk)
            if lo >= total:
                break
        if len(pieces) == 1:
            return pieces[0]
        first = pieces[0]
        if all(piece.dtype == first.dtype for piece in pieces):
            for piece in pieces[1:]:
                first.append(piece)
            return first.rechunk()
        # Pieces of a raw column whose dtype was inferred (or fell back) disagree: convert the
        # column in one call, as a single batch always was, so it gets one inferred dtype.
        return _series(kind, name, values, dtype_name)

    def _write_parts(self, parts: list[Any], rows: int, pace: _Pacer = _NO_PACE) -> None:
        """Publish the segment made of ``parts`` (emptied afterwards)."""
        import polars as pl

        from mlpipe_cli.io import sink_parquet_atomic

        try:
            self._seq = next(_SEGMENT_SEQ)
            name = segment_name(parts[0][SERVED_AT][0], self._pid, self._seq)
            lazy = pl.concat([part.lazy() for part in parts], how="vertical_relaxed")
            # Concatenation, encoding, compression and the write run with the GIL released.
            sink_parquet_atomic(lazy, self.log_dir / name, metadata=self._metadata)
        except Exception as exc:  # disk full, permissions: keep serving, count the loss
            self.failed += rows
            self.last_error = f"{type(exc).__name__}: {exc}"
        else:
            self.written += rows
            self.segments += 1
        lazy = None
        while parts:
            parts.pop()
            pace()

    def frame(self, rows: Sequence[LogRow]) -> Any:
        """The Parquet frame of some rows (docs/architecture.md §5 column layout)."""
        columns = _Columns(len(self._specs))
        if rows:
            transposed = self._transpose(rows)
            if self.shadow is not None:
                transposed += self._shadow_columns(rows)
            for target, values in zip(columns.lists, transposed, strict=True):
                target.extend(values)
            columns.rows = len(rows)
        steps = self._convert(columns, 0, columns.rows)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                return done.value


def _series(kind: int, name: str, values: Sequence[Any], dtype_name: str | None) -> Any:
    import polars as pl

    if kind == _FLOAT:
        return _float_series(name, values)
    if kind == _RAW:
        return _raw_series(name, values, dtype_name)
    if kind == _STRING:
        return pl.Series(name, values, dtype=pl.String)
    if kind == _BOOLEAN:
        return pl.Series(name, values, dtype=pl.Boolean)
    return pl.Series(name, values, dtype=pl.Int64).cast(pl.Datetime("us", "UTC"))


def _float_series(name: str, values: Sequence[Any]) -> Any:
    """Float64 with None as null and NaN/inf kept: ``float(v)`` of every other value."""
    import polars as pl

    try:
        # Polars converts exactly as float() does (ints, bools, numpy scalars, Decimal); it
        # refuses strings, which float() parses, hence the slow path.
        return pl.Series(name, values, dtype=pl.Float64)
    except Exception:
        return pl.Series(name, [None if v is None else float(v) for v in values], dtype=pl.Float64)


def _next_piece(count: int, converted: int, elapsed: float) -> int:
    """Values per call for a column whose last call converted ``converted`` values (of a piece
    of ``count``) in ``elapsed`` CPU seconds: what fits in ``_CALL_SECONDS`` at that cost, at
    most twice and at least half the last size (one slow call, a garbage collection in it,
    is not the column's cost; a slow column still converges in a few calls)."""
    if not converted:
        return count
    if converted >= _MEASURE_MIN or elapsed > _CALL_SECONDS:
        per_value = max(elapsed - _CALL_OVERHEAD, 0.0) / converted
        fit = int(_CALL_SECONDS / per_value) if per_value > 0 else _BATCH_ROWS
        return max(8, count // 2, min(_BATCH_ROWS, fit, 2 * count))
    if converted >= count:  # a small piece, converted fast: its time is mostly overhead
        return min(_BATCH_ROWS, 2 * count)
    return count  # the short tail of a column says nothing


def _raw_series(name: str, values: Sequence[Any], dtype_name: str | None) -> Any:
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
