"""The feature log on its own: bounded queue, exact drop counts, segment format (§5)."""

from __future__ import annotations

import asyncio
import math
import random
import re
import threading
import time
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from mlpipe_cli.serving import featurelog
from mlpipe_cli.serving.featurelog import FeatureLogger, _raw_series
from mlpipe_cli.serving.metrics import LATENCY_BUCKETS, Metrics

SEGMENT_RE = re.compile(r"^segment-\d{8}T\d{6}-\d+-\d{6}\.parquet$")


def make_logger(log_dir: Path, **kwargs: object) -> FeatureLogger:
    return FeatureLogger(
        log_dir,
        transform_version="0001-abcdefabcdef",
        raw_columns=["age", "country", "ts"],
        raw_dtypes={"age": "Int64", "country": "String",
                    "ts": "Datetime(time_unit='us', time_zone='UTC')"},
        vec_columns=["age", "country__US"],
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def log_row(logger: FeatureLogger, i: int) -> bool:
    return logger.log(
        "/features/{entity_id}", f"[{i}]", "0001-s", i % 3 == 0,
        (i, "US" if i % 2 else None, None), [float(i), None], None if i % 2 else 0.5,
        served_at_us=1_782_864_000_000_000 + i,
    )  # fmt: skip


def read_all(log_dir: Path) -> pl.DataFrame:
    files = sorted(log_dir.iterdir())
    assert all(SEGMENT_RE.match(f.name) for f in files), [f.name for f in files]
    return pl.concat([pl.read_parquet(f) for f in files])


@pytest.fixture(params=["thread", "loop"])
def start(request: pytest.FixtureRequest) -> Generator[Callable[[FeatureLogger], None], None, None]:
    """Starts a logger with either driver of its writer: its own thread, or an event loop
    (uvloop, running in a thread of its own as the server's does in the main thread)."""
    loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread]] = []

    def start_logger(logger: FeatureLogger) -> None:
        if request.param == "thread":
            logger.start()
            return
        loop = uvloop.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        loops.append((loop, thread))
        logger.start(loop)

    yield start_logger
    for loop, thread in loops:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_full_queue_drops_and_counts_without_a_writer(tmp_path: Path) -> None:
    logger = make_logger(tmp_path, queue_rows=10)
    accepted = [log_row(logger, i) for i in range(25)]
    assert accepted == [True] * 10 + [False] * 15
    assert (logger.enqueued, logger.dropped, logger.depth) == (10, 15, 10)
    logger.close()  # never started: writes synchronously
    frame = read_all(tmp_path)
    assert frame["entity"].to_list() == [f"[{i}]" for i in range(10)]
    assert logger.written == 10
    assert not log_row(logger, 99)  # closed: counted as dropped, never lost silently
    assert logger.dropped == 16


def test_sampling_logs_the_rows_of_its_draws_and_counts_the_others(tmp_path: Path) -> None:
    logger = make_logger(tmp_path, sample_rate=0.25)
    logger._draw = random.Random(7).random  # a seeded generator: the oracle replays it
    for i in range(4000):
        if logger.keep():
            log_row(logger, i)
    logger.close()
    oracle = random.Random(7)
    expected = [f"[{i}]" for i in range(4000) if oracle.random() < 0.25]
    assert read_all(tmp_path)["entity"].to_list() == expected
    assert (logger.written, logger.sampled_out) == (len(expected), 4000 - len(expected))
    assert 800 < len(expected) < 1200  # about a quarter


def test_sample_rate_one_never_draws(tmp_path: Path) -> None:
    logger = make_logger(tmp_path)
    logger._draw = lambda: pytest.fail("drew at sample_rate 1")
    assert all(logger.keep() for _ in range(100))
    assert logger.sampled_out == 0


@pytest.mark.parametrize("rate", [0.0, -0.5, 1.5, math.nan, math.inf])
def test_a_sample_rate_outside_0_1_is_refused(tmp_path: Path, rate: float) -> None:
    with pytest.raises(ValueError, match="sample_rate must be in"):
        make_logger(tmp_path, sample_rate=rate)


