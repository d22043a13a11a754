"""Small inputs take numpy-free paths (#19 start-up cost); they must give the same bits.

``features.engine._skip_numpy`` picks Polars forms of the running sums and of the spine
re-ordering for small stages in a process without numpy; ``online.materialize`` hashes a
small entity list with the ``array`` module. Each is compared here with the numpy path on
messy data (string keys of several lengths and scripts, composite keys, nulls, NaN, ±inf,
several entities), and the commands are checked, in fresh interpreters, not to import numpy
or pyarrow on a tiny workspace (in the style of tests/test_cli_startup.py).
"""

from __future__ import annotations

import math
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from mlpipe_cli.config.models import PipelineConfig
from mlpipe_cli.features import compute_features, engine
from mlpipe_cli.online import materialize as online_materialize
from tests.test_cli_startup import _modules_after

T0 = datetime(2026, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
TS = pl.Datetime("us", "UTC")
REPO = Path(__file__).resolve().parent.parent


def _messy_orders(path: Path) -> None:
    shops = ["a", "bb", "Zürich-Ω", "東京店", "s" * 17]
    rows = []
    for i in range(900):
        # customer 5 gets the non-finite values; the others finite ones whose sums round
        amount: float | None = (
            [math.nan, math.inf, -math.inf, None, 1e300][i % 5] if i % 7 == 5 else i * 0.37 - 9.1
        )
        rows.append(
            {
                "shop": shops[i % 5],
                "customer": i % 7 if i % 13 else None,
                "ts": T0 + (i * 37 % 400) * H,
                "amount": amount,
                "qty": i % 11 - 3,
            }
        )
    schema = {"shop": pl.String, "customer": pl.Int64, "ts": TS, "amount": pl.Float64}
    pl.DataFrame(rows, schema={**schema, "qty": pl.Int32}, orient="row").write_parquet(path)


def _config(path: Path) -> PipelineConfig:
    return PipelineConfig.model_validate(
        {
            "pipeline": "t",
            "entity_keys": ["shop", "customer"],
            "sources": {"orders": {"path": str(path), "timestamp": "ts"}},
            "features": [
                {"name": "n", "source": "orders", "agg": "count", "default": 0},
                {"name": "s", "source": "orders", "agg": "sum", "column": "amount"},
                {"name": "q7", "source": "orders", "agg": "sum", "column": "qty", "window": "7d"},
                {"name": "m", "source": "orders", "agg": "mean", "column": "amount"},
                {"name": "sd", "source": "orders", "agg": "std", "column": "amount"},
                {"name": "gap", "source": "orders", "kind": "mean_interval", "unit": "h"},
            ],
        }
    )


def _spine() -> pl.DataFrame:
    shops = ["a", "bb", "Zürich-Ω", "東京店", "s" * 17, "unknown"]
    return pl.DataFrame(
        {
            "shop": [shops[i % 6] for i in range(400)],
            # (null customers only in the orders: a null spine key is refused, exit 2)
            "customer": [i % 8 for i in range(400)],
            "at": [T0 + (i * 53 % 500) * H for i in range(400)],
        },
        schema={"shop": pl.String, "customer": pl.Int64, "at": TS},
    )


@pytest.fixture
def orders(tmp_path: Path) -> Path:
    path = tmp_path / "orders.parquet"
    _messy_orders(path)
    return path


def test_features_are_the_same_bits_on_either_path(
    orders: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _config(orders)
    results = {}
    for skip in (True, False):
        monkeypatch.setattr(engine, "_skip_numpy", lambda rows, skip=skip: skip)
        results[skip] = compute_features(
            config, _spine(), entity_keys=["shop", "customer"], timestamp="at"
        )
    small, numpy_path = results[True], results[False]
    assert small.schema == numpy_path.schema
    assert small.equals(numpy_path, null_equal=True)
    assert (small.hash_rows(seed=0) == numpy_path.hash_rows(seed=0)).all()
    assert small["n"].sum() > 0  # the features did see orders


@pytest.mark.parametrize("dtype", [pl.Float64, pl.Float32, pl.Int64, pl.Int32, pl.Int8])
def test_running_sums_same_bits_on_either_path(
    dtype: pl.DataType, monkeypatch: pytest.MonkeyPatch
) -> None:
    lengths = [1, 2, engine._SCAN_STEPS, engine._SCAN_STEPS + 1, 130, 1, 3]
    entity = [e for e, n in enumerate(lengths) for _ in range(n)]
    raw = [
        [1e16, 1.0, -1e16, 0.1, math.nan, math.inf, -math.inf, -0.0][i % 8]
        if dtype.is_float()
        # small integers: every dtype holds them, and Int8 sums widen to Int64
        else (i * 7919) % 201 - 100
        for i in range(len(entity))
    ]
    stage = pl.DataFrame({"e": entity, "v": pl.Series(raw).cast(dtype)}).with_columns(
        (pl.col("e") != pl.col("e").shift()).fill_null(True).alias("__start"),
        pl.col("e").alias(engine._GID),
    )
    out = {}
    for skip in (True, False):
        monkeypatch.setattr(engine, "_skip_numpy", lambda rows, skip=skip: skip)
        out[skip] = engine._run_cumsums(stage, ["v"]).get_column("v")
    assert out[True].dtype == out[False].dtype
    assert (out[True].to_frame().hash_rows() == out[False].to_frame().hash_rows()).all()


def test_spine_order_same_rows_and_same_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    n = 50
    order = [(i * 17) % n for i in range(n)]  # a permutation of 0..n-1
    frame = pl.DataFrame(
        {engine._ROW: pl.Series(order, dtype=pl.Int64), "x": [f"r{r}" for r in order]}
    )
    bad = frame.with_columns(pl.col(engine._ROW).replace(3, 4))  # row 4 twice, row 3 never
    for skip in (True, False):
        monkeypatch.setattr(engine, "_skip_numpy", lambda rows, skip=skip: skip)
        assert engine._spine_order([frame], n)["x"].to_list() == [f"r{i}" for i in range(n)]
        with pytest.raises(engine.PointInTimeInvariantError, match="do not map 1:1"):
            engine._spine_order([bad], n)
        with pytest.raises(engine.PointInTimeInvariantError):
            engine._spine_order([frame.head(n - 1)], n)


def test_entities_hash_same_digest_without_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = pl.DataFrame(
        {"shop": ["a", "Zürich-Ω", None, "東京店"], "customer": [1, None, 3, 2**62]}
    )
    other = pl.DataFrame({"user_id": [5, 6, 7]})
    with_numpy = online_materialize._entities_hash(keys, other)
    # the same process without numpy in sys.modules takes the array path (which imports
    # nothing, so numpy is not loaded twice); monkeypatch puts the module back
    monkeypatch.delitem(sys.modules, "numpy")
    without = online_materialize._entities_hash(keys, other)
    assert "numpy" not in sys.modules
    monkeypatch.undo()
    assert without == with_numpy


def _tiny_project(tmp_path: Path) -> Path:
    """The example config over 1,000 sample orders (the benchmark's tiny workspace)."""
    from mlpipe_cli.sample_data import generate

    data = tmp_path / "sample"
    generate(data, rows=1000, seed=7)
    text = (REPO / "configs" / "example.yaml").read_text()
    config = yaml.safe_load(text.replace("../data/sample/", f"{data}/"))
    config["artifact_dir"] = str(tmp_path / "artifacts")
    path = tmp_path / "mlpipe.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def test_small_runs_import_neither_numpy_nor_pyarrow(tmp_path: Path) -> None:
    """training-set, transform and materialize need neither on a small input; fit needs
    numpy (its statistics) and psi-report numpy (its counts), neither pyarrow."""
    config = ["-c", str(_tiny_project(tmp_path))]
    ts = str(tmp_path / "ts.parquet")
    runs: dict[str, tuple[list[str], set[str]]] = {
        "training-set": (["training-set", *config, "--out", ts, "-q"], {"numpy", "pyarrow"}),
        "fit": (["fit", *config, "--data", ts, "-q"], {"pyarrow"}),
        "transform": (
            ["transform", *config, "--data", ts, "--out", str(tmp_path / "f.parquet"), "-q"],
            {"numpy", "pyarrow"},
        ),
        "materialize": (
            ["materialize", *config, "--as-of", "2026-07-01T00:00:00Z", "-q"],
            {"numpy", "pyarrow"},
        ),
        "psi-report": (["psi-report", *config, "--current", ts, "-q"], {"pyarrow"}),
    }
    results = [_modules_after(args, tmp_path) for args, _ in runs.values()]
    loaded: dict[str, Any] = {}
    for (name, (_, absent)), (status, modules) in zip(runs.items(), results, strict=True):
        assert status in ((0, 1) if name == "psi-report" else (0,)), name
        assert "polars" in modules, name
        loaded[name] = sorted(absent & set(modules))
    assert loaded == {name: [] for name in runs}


def test_running_sums_of_negative_zeros_have_the_same_bits_on_either_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Polars' running sum starts from +0.0 (0.0 + -0.0 is +0.0); the numpy path used to keep
    a run's first -0.0 as it was. The bits are compared, not the values (hash_rows and ==
    treat -0.0 and +0.0 alike)."""
    import numpy as np

    runs = [[-0.0], [-0.0, -0.0], [-0.0] * (engine._SCAN_STEPS + 2), [1.0, -1.0, -0.0], [-0.0, 2.0]]
    entity = [e for e, run in enumerate(runs) for _ in run]
    stage = pl.DataFrame(
        {"e": entity, "v": pl.Series([v for run in runs for v in run], dtype=pl.Float64)}
    ).with_columns(
        (pl.col("e") != pl.col("e").shift()).fill_null(True).alias("__start"),
        pl.col("e").alias(engine._GID),
    )
    want = stage.select(pl.col("v").cum_sum().over("e")).get_column("v").to_numpy()
    for skip in (True, False):
        monkeypatch.setattr(engine, "_skip_numpy", lambda rows, skip=skip: skip)
        got = engine._run_cumsums(stage, ["v"]).get_column("v").to_numpy()
        assert got.view(np.uint64).tolist() == want.view(np.uint64).tolist(), skip
