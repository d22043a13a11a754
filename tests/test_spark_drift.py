"""`psi-report --engine spark` gives the Polars engine's report (engines/spark/drift.py).

Oracle: the Polars engine's report on the same files (the whole JSON document less its wall
time). The Spark pass merges per-task accumulators: bin counts and null/NaN counts are
integer sums, the KS statistic comes from the same exact counts, and mean/std from the same
per-block sums, so the documents must be equal, not close. Blocks are shrunk to 16 rows so a
few hundred rows make many blocks spread over several tasks.
"""

from __future__ import annotations

import itertools
import math
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    import mlpipe_cli.drift.compare as compare

    monkeypatch.setattr(compare, "SORT_BLOCK", 16)
    return 16


def _write(root: Path, reference: dict[str, list[Any]], current: dict[str, list[Any]],
           split: int) -> tuple[Path, Path, Path]:  # fmt: skip
    """The reference profile, the current batch as two files (a directory), a config."""
    import yaml

    from mlpipe_cli.drift.profile import build_profile, write_profile

    root.mkdir(parents=True, exist_ok=True)
    schema = {"amount": pl.Float64, "count": pl.Int32, "channel": pl.String}
    ref = pl.DataFrame(reference, schema=schema)
    cur = pl.DataFrame(current, schema=schema)
    profile = root / "profile.json"
    write_profile(build_profile(ref, bins=10), profile)
    batch = root / "current"
    batch.mkdir()
    cur.slice(0, split).write_parquet(batch / "part-0.parquet")
    cur.slice(split).write_parquet(batch / "part-1.parquet")
    config = root / "mlpipe.yaml"
    config.write_text(
        yaml.safe_dump(
            {"pipeline": "drift", "artifact_dir": str(root / "a"), "spark": {"partitions": 3}}
        )
    )
    return profile, batch, config


def _report(config: Path, profile: Path, batch: Path, engine: str) -> dict[str, Any]:
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.psi_report import psi_report

    result = psi_report(Project(config), profile=profile, current=batch, engine=engine)
    doc = result.to_dict()
    doc.pop("seconds")
    doc.pop("generated_at")
    return doc


_VALUES = st.one_of(
    st.none(),
    st.sampled_from([0.0, -0.0, 1.5, math.nan, math.inf, -math.inf]),  # atoms, NaN, ±inf
    st.floats(-1e3, 1e3, allow_nan=False),
)
_CHANNELS = st.sampled_from(["web", "app", "Ünïcode", "", None, "new-1", "new-22"])


@st.composite
def _batches(draw: st.DrawFn) -> dict[str, Any]:
    def rows(n: int) -> dict[str, list[Any]]:
        return {
            "amount": [draw(_VALUES) for _ in range(n)],
            "count": [draw(st.one_of(st.none(), st.integers(0, 5))) for _ in range(n)],
            "channel": [draw(_CHANNELS) for _ in range(n)],
        }

    n_cur = draw(st.integers(1, 150))
    return {
        "reference": rows(draw(st.integers(20, 150))),
        "current": rows(n_cur),
        "split": draw(st.integers(0, n_cur)),
    }


