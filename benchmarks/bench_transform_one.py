"""Benchmark `FittedTransform.transform_one` (the online path, one call per served request).

    .venv/bin/python benchmarks/bench_transform_one.py [--records 20000] [--rounds 7]

The serving transform (the one `benchmarks/bench_serve.py` fits): total_orders [log1p,
standard], lifetime_value [standard], orders_30d [standard], revenue_30d [minmax],
days_since_last_order [standard], age [fill_null median, standard], country [onehot, 8
categories], plan [onehot, 3] -> 19 outputs; fitted on 20,000 rows, called on 20,000 other
records (dicts as `to_dicts` gives them: ints, floats, None, strings).

Measured, every call timed alone (`perf_counter_ns`, the timer's own cost — the `empty` row —
included), p50 and p99 per round, the median over --rounds rounds with the variants
interleaved in each round (the machine is shared; medians of rounds damp that):

* reference — the test oracle (tests/transform_oracle.py): one plain closure per column,
  composed (the shape of the online path before the generated function);
* fast      — `transform_one`: one function generated for the fitted state (codegen.py);
* hand      — the same arithmetic written by hand for these 8 columns, without any
  missing-value or type handling beyond `age` (a floor, not a correct transform);
* sklearn   — the equivalent fitted ColumnTransformer on a 1-row pandas DataFrame.

Then (unless --no-types) reference vs fast for a transform of --copies columns of one
transformer type, for each type.
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
from bench_serve import COUNTRIES, TRANSFORM_COLUMNS, frame_of, rows_for  # noqa: E402

from mlpipe_cli.config.transforms import TransformConfig  # noqa: E402
from mlpipe_cli.transforms import FittedTransform, fit_frame  # noqa: E402
from tests.transform_oracle import oracle_function  # noqa: E402


def serving_rows(n: int, seed: int) -> pl.DataFrame:
    """The rows of bench_serve.py (its generator, so both measure the same data)."""
    return frame_of(rows_for(n, seed))


def hand_written(transform: FittedTransform) -> Callable[[Mapping[str, Any]], list[Any]]:
    """The serving transform's arithmetic by hand, constants taken from the fitted state."""
    st = {c["column"]: c["state"] for c in transform.state["columns"]}

    def steps(column: str) -> list[dict[str, Any]]:
        return st[column]["steps"]

    to_mean, to_scale = steps("total_orders")[1]["mean"], steps("total_orders")[1]["scale"]
    lv, od, ds = (steps(c)[0] for c in ("lifetime_value", "orders_30d", "days_since_last_order"))
    rv = steps("revenue_30d")[0]
    age_fill, age = steps("age")[0]["value"], steps("age")[1]
    log1p = math.log1p

    def rows(column: str) -> tuple[dict[str, tuple[float, ...]], tuple[float, ...]]:
        names = st[column]["names"]
        table = [
            tuple(1.0 if j == i else 0.0 for j in range(len(names))) for i in range(len(names))
        ]
        return {v: table[i] for i, v in enumerate(st[column]["vocabulary"])}, table[-1]

    country, country_other = rows("country")
    plan, plan_other = rows("plan")
    lv_m, lv_s, od_m, od_s, ds_m, ds_s = lv["mean"], lv["scale"], od["mean"], od["scale"], ds["mean"], ds["scale"]  # fmt: skip
    rv_s, rv_o, age_m, age_s = rv["scale"], rv["min"], age["mean"], age["scale"]

    def transform_one(r: Mapping[str, Any]) -> list[Any]:
        a = r["age"]
        return [
            (log1p(r["total_orders"]) - to_mean) / to_scale,
            (r["lifetime_value"] - lv_m) / lv_s,
            (r["orders_30d"] - od_m) / od_s,
            r["revenue_30d"] * rv_s + rv_o,
            (r["days_since_last_order"] - ds_m) / ds_s,
            ((age_fill if a is None else a) - age_m) / age_s,
            *country.get(r["country"], country_other),
            *plan.get(r["plan"], plan_other),
        ]

    return transform_one