def test_segment_columns_follow_interfaces_section_5(tmp_path: Path) -> None:
    logger = make_logger(tmp_path)
    for i in range(4):
        log_row(logger, i)
    logger.close()
    frame = read_all(tmp_path)
    assert frame.schema == pl.Schema({
        "served_at": pl.Datetime("us", "UTC"), "endpoint": pl.String, "entity": pl.String,
        "transform_version": pl.String, "store_version": pl.String, "cold_start": pl.Boolean,
        "raw.age": pl.Int64, "raw.country": pl.String, "raw.ts": pl.Datetime("us", "UTC"),
        "vec.age": pl.Float64, "vec.country__US": pl.Float64, "prediction": pl.Float64,
    })  # fmt: skip
    assert frame["cold_start"].to_list() == [True, False, False, True]
    assert frame["vec.country__US"].null_count() == 4  # None stays null, not NaN
    assert frame["prediction"].to_list() == [0.5, None, 0.5, None]
    assert frame["served_at"].dt.epoch("us").to_list() == [
        1_782_864_000_000_000 + i for i in range(4)
    ]


# The driver fixture is shared by the examples on purpose: each example starts its own logger.
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    total=st.integers(0, 3000),
    queue_rows=st.integers(1, 500),
    segment_rows=st.integers(1, 800),
)
def test_written_plus_dropped_is_exactly_what_was_logged(
    start: Callable[[FeatureLogger], None],
    tmp_path_factory: pytest.TempPathFactory,
    total: int,
    queue_rows: int,
    segment_rows: int,
) -> None:
    log_dir = tmp_path_factory.mktemp("log")
    logger = make_logger(
        log_dir, queue_rows=queue_rows, segment_rows=segment_rows, poll_interval=0.001
    )
    start(logger)
    producer = threading.Thread(target=lambda: [log_row(logger, i) for i in range(total)])
    producer.start()
    producer.join()
    logger.close()
    files = list(log_dir.iterdir())
    written = read_all(log_dir).height if files else 0
    assert written == logger.written
    assert logger.written + logger.dropped == total
    assert logger.failed == 0
    assert logger.depth == 0


def test_metrics_histogram_is_cumulative_with_sub_millisecond_buckets() -> None:
    metrics = Metrics()
    for seconds in (0.00005, 0.0002, 0.0002, 0.0009, 0.004, 3.0):
        metrics.observe("/features/{entity_id}", 200, seconds)
    metrics.observe("/features/{entity_id}", 503, 0.0001)
    text = metrics.render()
    assert LATENCY_BUCKETS[0] == 0.0001
    series = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line.startswith('mlpipe_serve_request_duration_seconds_bucket{endpoint="/features/{')
    }
    prefix = 'mlpipe_serve_request_duration_seconds_bucket{endpoint="/features/{entity_id}",le='

    def le(bound: str) -> float:
        return series[f'{prefix}"{bound}"}}']

    assert le("0.0001") == 2  # 50 µs and the 100 µs 503 (le is inclusive)
    assert le("0.00025") == 4
    assert le("0.001") == 5
    assert le("0.005") == 6
    assert le("2.5") == 6
    assert le("+Inf") == 7
    assert 'mlpipe_serve_requests_total{endpoint="/features/{entity_id}",code="503"} 1' in text


# -- the writer converts in slices, batches and pieces: same frame as row by row ---------------