def _drifted_columns(
    *, seed: int, n: int, mean: float, sd: float, nan_every: int, null_every: int
) -> tuple[dict[str, list[Any]], dict[str, list[Any]]]:
    """A reference batch and a drifted current one: the amount shifted to N(mean, sd) with
    NaN every ``nan_every`` rows and null every ``null_every`` rows (nulls win), counts over
    a wider range, and channels the reference never saw (one non-ASCII)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    reference = {
        "amount": rng.normal(10, 2, n).tolist(),
        "count": rng.integers(0, 4, n).tolist(),
        "channel": rng.choice(["web", "app", "store"], n).tolist(),
    }
    amounts = rng.normal(mean, sd, n)
    amounts[::nan_every] = np.nan
    current = {
        "amount": [None if i % null_every == 0 else float(v) for i, v in enumerate(amounts)],
        "count": rng.integers(0, 6, n).tolist(),
        "channel": rng.choice(["web", "app", "kiosk", "Ünïcode"], n).tolist(),
    }
    return reference, current


def test_sample_sized_report_equals_polars(
    spark: object, small_blocks: int, tmp_path: Path
) -> None:
    reference, current = _drifted_columns(
        seed=3, n=400, mean=11, sd=2.5, nan_every=17, null_every=23
    )
    profile, batch, config = _write(tmp_path, reference, current, split=137)
    on_polars = _report(config, profile, batch, "polars")
    on_spark = _report(config, profile, batch, "spark")
    assert on_spark == on_polars
    amount = next(f for f in on_spark["features"] if f["column"] == "amount")
    assert amount["psi"] > 0
    assert amount["ks_statistic"] is not None


@settings(
    max_examples=4,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=_batches())
def test_generated_report_equals_polars(
    spark: object, small_blocks: int, tmp_path_factory: pytest.TempPathFactory, data: dict
) -> None:
    root = tmp_path_factory.mktemp("drift")
    profile, batch, config = _write(root, data["reference"], data["current"], data["split"])
    assert _report(config, profile, batch, "spark") == _report(config, profile, batch, "polars")


# -- psi-report --serving-log ------------------------------------------------------------------

_WINDOW = ("2026-07-05T00:00:00Z", "2026-07-06T00:00:00Z")


def _write_log(root: Path, rows: dict[str, list[Any]], cuts: list[int], row_groups: list[int],
               seed: int) -> Path:  # fmt: skip
    """Segments as `serve` writes them, deliberately unlike each other: served_at spread over
    three days (a third inside the window), ``raw.count`` Int32 in some segments and Int64 in
    others, ``raw.channel`` missing from the second segment, row groups of different sizes."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = len(rows["amount"])
    day = datetime(2026, 7, 4, tzinfo=UTC)
    served = [day + timedelta(minutes=int(m)) for m in rng.integers(0, 3 * 24 * 60, n)]
    log = pl.DataFrame(
        {
            "served_at": pl.Series(served, dtype=pl.Datetime("us", "UTC")),
            "raw.amount": pl.Series(rows["amount"], dtype=pl.Float64),
            "raw.count": pl.Series(rows["count"], dtype=pl.Int64),
            "raw.channel": pl.Series(rows["channel"], dtype=pl.String),
        }
    )
    out = root / "log"
    out.mkdir(parents=True)
    bounds = sorted({0, n, *(c for c in cuts if c <= n)})
    for i, (a, b) in enumerate(itertools.pairwise(bounds)):
        segment = log.slice(a, b - a)
        if i % 2:
            segment = segment.with_columns(pl.col("raw.count").cast(pl.Int32))
        if i == 1:
            segment = segment.drop("raw.channel")
        segment.write_parquet(
            out / f"segment-20260704T000000-1-{i:03d}.parquet",
            row_group_size=row_groups[i % len(row_groups)],
        )
    return out


def _log_report(config: Path, profile: Path, log: Path, engine: str) -> dict[str, Any]:
    from mlpipe_cli.ops.project import Project
    from mlpipe_cli.ops.psi_report import psi_report

    since, until = _WINDOW
    result = psi_report(
        Project(config), profile=profile, serving_log=log, since=since, until=until, engine=engine
    )
    doc = result.to_dict()
    doc.pop("seconds")
    doc.pop("generated_at")
    return doc


@pytest.fixture
def small_parts(monkeypatch: pytest.MonkeyPatch) -> int:
    """Parts of at most 24 rows (whole row groups, or slices of a bigger one): many parts,
    and blocks of 16 rows that straddle them."""
    import mlpipe_cli.drift.report as report

    monkeypatch.setattr(report, "PART_ROWS", 24)
    return 24


def test_serving_log_report_equals_polars(
    spark: object, small_blocks: int, small_parts: int, tmp_path: Path
) -> None:
    reference, current = _drifted_columns(
        seed=5, n=600, mean=10.5, sd=2, nan_every=19, null_every=29
    )
    profile, _, config = _write(tmp_path, reference, current, split=0)
    log = _write_log(tmp_path, current, [150, 151, 420], [7, 50, 1000], seed=1)
    on_polars = _log_report(config, profile, log, "polars")
    on_spark = _log_report(config, profile, log, "spark")
    assert on_spark == on_polars
    amount = next(f for f in on_spark["features"] if f["column"] == "amount")
    assert 100 < amount["rows"] < 400  # the window holds about a third of the rows
    assert amount["ks_statistic"] is not None
    assert amount["mean_cur"] is not None


@settings(
    max_examples=3,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    data=_batches(),
    cuts=st.lists(st.integers(0, 150), max_size=3),
    row_groups=st.lists(st.integers(1, 40), min_size=1, max_size=3),
)
def test_generated_serving_log_report_equals_polars(
    spark: object,
    small_blocks: int,
    small_parts: int,
    tmp_path_factory: pytest.TempPathFactory,
    data: dict,
    cuts: list[int],
    row_groups: list[int],
) -> None:
    from mlpipe_cli.errors import MlpipeError

    root = tmp_path_factory.mktemp("log")
    current = data["current"]
    profile, _, config = _write(root, data["reference"], current, split=0)
    log = _write_log(root, current, cuts, row_groups, seed=len(current["amount"]))
    try:
        expected = _log_report(config, profile, log, "polars")
    except MlpipeError as exc:  # no row in the window, say: the same error on Spark
        with pytest.raises(type(exc), match=re.escape(exc.message)):
            _log_report(config, profile, log, "spark")
        return
    assert _log_report(config, profile, log, "spark") == expected