def sklearn_one_row(train: pl.DataFrame) -> Callable[[Any], Any]:
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        MinMaxScaler,
        OneHotEncoder,
        StandardScaler,
    )

    ct = ColumnTransformer(
        [
            ("total_orders", make_pipeline(FunctionTransformer(np.log1p), StandardScaler()), ["total_orders"]),
            ("lifetime_value", StandardScaler(), ["lifetime_value"]),
            ("orders_30d", StandardScaler(), ["orders_30d"]),
            ("revenue_30d", MinMaxScaler(), ["revenue_30d"]),
            ("days_since_last_order", StandardScaler(), ["days_since_last_order"]),
            ("age", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), ["age"]),
            ("country", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["country"]),
            ("plan", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan"]),
        ],
        sparse_threshold=0.0,
    )  # fmt: skip
    ct.fit(train.to_pandas())
    return ct.transform


# -- timing -----------------------------------------------------------------------------


def time_calls(fn: Callable[[Any], Any], inputs: list[Any]) -> tuple[float, float]:
    """(p50, p99) in microseconds of fn(x), each call timed alone."""
    clock = time.perf_counter_ns
    timings = []
    append = timings.append
    for x in inputs:
        t0 = clock()
        fn(x)
        append(clock() - t0)
    timings.sort()
    n = len(timings)
    return timings[n // 2] / 1000, timings[min(n - 1, int(0.99 * n))] / 1000


def measure(
    variants: dict[str, tuple[Callable[[Any], Any], list[Any]]], rounds: int
) -> dict[str, tuple[float, float, float]]:
    """Median over rounds of each variant's (p50, p99, CPU µs per call — process_time over the
    round, timer cost included); variants interleaved per round."""
    for fn, inputs in variants.values():  # warm up (and let the interpreter specialise)
        for x in inputs[: min(len(inputs), 2000)]:
            fn(x)
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        for _ in range(rounds):
            for name, (fn, inputs) in variants.items():
                c0 = time.process_time()
                runs[name].append(time_calls(fn, inputs))
                cpu[name].append((time.process_time() - c0) / len(inputs) * 1e6)
                gc.collect()
    finally:
        gc.enable()
        gc.unfreeze()
    return {
        name: (statistics.median(p50 for p50, _ in r), statistics.median(p99 for _, p99 in r),
               statistics.median(cpu[name]))
        for name, r in runs.items()
    }  # fmt: skip


# -- one column of each transformer type --------------------------------------------------

# the columns have 5% nulls: `on_null: keep` passes them on as None (as before the policy)
TYPES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "standard": ("x", [{"type": "standard", "on_null": "keep"}]),
    "minmax (clip)": ("x", [{"type": "minmax", "clip": True, "on_null": "keep"}]),
    "robust": ("x", [{"type": "robust", "on_null": "keep"}]),
    "clip (quantiles)": ("x", [{"type": "clip", "quantiles": [0.01, 0.99], "on_null": "keep"}]),
    "log1p": ("pos", [{"type": "log1p", "on_null": "keep"}]),
    "fill_null+log1p+standard": ("pos", [
        {"type": "fill_null", "strategy": "median"}, {"type": "log1p"}, {"type": "standard"}]),
    "passthrough": ("x", [{"type": "passthrough", "on_null": "keep"}]),
    "onehot (8)": ("cat", [{"type": "onehot"}]),
    "ordinal": ("cat", [{"type": "ordinal"}]),
    "frequency": ("cat", [{"type": "frequency"}]),
    "target": ("cat", [{"type": "target"}]),
    "temporal (8 features)": ("ts", [{"type": "temporal", "features": [
        "hour_sin", "hour_cos", "dow_sin", "dow_cos", "month_sin", "month_cos", "is_weekend",
        "days_since"], "reference": "ref"}]),
    "embedding (16-d, int ids)": ("pid", [{"type": "embedding", "table": "EMB", "key": "product_id",
                                 "vector": "embedding"}]),
}  # fmt: skip


def type_frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "x": [None if m else float(v) for v, m in zip(rng.normal(5, 2, n), rng.random(n) < 0.05, strict=True)],
            "pos": [None if m else float(v) for v, m in zip(rng.lognormal(2, 1, n), rng.random(n) < 0.05, strict=True)],
            "cat": [COUNTRIES[i] for i in rng.integers(0, 8, n)],
            "ts": [start + timedelta(seconds=int(s)) for s in rng.integers(0, 180 * 86400, n)],
            "ref": [start - timedelta(seconds=int(s)) for s in rng.integers(0, 700 * 86400, n)],
            "pid": rng.integers(1, 5200, n),
            "y": rng.random(n) < 0.3,
        }
    )  # fmt: skip


