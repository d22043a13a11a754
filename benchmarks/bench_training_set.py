"""Benchmark: point-in-time training set, mlpipe vs the obvious pandas implementation.

Full size (``--scale 1``): 10,000,000 spine rows, 1,000,000 entities, 20,000,000 order
events, 8 features (lifetime count/sum/mean-interval/last/time-since-last, 30d count and sum,
7d mean). Each method runs end to end (read Parquet, compute, write Parquet) in its own child
process, so its peak memory is that child's ``ru_maxrss``.

pandas does the same computation the obvious way: concatenate spine and events, sort,
``groupby().rolling(window, on=ts, closed="left")`` for the windows, cumulative ops and
``merge_asof`` for the as-of values. It runs at ``--pandas-scale`` (default: the same as
``--scale`` capped at 0.25, because the full size does not fit in a shared 24 GiB machine);
mlpipe also runs at that size so the ratio compares equal work, and both outputs are checked
to be equal there.

``--entities 3`` runs the multi-entity case instead: every order carries three string keys
(user, merchant and region: ids of different lengths, some non-ASCII), the spine carries all
three, and the 8 features are computed for each entity (24 features, one run). It reports
the 3-entity time against the same 8 features for the user alone on the same data (goal:
no more than 3x), and against pandas doing the same per entity (goal: at least 5x).

Usage::

    .venv/bin/python benchmarks/bench_training_set.py --scale 0.05          # quick
    .venv/bin/python benchmarks/bench_training_set.py --scale 0.05 --entities 3
    .venv/bin/python benchmarks/bench_training_set.py --scale 0.5 --mlpipe-only
    .venv/bin/python benchmarks/bench_training_set.py --scale 0.1 --engine spark   # 1M spine

``--engine spark`` runs the same training set on the Spark engine (``local[2]`` unless
``--spark-master``) beside the Polars engine on the same data: Spark session start-up, a
cold and a warm run (same session), CPU seconds of the whole process tree (driver, JVM,
Python workers), and a check that the Spark output (a part-file directory) equals the Polars
output row for row. On 2 cores this measures Spark's overhead, not a speed-up.
    flock /tmp/mlpipe-bench.lock .venv/bin/python benchmarks/bench_training_set.py --scale 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPINE_FULL = 10_000_000
ENTITIES_FULL = 1_000_000
EVENTS_FULL = 20_000_000
DAY_US = 86_400_000_000
START_US = 1_767_225_600_000_000  # 2026-01-01 UTC
SPAN_DAYS = 180

FEATURES = [
    {"name": "total_orders", "source": "orders", "agg": "count", "default": 0},
    {"name": "lifetime_value", "source": "orders", "agg": "sum", "column": "revenue", "default": 0},
    {"name": "avg_days_between_orders", "source": "orders", "kind": "mean_interval", "default": 999},
    {"name": "orders_30d", "source": "orders", "agg": "count", "window": "30d", "default": 0},
    {"name": "revenue_30d", "source": "orders", "agg": "sum", "column": "revenue", "window": "30d", "default": 0},
    {"name": "revenue_7d_mean", "source": "orders", "agg": "mean", "column": "revenue", "window": "7d"},
    {"name": "days_since_last_order", "source": "orders", "kind": "time_since_last", "default": 999},
    {"name": "last_product_id", "source": "orders", "agg": "last", "column": "product_id"},
]  # fmt: skip
NAMES = [f["name"] for f in FEATURES]


def generate(out: Path, scale: float, seed: int = 1) -> dict[str, int]:
    import numpy as np
    import polars as pl

    n_spine = int(SPINE_FULL * scale)
    n_ent = max(10, int(ENTITIES_FULL * scale))
    n_ev = int(EVENTS_FULL * scale)
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    ts = START_US + rng.integers(0, SPAN_DAYS * DAY_US, n_ev)
    ts.sort()  # order logs arrive in time order
    orders = pl.DataFrame(
        {
            "user_id": rng.integers(0, n_ent, n_ev),
            "order_ts": ts,
            "revenue": np.round(rng.lognormal(3.5, 1.0, n_ev), 2),
            "product_id": rng.integers(1, 5000, n_ev),
        }
    ).with_columns(pl.col("order_ts").cast(pl.Datetime("us", "UTC")))
    orders.write_parquet(out / "orders.parquet")
    del orders
    spine = pl.DataFrame(
        {
            "user_id": rng.integers(0, n_ent, n_spine),
            "label_ts": START_US + rng.integers(30 * DAY_US, SPAN_DAYS * DAY_US, n_spine),
            "label": rng.random(n_spine) < 0.2,
        }
    ).with_columns(pl.col("label_ts").cast(pl.Datetime("us", "UTC")))
    spine.write_parquet(out / "spine.parquet")
    return {"spine": n_spine, "entities": n_ent, "events": n_ev}


# -- the methods (each runs in a child process) ----------------------------------------


def run_mlpipe(data: Path, out: Path) -> None:
    import polars as pl

    from mlpipe_cli.config.models import PipelineConfig
    from mlpipe_cli.features import compute_features
    from mlpipe_cli.io import scan_parquet, write_parquet_atomic

    config = PipelineConfig.model_validate(
        {
            "pipeline": "bench",
            "entity_keys": ["user_id"],
            "sources": {"orders": {"path": str(data / "orders.parquet"), "timestamp": "order_ts"}},
            "features": FEATURES,
        }
    )
    frame = compute_features(
        config, scan_parquet(data / "spine.parquet"), entity_keys=["user_id"], timestamp="label_ts"
    )
    write_parquet_atomic(frame, out)
    del pl


def _config(data: Path, **extra: object):  # type: ignore[no-untyped-def]
    from mlpipe_cli.config.models import PipelineConfig

    return PipelineConfig.model_validate(
        {
            "pipeline": "bench",
            "entity_keys": ["user_id"],
            "sources": {"orders": {"path": str(data / "orders.parquet"), "timestamp": "order_ts"}},
            "features": FEATURES,
            "training_set": {"spine": str(data / "spine.parquet"), "timestamp": "label_ts"},
            **extra,
        }
    )


def _tree_cpu_seconds() -> float:
    """CPU seconds of this process's live descendants (the JVM, Spark's Python workers)."""
    ticks = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        stats[int(entry.name)] = (ppid, (utime + stime) / ticks)
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        total += stats[pid][1]
        todo += children.get(pid, [])
    return total


def run_spark(data: Path, out: Path, master: str) -> dict[str, float]:
    """Session start, a cold and a warm training set on the Spark engine (one session)."""
    from mlpipe_cli.engines.spark.session import spark_session
    from mlpipe_cli.ops.training_set import build_training_set

    config = _config(
        data,
        engine="spark",
        spark={
            "master": master,
            "conf": {
                "spark.ui.enabled": "false",
                "spark.driver.memory": "4g",
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
            },
        },
    )
    start = time.perf_counter()
    spark_session(config)
    session = time.perf_counter() - start
    timings = []
    for _ in range(2):
        begin = time.perf_counter()
        build_training_set(config, out=out, validate=False)
        timings.append(time.perf_counter() - begin)
    return {
        "session_seconds": session,
        "cold_seconds": timings[0],
        "warm_seconds": timings[1],
        "tree_cpu_seconds": _tree_cpu_seconds(),
    }


def run_pandas(data: Path, out: Path) -> None:
    import pandas as pd

    spine = pd.read_parquet(data / "spine.parquet")
    orders = pd.read_parquet(data / "orders.parquet")
    for name, values in _pandas_features(spine, orders, "user_id").items():
        spine[name] = values
    spine.to_parquet(out)


def _pandas_features(spine, orders, key: str) -> dict:  # type: ignore[no-untyped-def]
    """The 8 features keyed by ``key``, the obvious pandas way (spine order)."""
    import numpy as np
    import pandas as pd

    spine = spine[[key, "label_ts"]].copy()
    spine["_row"] = np.arange(len(spine))
    ev = orders[[key, "order_ts", "revenue", "product_id"]].rename(
        columns={"order_ts": "ts", key: "user_id"}
    )
    ev["_is_ev"] = 1.0
    sp = spine[[key, "label_ts", "_row"]].rename(columns={"label_ts": "ts", key: "user_id"})
    sp["_is_ev"] = 0.0
    # spine rows sort before events at equal time: a row never sees itself (strictly before)
    both = pd.concat([sp, ev], ignore_index=True).sort_values(
        ["user_id", "ts", "_is_ev"], kind="stable", ignore_index=True
    )
    rolled = both.groupby("user_id", sort=False).rolling("30D", on="ts", closed="left")
    n30 = rolled["_is_ev"].sum().to_numpy()
    rev30 = rolled["revenue"].sum().to_numpy()
    rolled7 = both.groupby("user_id", sort=False).rolling("7D", on="ts", closed="left")
    mean7 = rolled7["revenue"].mean().to_numpy()
    is_sp = both["_is_ev"].to_numpy() == 0
    result = pd.DataFrame(
        {
            "_row": both["_row"].to_numpy()[is_sp],
            "orders_30d": n30[is_sp],
            "revenue_30d": rev30[is_sp],
            "revenue_7d_mean": mean7[is_sp],
        }
    )
    # lifetime features at each event, then merge_asof (strictly before) onto the spine
    ev = ev.sort_values(["user_id", "ts"], kind="stable", ignore_index=True)
    g = ev.groupby("user_id", sort=False)
    ev["total_orders"] = g.cumcount() + 1
    ev["lifetime_value"] = g["revenue"].cumsum()
    ev["first_ts"] = g["ts"].transform("min")
    ev = ev.sort_values("ts", kind="stable")
    asof = pd.merge_asof(
        sp.sort_values("ts", kind="stable"),
        ev[["ts", "user_id", "total_orders", "lifetime_value", "first_ts", "product_id"]].rename(
            columns={"ts": "last_ts"}
        ),
        left_on="ts",
        right_on="last_ts",
        by="user_id",
        allow_exact_matches=False,
    )
    asof = asof.merge(result, on="_row").sort_values("_row")
    days = (asof["ts"] - asof["last_ts"]).dt.total_seconds() / 86400
    span = (asof["last_ts"] - asof["first_ts"]).dt.total_seconds() / 86400
    n = asof["total_orders"]
    return {
        "total_orders": n.fillna(0).astype("int64").to_numpy(),
        "lifetime_value": asof["lifetime_value"].fillna(0).to_numpy(),
        "avg_days_between_orders": np.where(n >= 2, span / (n - 1), 999.0),
        "orders_30d": asof["orders_30d"].fillna(0).astype("int64").to_numpy(),
        "revenue_30d": asof["revenue_30d"].fillna(0).to_numpy(),
        "revenue_7d_mean": asof["revenue_7d_mean"].to_numpy(),
        "days_since_last_order": days.fillna(999.0).to_numpy(),
        "last_product_id": asof["product_id"].astype("Int64").to_numpy(),
    }


# -- several entities per spine row (--entities 3) ---------------------------------------

ENTITY_KEYS = ["user", "merchant", "region"]
_REGION_NAMES = ["Nord", "Süd", "Ōsaka", "Île-de-France", "Q", "São Paulo", "Kreuzberg", "Łódź"]


def _key_table(entity: str, n: int):  # type: ignore[no-untyped-def]
    """n distinct string keys of different lengths (some non-ASCII) for one entity."""
    import polars as pl

    if entity == "region":
        names = [f"{_REGION_NAMES[i % len(_REGION_NAMES)]}-{i}" for i in range(n)]
    else:
        prefixes = ["u", "usr-", "ü_"] if entity == "user" else ["m", "merchant/", "ḿ"]
        names = [f"{prefixes[i % len(prefixes)]}{i}" for i in range(n)]
    return pl.Series(entity, names, dtype=pl.String)


def generate_multi(out: Path, scale: float, seed: int = 2) -> dict[str, int]:
    import numpy as np
    import polars as pl

    n_spine = int(SPINE_FULL * scale)
    n_ev = int(EVENTS_FULL * scale)
    counts = {
        "user": max(10, int(ENTITIES_FULL * scale)),
        "merchant": max(10, int(ENTITIES_FULL * scale) // 10),
        "region": 60,
    }
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    ts = START_US + rng.integers(0, SPAN_DAYS * DAY_US, n_ev)
    ts.sort()
    tables = {e: _key_table(e, n) for e, n in counts.items()}
    orders = pl.DataFrame(
        {
            **{e: tables[e].gather(rng.integers(0, counts[e], n_ev)) for e in ENTITY_KEYS},
            "order_ts": ts,
            "revenue": np.round(rng.lognormal(3.5, 1.0, n_ev), 2),
            "product_id": rng.integers(1, 5000, n_ev),
        }
    ).with_columns(pl.col("order_ts").cast(pl.Datetime("us", "UTC")))
    orders.write_parquet(out / "orders.parquet")
    del orders
    spine = pl.DataFrame(
        {
            **{e: tables[e].gather(rng.integers(0, counts[e], n_spine)) for e in ENTITY_KEYS},
            "label_ts": START_US + rng.integers(30 * DAY_US, SPAN_DAYS * DAY_US, n_spine),
            "label": rng.random(n_spine) < 0.2,
        }
    ).with_columns(pl.col("label_ts").cast(pl.Datetime("us", "UTC")))
    spine.write_parquet(out / "spine.parquet")
    return {"spine": n_spine, "events": n_ev, **counts}


def _multi_features(entities: list[str]) -> list[dict]:
    """The 8 features once per entity, named <entity>__<feature>, keyed by that column."""
    return [dict(f, name=f"{e}__{f['name']}", entity_keys=[e]) for e in entities for f in FEATURES]


def run_mlpipe_entities(data: Path, out: Path, entities: list[str]) -> None:
    from mlpipe_cli.config.models import PipelineConfig
    from mlpipe_cli.features import compute_features
    from mlpipe_cli.io import scan_parquet, write_parquet_atomic

    config = PipelineConfig.model_validate(
        {
            "pipeline": "bench",
            "entity_keys": ["user"],
            "sources": {"orders": {"path": str(data / "orders.parquet"), "timestamp": "order_ts"}},
            "features": _multi_features(entities),
        }
    )
    frame = compute_features(config, scan_parquet(data / "spine.parquet"), timestamp="label_ts")
    write_parquet_atomic(frame, out)


def run_pandas_entities(data: Path, out: Path, entities: list[str]) -> None:
    import pandas as pd

    spine = pd.read_parquet(data / "spine.parquet")
    orders = pd.read_parquet(data / "orders.parquet")
    for entity in entities:
        columns = _pandas_features(spine, orders, entity)
        for name, values in columns.items():
            spine[f"{entity}__{name}"] = values
    spine.to_parquet(out)


def child(method: str, data: str, out: str) -> None:
    start = time.perf_counter()
    extra: dict[str, float] = {}
    methods = {
        "mlpipe": run_mlpipe,
        "pandas": run_pandas,
        "mlpipe-1": lambda d, o: run_mlpipe_entities(d, o, ENTITY_KEYS[:1]),
        "mlpipe-3": lambda d, o: run_mlpipe_entities(d, o, ENTITY_KEYS),
        "pandas-3": lambda d, o: run_pandas_entities(d, o, ENTITY_KEYS),
    }
    if method.startswith("spark="):
        extra = run_spark(Path(data), Path(out), method.split("=", 1)[1])
    else:
        methods[method](Path(data), Path(out))
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = usage.ru_utime + usage.ru_stime
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu_seconds": cpu + extra.get("tree_cpu_seconds", 0),
                "peak_bytes": usage.ru_maxrss * 1024,
                **extra,
            }
        )
    )


def spark_main(args: argparse.Namespace) -> None:
    """The Spark engine beside the Polars engine on the same data (see the module doc)."""
    import polars as pl

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-pit-spark-") as tmp:
        root = Path(tmp)
        shape = generate(root / "data", args.scale)
        print(f"polars {pl.__version__}, {os.cpu_count()} cpus; median of {args.repeats} "
              f"runs; {shape['spine']:,} spine rows, {shape['entities']:,} entities, "
              f"{shape['events']:,} events, {len(FEATURES)} features; spark master "
              f"{args.spark_master}")  # fmt: skip
        polars_run = measure("mlpipe", root / "data", root / "polars.parquet", args.repeats)
        spark_run = measure(
            f"spark={args.spark_master}", root / "data", root / "spark", args.repeats
        )
        runs = spark_run["all"]
        session = statistics.median(r["session_seconds"] for r in runs)
        cold = statistics.median(r["cold_seconds"] for r in runs)
        warm = statistics.median(r["warm_seconds"] for r in runs)
        rows = shape["spine"]
        print(report_line("polars", rows, polars_run))
        print(f"spark    {rows:>11,} spine rows  session start {session:6.2f} s, cold run "
              f"{cold:7.2f} s, warm run {warm:7.2f} s ({rows / warm:,.0f} rows/s warm); "
              f"whole process {spark_run['seconds']:.2f} s, cpu {spark_run['cpu_seconds']:.2f} s "
              f"(driver + JVM + Python workers)")  # fmt: skip
        print(f"warm Spark / Polars wall: {warm / polars_run['seconds']:.1f}x; cpu per spine row "
              f"polars {polars_run['cpu_seconds'] / rows * 1e6:.2f} us, spark "
              f"{spark_run['cpu_seconds'] / rows * 1e6:.2f} us (2 runs + start-up)")  # fmt: skip
        same = pl.read_parquet(root / "spark").equals(pl.read_parquet(root / "polars.parquet"))
        print(f"check: spark output {'equals' if same else 'DIFFERS FROM'} the polars output; "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        if not same:
            raise SystemExit(1)


def measure(method: str, data: Path, out: Path, repeats: int) -> dict[str, float]:
    runs = []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, __file__, "--child", method, str(data), str(out)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise SystemExit(f"{method} failed:\n{proc.stderr[-3000:]}")
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return {
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_bytes": statistics.median(r["peak_bytes"] for r in runs),
        "all": runs,
        "cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "runs": len(runs),
    }


def compare_outputs(ours: Path, theirs: Path, names: list[str] = NAMES) -> str:
    import polars as pl

    a = pl.read_parquet(ours)
    b = pl.read_parquet(theirs)
    problems = []
    for name in names:
        x, y = a[name], b[name].cast(a[name].dtype)
        if x.dtype.is_float():
            bad = ((x - y).abs() > 1e-6 * (1 + y.abs())) | (x.is_null() != y.is_null())
        else:
            bad = (x != y).fill_null(True) & ~(x.is_null() & y.is_null())
        if bad.sum():
            problems.append(f"{name}: {bad.sum()} rows differ")
    return "outputs equal" if not problems else "; ".join(problems)


def report_line(label: str, rows: int, m: dict[str, float]) -> str:
    return (
        f"{label:<8} {rows:>11,} spine rows  {m['seconds']:8.2f} s  "
        f"{rows / m['seconds']:>12,.0f} rows/s  cpu {m['cpu_seconds']:8.2f} s  "
        f"peak {m['peak_bytes'] / 2**30:6.2f} GiB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=1.0, help="1 = 10M spine / 20M events")
    parser.add_argument("--pandas-scale", type=float, default=None, help="default min(scale, 0.25)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--mlpipe-only",
        action="store_true",
        help="time mlpipe alone at --scale (no pandas run, no comparison)",
    )
    parser.add_argument(
        "--engine",
        choices=["polars", "spark"],
        default="polars",
        help="spark: the Spark engine beside Polars (no pandas run)",
    )
    parser.add_argument("--spark-master", default="local[2]")
    parser.add_argument(
        "--entities",
        type=int,
        choices=[1, 3],
        default=1,
        help="3: string keys for user, merchant and region, 8 features each, in one run",
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("METHOD", "DATA", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.engine == "spark":
        spark_main(args)
        return
    pandas_scale = args.pandas_scale if args.pandas_scale is not None else min(args.scale, 0.25)
    import polars as pl

    if args.entities == 3:
        main_entities(args, pandas_scale)
        return

    if args.mlpipe_only:
        with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-pit-") as tmp:
            root = Path(tmp)
            shape = generate(root / "data", args.scale)
            print(f"polars {pl.__version__}, {os.cpu_count()} cpus; medians of {args.repeats} "
                  f"runs; {shape['spine']:,} spine rows, {shape['entities']:,} entities, "
                  f"{shape['events']:,} events, {len(FEATURES)} features (mlpipe only)")  # fmt: skip
            ours = measure("mlpipe", root / "data", root / "ours.parquet", args.repeats)
            print(report_line("mlpipe", shape["spine"], ours))
            print("runs: " + "; ".join(
                f"{r['seconds']:.2f} s, {r['peak_bytes'] / 2**30:.2f} GiB" for r in ours["all"]
            ))  # fmt: skip
            out_mem = pl.read_parquet(root / "ours.parquet").estimated_size()
            print(f"output in memory {out_mem / 2**30:.2f} GiB; peak = "
                  f"{ours['peak_bytes'] / out_mem:.2f}x output; load average "
                  f"{os.getloadavg()[0]:.1f}")  # fmt: skip
        return

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-pit-") as tmp:
        root = Path(tmp)
        print(f"polars {pl.__version__}, {os.cpu_count()} cpus; medians of {args.repeats} runs")
        sizes = {}
        for scale in sorted({args.scale, pandas_scale}):
            sizes[scale] = generate(root / f"s{scale}", scale)
        # same-size comparison
        data = root / f"s{pandas_scale}"
        shape = sizes[pandas_scale]
        print(f"\n== equal work: {shape['spine']:,} spine rows, {shape['entities']:,} entities, "
              f"{shape['events']:,} events, {len(FEATURES)} features")  # fmt: skip
        ours = measure("mlpipe", data, root / "ours.parquet", args.repeats)
        theirs = measure("pandas", data, root / "pandas.parquet", args.repeats)
        print(report_line("mlpipe", shape["spine"], ours))
        print(report_line("pandas", shape["spine"], theirs))
        out_mem = pl.read_parquet(root / "ours.parquet").estimated_size()
        print(f"speed-up {theirs['seconds'] / ours['seconds']:.1f}x wall, "
              f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.1f}x cpu; memory mlpipe/pandas "
              f"{ours['peak_bytes'] / theirs['peak_bytes']:.2f}; output in memory "
              f"{out_mem / 2**30:.2f} GiB (mlpipe peak = {ours['peak_bytes'] / out_mem:.1f}x output)")  # fmt: skip
        print(f"wall includes process start and imports; load average {os.getloadavg()[0]:.1f}")
        print("check:", compare_outputs(root / "ours.parquet", root / "pandas.parquet"))
        if args.scale != pandas_scale:
            shape = sizes[args.scale]
            data = root / f"s{args.scale}"
            print(f"\n== full: {shape['spine']:,} spine rows, {shape['entities']:,} entities, "
                  f"{shape['events']:,} events (mlpipe only: pandas at this size needs ~4x the "
                  f"equal-work peak and ~4x its time, too much for a shared machine)")  # fmt: skip
            big = measure("mlpipe", data, root / "ours_big.parquet", args.repeats)
            print(report_line("mlpipe", shape["spine"], big))
            out_mem = pl.read_parquet(root / "ours_big.parquet").estimated_size()
            print(f"output in memory {out_mem / 2**30:.2f} GiB; peak = "
                  f"{big['peak_bytes'] / out_mem:.1f}x output")  # fmt: skip


def main_entities(args: argparse.Namespace, pandas_scale: float) -> None:
    import polars as pl

    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="bench-pit3-") as tmp:
        root = Path(tmp)
        shape = generate_multi(root / "data", args.scale)
        print(f"polars {pl.__version__}, {os.cpu_count()} cpus; medians of {args.repeats} runs; "
              f"{shape['spine']:,} spine rows, {shape['events']:,} events; string keys: "
              f"{shape['user']:,} users, {shape['merchant']:,} merchants, {shape['region']} "
              f"regions; {len(FEATURES)} features per entity")  # fmt: skip
        one = measure("mlpipe-1", root / "data", root / "one.parquet", args.repeats)
        three = measure("mlpipe-3", root / "data", root / "three.parquet", args.repeats)
        print(report_line("1 entity", shape["spine"], one))
        print(report_line("3 entity", shape["spine"], three))
        out_mem = pl.read_parquet(root / "three.parquet").estimated_size()
        print(f"3 entities / 1 entity: {three['seconds'] / one['seconds']:.2f}x wall, "
              f"{three['cpu_seconds'] / one['cpu_seconds']:.2f}x cpu (goal <= 3x); 3-entity "
              f"output in memory {out_mem / 2**30:.2f} GiB, peak = "
              f"{three['peak_bytes'] / out_mem:.2f}x output; load average "
              f"{os.getloadavg()[0]:.1f}")  # fmt: skip
        if args.mlpipe_only:
            return
        if pandas_scale != args.scale:
            shape = generate_multi(root / "small", pandas_scale)
            data = root / "small"
            ours = measure("mlpipe-3", data, root / "ours.parquet", args.repeats)
        else:
            data, ours = root / "data", three
            (root / "three.parquet").rename(root / "ours.parquet")
        theirs = measure("pandas-3", data, root / "pandas.parquet", args.repeats)
        print(f"\n== equal work, 3 entities: {shape['spine']:,} spine rows, "
              f"{shape['events']:,} events")  # fmt: skip
        print(report_line("mlpipe", shape["spine"], ours))
        print(report_line("pandas", shape["spine"], theirs))
        print(f"speed-up {theirs['seconds'] / ours['seconds']:.1f}x wall, "
              f"{theirs['cpu_seconds'] / ours['cpu_seconds']:.1f}x cpu (goal >= 5x); "
              f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        names = [f["name"] for f in _multi_features(ENTITY_KEYS)]
        print("check:", compare_outputs(root / "ours.parquet", root / "pandas.parquet", names))


if __name__ == "__main__":
    main()