def reference_frame(logger: FeatureLogger, rows: list[tuple]) -> pl.DataFrame:
    """The frame of ``rows`` built row by row, as the writer did before it converted in
    batches and pieces (each column one list comprehension and one Series)."""
    n = len(rows)
    columns = [
        pl.Series("served_at", [r[0] for r in rows], dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
        pl.Series("endpoint", [r[1] for r in rows], dtype=pl.String),
        pl.Series("entity", [r[2] for r in rows], dtype=pl.String),
        pl.Series("transform_version", [logger.transform_version] * n, dtype=pl.String),
        pl.Series("store_version", [r[3] for r in rows], dtype=pl.String),
        pl.Series("cold_start", [r[4] for r in rows], dtype=pl.Boolean),
    ]
    for j, col in enumerate(logger.raw_columns):
        values = [r[5][j] for r in rows]
        columns.append(_raw_series(f"raw.{col}", values, logger.raw_dtypes.get(col)))
    for j, col in enumerate(logger.vec_columns):
        values = [None if r[6][j] is None else float(r[6][j]) for r in rows]
        columns.append(pl.Series(f"vec.{col}", values, dtype=pl.Float64))
    columns.append(pl.Series("prediction", [r[7] for r in rows], dtype=pl.Float64))
    return pl.DataFrame(columns)


def mixed_logger(log_dir: Path, **kwargs: object) -> FeatureLogger:
    return FeatureLogger(
        log_dir,
        transform_version="0002-0123456789ab",
        raw_columns=["age", "country", "ts", "score", "free"],
        raw_dtypes={"age": "Int64", "country": "String", "score": "Float64",
                    "ts": "Datetime(time_unit='us', time_zone='UTC')"},  # "free": inferred
        vec_columns=["a", "b", "c"],
        **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


T0 = datetime(2026, 7, 1, tzinfo=UTC)
FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0]),
)
VECTOR_VALUE = st.one_of(FLOATS, st.none(), st.integers(-(2**62), 2**62), st.booleans())
RAW = st.tuples(
    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
    st.one_of(st.none(), st.sampled_from(["US", "DE", ""]), st.text(max_size=5)),
    st.one_of(st.none(), st.integers(0, 10**9).map(lambda s: T0 + timedelta(seconds=s))),
    st.one_of(st.none(), FLOATS, st.integers(-1000, 1000)),
    st.one_of(st.none(), st.integers(-5, 5), st.floats(-5, 5), st.sampled_from(["x", "y"])),
)
ROW = st.tuples(
    st.integers(0, 2**53),
    st.sampled_from(["/features/{entity_id}", "/predict"]),
    st.text(max_size=8),
    st.one_of(st.none(), st.just("0002-s")),
    st.booleans(),
    RAW,
    st.lists(VECTOR_VALUE, min_size=3, max_size=3),
    st.one_of(st.none(), FLOATS),
)


@settings(max_examples=60, deadline=None)
@given(rows=st.lists(ROW, max_size=120), first_piece=st.integers(1, 40))
def test_frame_in_pieces_equals_the_row_by_row_frame(rows: list[tuple], first_piece: int) -> None:
    # Small pieces: every column is converted in several Polars calls and combined; inf, NaN,
    # -0.0, None, ints and bools in vectors, huge ints and datetimes in raw values survive.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(featurelog, "_FIRST_PIECE", first_piece)
        mp.setattr(featurelog, "_BATCH_ROWS", max(first_piece, 50))
        logger = mixed_logger(Path("unused"))
        frame = logger.frame(rows)
    assert_frame_equal(frame, reference_frame(logger, rows), check_exact=True)


def test_inferred_raw_column_pieces_that_disagree_are_converted_in_one_call() -> None:
    logger = mixed_logger(Path("unused"))
    logger._pieces = [2] * len(logger._pieces)  # ints in one piece, a float and a str later
    free = [1, 2, 3, 2.5, None, "x", 4]
    rows = [
        (i, "/e", f"[{i}]", None, False, (i, "US", None, 0.5, v), [0.0, 1.0, 2.0], 0.1)
        for i, v in enumerate(free)
    ]
    frame = logger.frame(rows)
    assert_frame_equal(frame, reference_frame(logger, rows), check_exact=True)
    assert frame["raw.free"].to_list() == ["1", "2", "3", "2.5", None, "x", "4"]


