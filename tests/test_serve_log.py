"""The feature log on its own: bounded queue, exact drop counts, segment format (§5)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mlpipe_cli.serving.featurelog import FeatureLogger
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
    assert frame["served_at"].dt.epoch("us").to_list() == [1_782_864_000_000_000 + i for i in range(4)]


@settings(max_examples=15, deadline=None)
@given(
    total=st.integers(0, 3000),
    queue_rows=st.integers(1, 500),
    segment_rows=st.integers(1, 800),
)
def test_written_plus_dropped_is_exactly_what_was_logged(
    tmp_path_factory: pytest.TempPathFactory, total: int, queue_rows: int, segment_rows: int
) -> None:
    log_dir = tmp_path_factory.mktemp("log")
    logger = make_logger(
        log_dir, queue_rows=queue_rows, segment_rows=segment_rows, poll_interval=0.001
    )
    logger.start()
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
        if line.startswith("mlpipe_serve_request_duration_seconds_bucket{endpoint=\"/features/{")
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