def per_type(
    records: int, rounds: int, copies: int
) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """Reference vs fast for a transform of ``copies`` columns of each type (so the fixed
    per-call cost does not hide the per-column one)."""
    with tempfile.TemporaryDirectory() as tmp:
        emb = Path(tmp) / "emb.parquet"
        rng = np.random.default_rng(3)
        pl.DataFrame(
            {
                "product_id": np.arange(1, 5001, dtype=np.int64),
                "embedding": pl.Series(
                    rng.normal(0, 1, (5000, 16)), dtype=pl.Array(pl.Float64, 16)
                ),
            }
        ).write_parquet(emb)
        train, test = type_frame(20_000, 1), type_frame(records, 2)
        results = []
        for name, (column, steps) in TYPES.items():
            steps = [{**s, "table": str(emb)} if s["type"] == "embedding" else s for s in steps]
            names = [f"{column}_{i}" for i in range(copies)]
            copy = [pl.col(column).alias(n) for n in names]
            config = TransformConfig.model_validate(
                {"target": "y", "columns": dict.fromkeys(names, steps)}
            )
            transform = fit_frame(config, train.select(*copy, "ref", "y")).transform
            rows = test.select(*copy, "ref").to_dicts()
            med = measure(
                {
                    "reference": (oracle_function(transform.state, transform.tables), rows),
                    "fast": (transform.transform_one, rows),
                },
                rounds,
            )
            results.append((name, med["reference"], med["fast"]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--sklearn-records", type=int, default=300)
    parser.add_argument("--no-types", action="store_true", help="skip the per-type table")
    parser.add_argument("--copies", type=int, default=8, help="columns per type in that table")
    args = parser.parse_args()

    print(
        f"bench_transform_one: Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    train = serving_rows(20_000, seed=1)
    transform = fit_frame(
        TransformConfig.model_validate({"columns": TRANSFORM_COLUMNS}), train
    ).transform
    records = serving_rows(args.records, seed=7).to_dicts()
    reference = oracle_function(transform.state, transform.tables)
    for record in records[:1000]:  # the generated function is the reference, bit for bit
        assert transform.transform_one(record) == reference(record)
    variants: dict[str, tuple[Callable[[Any], Any], list[Any]]] = {
        "empty": (lambda record: None, records),
        "reference": (reference, records),
        "fast": (transform.transform_one, records),
        "hand": (hand_written(transform), records),
    }
    med = measure(variants, args.rounds)
    sk = sklearn_one_row(train)
    frames = [f.to_pandas() for f in serving_rows(args.sklearn_records, seed=7).iter_slices(1)]
    med.update(measure({"sklearn": (sk, frames)}, max(3, args.rounds // 2)))

    print(
        f"\nserving transform ({len(TRANSFORM_COLUMNS)} columns -> {len(transform.output_columns)} "
        f"outputs), {args.records:,} records x {args.rounds} rounds; microseconds per call, "
        "median of the rounds' p50 and p99 (timer cost included: see `empty`):"
    )
    print(f"  {'variant':12s} {'p50':>8s} {'p99':>8s} {'cpu/call':>9s}  {'p50 vs fast':>11s}")
    for name in ("empty", "reference", "fast", "hand", "sklearn"):
        p50, p99, cpu = med[name]
        print(f"  {name:12s} {p50:8.2f} {p99:8.2f} {cpu:9.2f}  {p50 / med['fast'][0]:10.1f}x")
    ref, fast = med["reference"], med["fast"]
    print(
        f"  speed-up reference -> fast: p50 {ref[0] / fast[0]:.1f}x, p99 {ref[1] / fast[1]:.1f}x; "
        f"goal p50 <= 3 us: {'met' if fast[0] <= 3 else 'NOT met'}"
    )
    if not args.no_types:
        records_per_type = max(2000, args.records // 4)
        print(
            f"\n{args.copies} columns of one transformer type ({records_per_type:,} records x "
            f"{args.rounds} rounds; p50 / p99 microseconds per call, timer cost included):"
        )
        print(f"  {'type':26s} {'reference':>15s} {'fast':>15s} {'p50 speed-up':>12s}")
        for name, r, f in per_type(records_per_type, args.rounds, args.copies):
            print(
                f"  {name:26s} {r[0]:7.2f} /{r[1]:6.2f} {f[0]:7.2f} /{f[1]:6.2f} "
                f"{r[0] / f[0]:11.1f}x"
            )
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