def test_next_piece_fits_the_measured_cost_of_a_call() -> None:
    next_piece, overhead = featurelog._next_piece, featurelog._CALL_OVERHEAD
    # 3 µs a value (a timezone-aware datetime): about _CALL_SECONDS worth per call.
    assert next_piece(128, 128, overhead + 128 * 3e-6) == int(featurelog._CALL_SECONDS / 3e-6)
    assert next_piece(100, 100, 0.0) == 200  # cheap: grows, at most doubling
    assert next_piece(4096, 4096, 0.0) == featurelog._BATCH_ROWS
    assert next_piece(4096, 4096, 0.004) == 2048  # one slow call (a GC in it): halves at most
    assert next_piece(16, 16, overhead) == 32  # small and fast: mostly overhead, grows
    assert next_piece(4096, 5, 2 * overhead) == 4096  # a column's short tail: no change
    assert next_piece(8, 8, 1.0) == 8  # never below 8
    assert next_piece(128, 0, 1.0) == 128  # an empty column (a slow first call): no change


def test_writer_loses_no_row_across_slice_batch_and_segment_boundaries(
    start: Callable[[FeatureLogger], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(featurelog, "_SLICE_ROWS", 7)
    monkeypatch.setattr(featurelog, "_BATCH_ROWS", 19)
    monkeypatch.setattr(featurelog, "_FIRST_PIECE", 3)
    logger = mixed_logger(tmp_path, segment_rows=50, poll_interval=0.001)
    rows = [
        (
            1_782_864_000_000_000 + i, "/features/{entity_id}", f"[{i}]", "0002-s", i % 4 == 0,
            (i * 7, "DE" if i % 3 else None, T0 + timedelta(seconds=i), i / 3, i % 5),
            [math.inf if i % 11 == 0 else i / 2, None if i % 13 == 0 else -0.0,
             math.nan if i % 17 == 0 else float(i)],
            None if i % 2 else i / 10,
        )
        for i in range(1000)
    ]  # fmt: skip
    start(logger)
    for burst in range(10):  # the writer takes each burst before the next: several segments
        for row in rows[burst * 100 : burst * 100 + 100]:
            assert logger.log(*row[1:], served_at_us=row[0])
        deadline = time.monotonic() + 10
        while logger.depth and time.monotonic() < deadline:
            time.sleep(0.001)
    logger.close()
    assert (logger.enqueued, logger.written, logger.failed, logger.dropped) == (1000, 1000, 0, 0)
    assert logger.depth == 0
    assert logger.segments == len(list(tmp_path.iterdir())) >= 2
    assert_frame_equal(read_all(tmp_path), reference_frame(logger, rows), check_exact=True)


def test_malformed_rows_and_unconvertible_values_are_counted_exactly(
    start: Callable[[FeatureLogger], None], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(featurelog, "_RETRY_ROWS", 4)
    logger = make_logger(tmp_path, poll_interval=0.001)
    start(logger)
    for i in range(40):
        log_row(logger, i)
    logger.log("/e", "[short raw]", None, False, (1, "US"), [1.0, 2.0], None)
    logger.log("/e", "[wide vector]", None, False, (1, "US", None), [1.0, 2.0, 3.0], None)
    for i in range(40, 60):
        log_row(logger, i)
    logger.log("/e", "[bad prediction]", None, False, (1, "US", None), [1.0, 2.0], "high")
    for i in range(60, 80):
        log_row(logger, i)
    logger.close()
    # The malformed rows alone are dropped; the unconvertible value (the 61st row of the
    # batch) takes its group of 4 with it: rows 60-63.
    assert logger.enqueued == 83
    assert logger.failed == 2 + 4
    assert logger.written == 83 - 6
    assert logger.last_error is not None
    entities = read_all(tmp_path)["entity"].to_list()
    assert len(entities) == logger.written
    assert "[short raw]" not in entities
    assert "[bad prediction]" not in entities
    assert entities == [f"[{i}]" for i in [*range(60), *range(63, 80)]]


def test_close_writes_every_queued_row_even_before_the_first_poll(
    start: Callable[[FeatureLogger], None], tmp_path: Path
) -> None:
    logger = make_logger(tmp_path, poll_interval=30.0, segment_rows=1_000_000)
    start(logger)
    for i in range(5000):
        log_row(logger, i)
    logger.close()  # SIGTERM path: wakes the writer, which drains the whole queue
    frame = read_all(tmp_path)
    assert frame["entity"].to_list() == [f"[{i}]" for i in range(5000)]
    assert (logger.written, logger.segments, logger.depth) == (5000, 1, 0)


def test_a_segment_is_written_once_its_oldest_row_is_flush_interval_old(
    start: Callable[[FeatureLogger], None], tmp_path: Path
) -> None:
    logger = make_logger(tmp_path, poll_interval=0.005, flush_interval=0.05)
    start(logger)
    for i in range(10):
        log_row(logger, i)
    deadline = time.monotonic() + 10
    while logger.segments == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (logger.segments, logger.written) == (1, 10)  # before close, by age
    logger.close()
    assert logger.segments == 1


def test_write_and_writer_errors_are_counted_and_the_writer_keeps_going(
    start: Callable[[FeatureLogger], None], tmp_path: Path
) -> None:
    logger = make_logger(tmp_path / "log", poll_interval=0.001, segment_rows=10)
    start(logger)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    real_log_dir = logger.log_dir
    logger.log_dir = blocked  # the segment cannot be created: its rows are failed
    real_convert = logger._convert_into
    calls = {"n": 0}

    def convert_failing_once(*args: object) -> Generator[None, None, int]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("a bug in the writer")
        return (yield from real_convert(*args))  # type: ignore[arg-type]

    logger._convert_into = convert_failing_once  # type: ignore[method-assign]

    def burst(start: int) -> None:
        for i in range(start, start + 10):
            log_row(logger, i)
        deadline = time.monotonic() + 10
        while logger.written + logger.failed < start + 10 and time.monotonic() < deadline:
            time.sleep(0.001)

    burst(0)  # write fails
    assert (logger.written, logger.failed, logger.segments) == (0, 10, 0)
    assert "a-file" in (logger.last_error or "")
    logger.log_dir = real_log_dir
    burst(10)  # the writer raises: counted, the thread survives
    assert (logger.written, logger.failed) == (0, 20)
    assert "a bug in the writer" in (logger.last_error or "")
    burst(20)
    logger.close()
    assert (logger.written, logger.failed, logger.segments, logger.depth) == (10, 20, 1, 0)
    assert read_all(real_log_dir)["entity"].to_list() == [f"[{i}]" for i in range(20, 30)]


def test_rows_that_can_never_be_framed_are_counted_and_start_still_works(
    start: Callable[[FeatureLogger], None], tmp_path: Path
) -> None:
    # Two raw columns with one name: no frame can be built (duplicate column "raw.a").
    logger = FeatureLogger(
        tmp_path, transform_version="t", raw_columns=["a", "a"], vec_columns=["x"],
        poll_interval=0.001,
    )  # fmt: skip
    start(logger)  # warms Polars up with a blank row; that failure is not raised
    for i in range(10):
        logger.log("/e", f"[{i}]", None, False, (i, i), [1.0], None)
    logger.close()
    assert (logger.enqueued, logger.written, logger.failed, logger.segments) == (10, 0, 10, 0)
    assert "raw.a" in (logger.last_error or "")


def test_on_a_loop_the_writer_works_on_the_loop_thread_and_only_writes_elsewhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop = uvloop.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    logger = make_logger(tmp_path, poll_interval=0.001, segment_rows=50)
    takers: set[str] = set()
    writers: set[str] = set()
    real_take, real_write = logger._take, logger._write_parts

    def take(*args: Any) -> None:
        takers.add(threading.current_thread().name)
        real_take(*args)

    def write(*args: Any) -> None:
        writers.add(threading.current_thread().name)
        real_write(*args)

    monkeypatch.setattr(logger, "_take", take)
    monkeypatch.setattr(logger, "_write_parts", write)
    try:
        logger.start(loop)
        assert "mlpipe-feature-log" not in {t.name for t in threading.enumerate()}
        for burst in range(4):  # each burst reaches segment_rows: a segment each
            for i in range(burst * 50, burst * 50 + 50):
                log_row(logger, i)
            deadline = time.monotonic() + 10
            while logger.written < burst * 50 + 50 and time.monotonic() < deadline:
                time.sleep(0.005)
        assert (logger.written, logger.segments) == (200, 4)
        assert takers == {loop_thread.name}
        (writer,) = writers
        assert writer.startswith("mlpipe-feature-log-sink")
        logger.close()
        assert_frame_equal(read_all(tmp_path)["entity"].to_frame(),
                           pl.Series("entity", [f"[{i}]" for i in range(200)]).to_frame())  # fmt: skip
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()


class _ConstantShadow:
    """The scorer protocol featurelog uses (column_names, reset, columns), scoring nothing:
    enough to see which driver a logger with a shadow attached gets."""

    transform_failures = 0
    last_error = None

    def column_names(self) -> list[str]:
        return ["shadow.prediction", "shadow.version"]

    def reset(self) -> None:
        pass

    def columns(self, raws: list[Any], served: list[Any]) -> list[list[Any]]:
        return [[0.5] * len(raws), ["v2"] * len(raws)]


def test_with_a_shadow_attached_the_writer_keeps_its_thread_even_on_a_loop(
    tmp_path: Path,
) -> None:
    loop = uvloop.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    logger = make_logger(tmp_path, poll_interval=0.001, shadow=_ConstantShadow())
    try:
        logger.start(loop)
        assert "mlpipe-feature-log" in {t.name for t in threading.enumerate()}
        for i in range(10):
            log_row(logger, i)
        logger.close()
        frame = read_all(tmp_path)
        assert frame["shadow.version"].to_list() == ["v2"] * 10
        assert logger.written == 10
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()


def test_close_writes_the_rows_of_a_poll_the_loop_left_half_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown can come between two turns of the loop driver: the rows a suspended poll
    already took (not yet due for a segment) must still be written by close()."""
    monkeypatch.setattr(featurelog, "_SLICE_ROWS", 7)
    loop = uvloop.new_event_loop()  # never run: the test plays the loop's turns itself
    logger = make_logger(tmp_path, poll_interval=30.0, flush_interval=3600.0)
    try:
        logger.start(loop)
        for i in range(50):
            log_row(logger, i)
        logger._steps = logger._poll(stopping=False)
        next(logger._steps)  # one step of a poll: 7 rows taken, then the turn ended
        assert logger.depth == 43
        logger.close()
        assert (logger.written, logger.failed, logger.depth) == (50, 0, 0)
        assert read_all(tmp_path)["entity"].to_list() == [f"[{i}]" for i in range(50)]
    finally:
        loop.close()


def test_on_a_loop_a_segment_the_sink_no_longer_takes_is_written_on_the_loop(
    tmp_path: Path,
) -> None:
    """At interpreter exit the sink's executor refuses new work (RuntimeError from submit):
    the segment due then is written on the loop instead of being lost uncounted."""
    loop = uvloop.new_event_loop()
    loop_thread = threading.Thread(target=loop.run_forever, daemon=True)
    loop_thread.start()
    logger = make_logger(tmp_path, poll_interval=0.001, segment_rows=50)
    try:
        logger.start(loop)
        assert logger._sink is not None
        logger._sink.shutdown(wait=True)  # what interpreter exit does to every executor
        for i in range(120):
            log_row(logger, i)
        deadline = time.monotonic() + 10
        while logger.written < 50 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert logger.written >= 50  # written while serving, not only by close()
        assert logger.failed == 0
        logger.close()
        assert (logger.written, logger.failed, logger.dropped) == (120, 0, 0)
        assert sorted(read_all(tmp_path)["entity"].to_list()) == sorted(
            f"[{i}]" for i in range(120)
        )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        loop_thread.join(10)
        loop.close()
