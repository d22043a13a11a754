"""The one table of transformer cases every transform test draws from.

``CASES`` names a configuration of every step type (and their options); each case becomes its
own input column, fitted on the values of one training column. tests/test_transform_conformance.py
checks that the table covers every step type in the registry. The conformance suite (batch ==
online == the oracle, determinism, state round trip) and the generated-function suite
(tests/test_transform_online_fast.py) both run every case here.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

from mlpipe_cli.config.transforms import TransformConfig
from mlpipe_cli.transforms import FitOutcome, FittedTransform, fit_frame

N = 400
KNOWN = ["US", "DE", "GB", "FR", "IN", "rare1", "rare2"]
START = datetime(2025, 1, 1, tzinfo=UTC)
# zoned columns: a half-hour offset without DST, and two zones with DST (fitting checks the
# golden rows through both paths, and the training rows cross DST changes; the batch side of
# DST is tests/test_transform_temporal_dst.py)
KOLKATA = ZoneInfo("Asia/Kolkata")
BERLIN = ZoneInfo("Europe/Berlin")
SYDNEY = ZoneInfo("Australia/Sydney")

# case -> (training column it is fitted on, steps); each case becomes its own input column
CASES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "fill_null_constant": ("num", [{"type": "fill_null", "strategy": "constant", "value": -1}]),
    "fill_null_mean": ("num", [{"type": "fill_null", "strategy": "mean"}]),
    "fill_null_median": ("num", [{"type": "fill_null", "strategy": "median"}]),
    "standard": ("num", [{"type": "standard", "on_null": "keep"}]),
    "standard_no_mean": ("cnt", [{"type": "standard", "with_mean": False}]),
    "standard_twice": ("num", [{"type": "standard"}, {"type": "standard", "on_null": "keep"}]),
    "minmax": ("num", [{"type": "minmax", "on_null": "keep", "on_nan": "null"}]),
    "minmax_clip": ("neg", [{"type": "minmax", "feature_range": [-1, 1], "clip": True}]),
    "robust": ("pos", [{"type": "robust", "quantile_range": [10, 90]}]),
    "clip_fixed": ("neg", [{"type": "clip", "min": -2, "max": 2}]),
    "clip_min_only": ("neg", [{"type": "clip", "min": 0}]),
    "clip_max_only": ("neg", [{"type": "clip", "max": 1.5}]),
    "clip_quantiles": ("pos", [{"type": "clip", "quantiles": [0.05, 0.95]}]),
    "log1p": ("pos", [{"type": "log1p"}]),
    "log1p_shift": ("neg", [{"type": "log1p", "on_invalid": "shift"}]),
    "log1p_standard": ("cnt", [{"type": "log1p"}, {"type": "standard"}]),
    "chain": ("num", [
        {"type": "clip", "quantiles": [0.01, 0.99]},
        {"type": "fill_null", "strategy": "median"},
        {"type": "log1p", "on_invalid": "shift"},
        {"type": "standard"},
    ]),
    "chain_fill_last": ("neg", [
        {"type": "log1p", "on_invalid": "shift"},
        {"type": "minmax", "clip": True},
        {"type": "fill_null", "strategy": "mean"},
    ]),
    "onehot": ("cat", [{"type": "onehot"}]),
    "onehot_rare": ("cat", [{"type": "onehot", "min_frequency": 0.02, "max_categories": 4}]),
    "onehot_int": ("cnt", [{"type": "onehot", "min_frequency": 15}]),
    "onehot_bool": ("flag", [{"type": "onehot"}]),
    "ordinal": ("cat", [{"type": "ordinal"}]),
    "ordinal_frequency": ("cat", [{"type": "ordinal", "order": "frequency", "unknown_value": 99}]),
    "frequency": ("cat", [{"type": "frequency"}]),
    "target_auto": ("cat", [{"type": "target"}]),
    "target_smooth": ("cat", [{"type": "target", "smooth": 10.0, "cv": 3}]),
    "temporal_utc": ("ts", [{"type": "temporal", "features": [
        "hour", "dow", "month", "is_weekend", "hour_sin", "hour_cos", "dow_sin", "dow_cos",
        "month_sin", "month_cos", "days_since"], "reference": "ref"}]),
    "temporal_zoned": ("ts_zoned", [{"type": "temporal", "features": [
        "days_since", "month_cos", "hour", "is_weekend"], "reference": "ref_zoned"}]),
    "temporal_dst": ("ts_berlin", [{"type": "temporal", "features": [
        "hour", "dow", "month", "is_weekend", "hour_sin", "dow_cos", "days_since"],
        "reference": "ref_berlin"}]),
    "temporal_dst_naive_ref": ("ts_sydney", [{"type": "temporal", "features": [
        "days_since", "hour_cos", "dow"], "reference": "ref_naive"}]),
    "temporal_dst_days_only": ("ts_sydney", [{"type": "temporal", "features": ["days_since"],
                                              "reference": "ref_berlin"}]),
    "temporal_naive": ("ts_naive", [{"type": "temporal", "features": ["dow_sin", "hour"]}]),
    # calendar parts on another zone's wall clock (`timezone`)
    "temporal_local_from_utc": ("ts", [{"type": "temporal", "timezone": "Europe/Berlin",
        "features": ["hour", "dow", "month", "is_weekend", "hour_sin", "dow_cos", "month_sin",
                     "days_since"], "reference": "ref"}]),
    "temporal_local_from_naive": ("ts_naive", [{"type": "temporal",
        "timezone": "America/New_York", "features": ["hour", "is_weekend", "dow_sin"]}]),
    "temporal_local_from_zone": ("ts_sydney", [{"type": "temporal", "timezone": "Europe/Berlin",
        "features": ["days_since", "hour", "dow", "hour_cos"], "reference": "ref_berlin"}]),
    "temporal_local_utc": ("ts_berlin", [{"type": "temporal", "timezone": "UTC",
        "features": ["hour", "dow"]}]),
    "embedding_int": ("pid", [{"type": "embedding", "table": "ids", "key": "product_id",
                               "vector": "embedding"}]),
    "embedding_str": ("sku", [{"type": "embedding", "table": "skus", "key": "sku",
                               "vector": "vec", "unknown": "mean"}]),
    "passthrough": ("num", [{"type": "passthrough", "on_null": "keep"}]),
    # the value policy: null / NaN / ±inf (defaults: fill if a fill_null step, else refuse;
    # NaN is null; ±inf refused)
    "inf_clip": ("pos", [{"type": "standard", "on_inf": "clip"}]),
    "inf_clip_then_clip": ("neg", [{"type": "clip", "min": -1, "max": 1, "on_inf": "clip"}]),
    "nan_refused": ("num", [{"type": "fill_null", "strategy": "mean", "on_nan": "error"}]),
    "fill_before_log1p": ("neg", [{"type": "fill_null", "strategy": "constant", "value": 0},
                                  {"type": "log1p", "on_invalid": "shift"}]),
    "passthrough_policy": ("neg", [{"type": "passthrough", "on_inf": "clip", "on_null": "keep",
                                    "on_nan": "error"}]),
    "passthrough_bool": ("flag", [{"type": "passthrough"}]),
    "drop": ("cat", [{"type": "drop"}]),
}  # fmt: skip
# reference columns keep their names (a temporal step reads them from the record); each
# gets the values drawn for the column named here
REFERENCES = {"ref": "ts", "ref_zoned": "ts_zoned", "ref_berlin": "ts_berlin", "ref_naive": "ts"}


@cache
def base_frame() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    num = rng.normal(10, 3, N)
    cat = rng.choice(KNOWN, N, p=[0.4, 0.25, 0.15, 0.1, 0.08, 0.015, 0.005])
    minutes = rng.integers(0, 60 * 24 * 400, N)
    ts = [START + timedelta(minutes=int(m)) for m in minutes]
    ref = [START - timedelta(days=int(d)) for d in rng.integers(0, 30, N)]
    return pl.DataFrame(
        {
            "num": [None if m else float(v) for v, m in zip(num, rng.random(N) < 0.1, strict=True)],
            "pos": rng.lognormal(1, 1, N),
            "neg": rng.normal(0, 3, N),
            "cnt": rng.integers(0, 50, N),
            "flag": rng.random(N) < 0.3,
            "cat": [None if m else str(v) for v, m in zip(cat, rng.random(N) < 0.05, strict=True)],
            "ts": ts,
            "ref": ref,
            "ts_zoned": [t.astimezone(KOLKATA) for t in ts],
            "ref_zoned": [t.astimezone(KOLKATA) for t in ref],
            "ts_berlin": [t.astimezone(BERLIN) for t in ts],
            "ref_berlin": [t.astimezone(BERLIN) for t in ref],
            "ts_sydney": [t.astimezone(SYDNEY) for t in ts],
            "ref_naive": [t.replace(tzinfo=None) for t in ref],
            "ts_naive": [t.replace(tzinfo=None) for t in ts],
            "pid": rng.integers(1, 40, N),
            "sku": [f"s{int(v)}" for v in rng.integers(0, 8, N)],
            "y": rng.random(N) < 0.3,
        },
        schema_overrides={
            "ts_zoned": pl.Datetime("us", "Asia/Kolkata"),
            "ref_zoned": pl.Datetime("us", "Asia/Kolkata"),
            "ts_berlin": pl.Datetime("us", "Europe/Berlin"),
            "ref_berlin": pl.Datetime("us", "Europe/Berlin"),
            "ts_sydney": pl.Datetime("us", "Australia/Sydney"),
        },
    )


def training_frame(cases: list[str]) -> pl.DataFrame:
    base = base_frame()
    columns = [base[CASES[c][0]].alias(c) for c in cases]
    return pl.DataFrame([*columns, *(base[r] for r in sorted(REFERENCES)), base["y"]])


def write_tables(root: Path) -> dict[str, Path]:
    """The embedding tables the ``embedding`` cases name (``table: ids`` / ``skus``)."""
    rng = np.random.default_rng(5)
    pl.DataFrame(
        {
            "product_id": np.arange(1, 31, dtype=np.int64),
            "embedding": pl.Series(
                rng.normal(0, 1, (30, 4)).astype(np.float32), dtype=pl.Array(pl.Float32, 4)
            ),
        }
    ).write_parquet(root / "ids.parquet")
    pl.DataFrame(
        {"sku": [f"s{i}" for i in range(6)], "vec": [list(rng.normal(0, 1, 3)) for _ in range(6)]}
    ).write_parquet(root / "skus.parquet")
    return {"ids": root / "ids.parquet", "skus": root / "skus.parquet"}


def config_for(cases: list[str], tables: dict[str, Path]) -> TransformConfig:
    columns = {}
    for case in cases:
        steps = CASES[case][1]
        columns[case] = [
            {**s, "table": str(tables[s["table"]])} if s["type"] == "embedding" else s
            for s in steps
        ]
    return TransformConfig.model_validate({"target": "y", "columns": columns})


def fit_outcome(cases: list[str], tables: dict[str, Path]) -> FitOutcome:
    return fit_frame(config_for(cases, tables), training_frame(cases))


def fit(cases: list[str], tables: dict[str, Path]) -> FittedTransform:
    return fit_outcome(cases, tables).transform


_FITTED: dict[tuple[str, ...], FitOutcome] = {}


def fitted_outcome(cases: list[str], tables: dict[str, Path]) -> FitOutcome:
    """Fitted once per test session and case list (fitting is deterministic: tested)."""
    key = tuple(cases)
    if key not in _FITTED:
        _FITTED[key] = fit_outcome(cases, tables)
    return _FITTED[key]


def fitted(cases: list[str], tables: dict[str, Path]) -> FittedTransform:
    return fitted_outcome(cases, tables).transform
