"""Benchmark `mlpipe transform` (batch) and `transform_one` (online) against scikit-learn.

    .venv/bin/python benchmarks/bench_transform.py --rows 200000 --repeat 3
    flock /tmp/mlpipe-bench.lock .venv/bin/python benchmarks/bench_transform.py   # 5M rows

Data (generated once per size under /tmp/mlpipe-bench/): ROWS x (10 numeric, 5 categorical —
8, 3, 5, 50 and 10,000 categories —, 2 timestamps, 1 product id looked up in a 5,000 x 16
embedding table). The same preprocessing is expressed twice, fitted on the same first
min(ROWS, 1M) rows:

* mlpipe  — a `transform` artifact (standard/minmax/robust/fill_null/log1p/clip chains,
            one-hot, ordinal, frequency, target encoding, temporal cyclical features,
            days-since, embedding lookup, passthrough);
* sklearn — the equivalent ColumnTransformer: StandardScaler, MinMaxScaler, RobustScaler,
            SimpleImputer, FunctionTransformer(np.log1p / np.clip), OneHotEncoder,
            OrdinalEncoder, TargetEncoder, and vectorised pandas FunctionTransformers for
            frequency, calendar features and the embedding lookup.

Batch: every method runs in a fresh child process (peak = that child's ru_maxrss, imports and
the fitted transformer included; `base` = the same before the timed part). All read the same
Parquet file from the page cache; the read is INCLUDED in every time below:

* mlpipe-sink        scan -> `transform_batch` -> `sink_parquet_atomic` (snappy, statistics,
                     fsync + rename): exactly what `mlpipe transform` does today
* mlpipe-sink-nostats  the same with `statistics=False` (snappy; the recommended setting)
* checked-2pass      the null/NaN/±inf counts (`transform_frame(...).report()`, reading the
                     numeric inputs), `check()`, then mlpipe-sink
* checked-1pass      the counts collected in the same streaming query as the write
                     (`pl.collect_all([counts, sink_parquet(lazy=True)])`), checked before
                     the rename
* mlpipe-memory      `pl.read_parquet` -> `transform_batch` -> `collect` (read and transform
                     also timed separately)
* sklearn-memory     `pd.read_parquet` -> `ColumnTransformer.transform` (read and transform
                     timed separately)
* sklearn-parquet    sklearn-memory, then the matrix written with the same Parquet writer and
                     settings as mlpipe-sink (Polars, snappy, statistics, fsync + rename)

mlpipe's output also keeps the non-transformed `label` column (as `mlpipe transform` does),
sklearn's does not. Online: `transform_one(record)` on dict records vs
`ColumnTransformer.transform` on a 1-row DataFrame. Medians of --repeat runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CACHE = Path(os.environ.get("MLPIPE_BENCH_DIR", "/tmp/mlpipe-bench"))
FIT_ROWS = 1_000_000
EMB_ROWS, EMB_DIM = 5000, 16
TEMPORAL = [
    "hour_sin",
    "hour_cos",
    "dow_sin",
    "dow_cos",
    "month_sin",
    "month_cos",
    "is_weekend",
    "days_since",
]

COLUMNS = {
    "n0": [{"type": "standard"}],
    "n1": [{"type": "minmax"}],
    "n2": [{"type": "robust"}],
    "n3": [{"type": "fill_null", "strategy": "mean"}, {"type": "standard"}],
    "n4": [{"type": "log1p"}, {"type": "standard"}],
    "n5": [{"type": "clip", "quantiles": [0.01, 0.99]}],
    "n6": [{"type": "minmax", "clip": True}],
    "n7": [{"type": "fill_null", "strategy": "median"}, {"type": "robust"}],
    "n8": [{"type": "standard"}],
    "n9": [{"type": "passthrough"}],
    "country": [{"type": "onehot"}],
    "plan": [{"type": "onehot"}],
    "channel": [{"type": "ordinal"}],
    "device": [{"type": "frequency"}],
    "item": [{"type": "target", "smooth": "auto"}],
    "event_ts": [{"type": "temporal", "features": TEMPORAL, "reference": "signup_ts"}],
    "product_id": [
        {
            "type": "embedding",
            "table": "EMB",
            "key": "product_id",
            "vector": "embedding",
            "unknown": "zero",
        }
    ],
}


def paths(rows: int) -> dict[str, Path]:
    base = CACHE / f"transform-{rows}"
    return {
        "base": base,
        "data": base / "data.parquet",
        "emb": base / "emb.parquet",
        "artifacts": base / "artifacts",
        "out": base / "out.parquet",
        "out_sklearn": base / "out-sklearn.parquet",
    }


def generate(rows: int) -> None:
    import numpy as np
    import polars as pl

    p = paths(rows)
    if p["data"].exists() and p["emb"].exists():
        return
    p["base"].mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(42)
    cols: dict[str, object] = {}
    for i in range(10):
        values = rng.lognormal(2, 1, rows) if i == 4 else rng.normal(i, 1 + i, rows)
        series = pl.Series(f"n{i}", values)
        if i in (3, 7):
            series = series.set(pl.Series(rng.random(rows) < 0.05), None)
        cols[f"n{i}"] = series

    def cats(prefix: str, n: int, skew: float) -> pl.Series:
        weights = 1.0 / np.arange(1, n + 1) ** skew
        idx = rng.choice(n, rows, p=weights / weights.sum())
        return pl.select(pl.lit(prefix) + pl.Series(idx).cast(pl.String)).to_series()

    cols["country"] = cats("c", 8, 1.0)
    cols["plan"] = cats("p", 3, 1.0)
    cols["channel"] = cats("ch", 5, 0.5)
    cols["device"] = cats("d", 50, 1.0)
    cols["item"] = cats("i", 10_000, 0.8)
    start = 1_767_225_600_000_000  # 2026-01-01 UTC in us
    cols["event_ts"] = pl.Series(start + rng.integers(0, 180 * 86_400_000_000, rows)).cast(
        pl.Datetime("us", "UTC")
    )
    cols["signup_ts"] = pl.Series(start - rng.integers(0, 700 * 86_400_000_000, rows)).cast(
        pl.Datetime("us", "UTC")
    )
    cols["product_id"] = pl.Series(rng.integers(1, EMB_ROWS + 200, rows))  # ~4% unknown ids
    cols["label"] = rng.random(rows) < 0.3
    pl.DataFrame(cols).write_parquet(p["data"], row_group_size=250_000)
    vectors = rng.normal(0, 1, (EMB_ROWS, EMB_DIM)).astype(np.float32)
    pl.DataFrame(
        {
            "product_id": np.arange(1, EMB_ROWS + 1, dtype=np.int64),
            "embedding": pl.Series(vectors, dtype=pl.Array(pl.Float32, EMB_DIM)),
        }
    ).write_parquet(p["emb"])


def transform_config(rows: int):  # type: ignore[no-untyped-def]
    from mlpipe_cli.config.transforms import TransformConfig

    columns = json.loads(json.dumps(COLUMNS).replace("EMB", str(paths(rows)["emb"])))
    return TransformConfig.model_validate({"target": "label", "columns": columns})


def fit_mlpipe(rows: int) -> dict[str, float]:
    import polars as pl

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.transforms.fit import fit_frame, write_artifact

    p = paths(rows)
    store = ArtifactStore(p["artifacts"], "bench")
    t0 = time.perf_counter()
    frame = pl.scan_parquet(p["data"]).head(FIT_ROWS)
    outcome = fit_frame(transform_config(rows), frame)
    fit_s = time.perf_counter() - t0
    store.publish(
        "transform", lambda d: write_artifact(outcome, d, profile=False), params={"rows": rows}
    )
    return {"fit_seconds": fit_s}


def sklearn_pipeline(fit_df):  # type: ignore[no-untyped-def]
    import numpy as np
    import pandas as pd
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import (
        FunctionTransformer,
        MinMaxScaler,
        OneHotEncoder,
        OrdinalEncoder,
        RobustScaler,
        StandardScaler,
        TargetEncoder,
    )

    from mlpipe_cli.transforms.export import temporal

    emb = pd.read_parquet(paths(ARGS.rows)["emb"])
    keys = pd.Index(emb["product_id"].to_numpy())
    matrix = np.vstack(
        [np.zeros(EMB_DIM), np.stack(emb["embedding"].to_numpy()).astype(np.float64)]
    )

    def embed(X):  # type: ignore[no-untyped-def]
        idx = keys.get_indexer(np.asarray(X).ravel()) + 1  # -1 (unknown) -> row 0 = zeros
        return matrix[idx]

    freq = fit_df["device"].value_counts(normalize=True)

    def frequency(X):  # type: ignore[no-untyped-def]
        return pd.Series(np.asarray(X).ravel()).map(freq).fillna(0.0).to_numpy().reshape(-1, 1)

    lo, hi = np.quantile(fit_df["n5"], [0.01, 0.99])
    ct = ColumnTransformer(
        [
            ("n0", StandardScaler(), ["n0"]),
            ("n1", MinMaxScaler(), ["n1"]),
            ("n2", RobustScaler(), ["n2"]),
            ("n3", make_pipeline(SimpleImputer(strategy="mean"), StandardScaler()), ["n3"]),
            ("n4", make_pipeline(FunctionTransformer(np.log1p), StandardScaler()), ["n4"]),
            ("n5", FunctionTransformer(np.clip, kw_args={"a_min": lo, "a_max": hi}), ["n5"]),
            ("n6", MinMaxScaler(clip=True), ["n6"]),
            ("n7", make_pipeline(SimpleImputer(strategy="median"), RobustScaler()), ["n7"]),
            ("n8", StandardScaler(), ["n8"]),
            ("n9", "passthrough", ["n9"]),
            ("country", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["country"]),
            ("plan", OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["plan"]),
            (
                "channel",
                OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1),
                ["channel"],
            ),
            ("device", FunctionTransformer(frequency), ["device"]),
            ("item", TargetEncoder(target_type="binary"), ["item"]),
            (
                "event_ts",
                FunctionTransformer(
                    temporal,
                    kw_args={"features": TEMPORAL, "time_zone": "UTC", "has_reference": True},
                ),
                ["event_ts", "signup_ts"],
            ),
            ("product_id", FunctionTransformer(embed), ["product_id"]),
        ],
        sparse_threshold=0.0,
    )
    ct.fit(fit_df, fit_df["label"].to_numpy())
    return ct


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_s() -> float:
    """User + system CPU seconds of this process, all threads (steadier than wall time when
    other work shares the machine)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def phase_mlpipe(rows: int, mode: str) -> dict[str, float]:
    import polars as pl

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.io import sink_parquet_atomic
    from mlpipe_cli.transforms import load_transform, transform_frame

    p = paths(rows)
    fitted = load_transform(ArtifactStore(p["artifacts"], "bench"))
    base = peak_mb()
    result: dict[str, float] = {}
    c0, t0 = cpu_s(), time.perf_counter()
    if mode == "memory":
        frame = pl.read_parquet(p["data"])
        t1 = time.perf_counter()
        width = fitted.transform_batch(frame.lazy()).collect().width
        result["read_seconds"] = t1 - t0
        result["transform_seconds"] = time.perf_counter() - t1
    elif mode.startswith("checked"):
        run = transform_frame(fitted, pl.scan_parquet(p["data"]))
        if mode == "checked-2pass":
            # the null/NaN/inf counts first (reading the numeric inputs only), checked, write
            run.report().check()
            sink_parquet_atomic(run.output, p["out"], compression="snappy", statistics=True)
        else:
            # the counts ride along with the write (one streaming query), checked, published
            tmp = p["out"].with_name(p["out"].name + ".tmp")
            counts, _ = pl.collect_all(
                [
                    run.counts,
                    run.output.sink_parquet(tmp, compression="snappy", statistics=True, lazy=True),
                ]
            )
            run.report_from(counts).check()
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, p["out"])
        width = len(pl.read_parquet_schema(p["out"]))
        result["out_mb"] = p["out"].stat().st_size / 1e6
    else:
        lazy = fitted.transform_batch(pl.scan_parquet(p["data"]))
        # `sink` is what `mlpipe transform` does (ops/transform.py)
        sink_parquet_atomic(lazy, p["out"], compression="snappy", statistics=(mode == "sink"))
        width = len(pl.read_parquet_schema(p["out"]))
        result["out_mb"] = p["out"].stat().st_size / 1e6
    result.update(
        seconds=time.perf_counter() - t0,
        cpu_seconds=cpu_s() - c0,
        peak_mb=peak_mb(),
        baseline_mb=base,
        width=width,
    )
    return result


def phase_sklearn(rows: int, mode: str) -> dict[str, float]:
    import pandas as pd

    p = paths(rows)
    fit_df = pd.read_parquet(p["data"]).head(min(rows, FIT_ROWS))
    ct = sklearn_pipeline(fit_df)
    del fit_df
    base = peak_mb()
    result: dict[str, float] = {}
    c0, t0 = cpu_s(), time.perf_counter()
    frame = pd.read_parquet(p["data"])
    t1 = time.perf_counter()
    out = ct.transform(frame)
    t2 = time.perf_counter()
    result.update(read_seconds=t1 - t0, transform_seconds=t2 - t1)
    if mode == "parquet":
        import polars as pl

        from mlpipe_cli.io import write_parquet_atomic

        del frame
        table = pl.from_numpy(out, schema=[f"f{i:02d}" for i in range(out.shape[1])])
        write_parquet_atomic(table, p["out_sklearn"], compression="snappy", statistics=True)
        result["out_mb"] = p["out_sklearn"].stat().st_size / 1e6
    result.update(
        seconds=time.perf_counter() - t0,
        cpu_seconds=cpu_s() - c0,
        peak_mb=peak_mb(),
        baseline_mb=base,
        width=out.shape[1],
    )
    return result


def phase_online(rows: int, n: int) -> dict[str, float]:
    import pandas as pd
    import polars as pl

    from mlpipe_cli.artifacts import ArtifactStore
    from mlpipe_cli.transforms import load_transform

    p = paths(rows)
    fitted = load_transform(ArtifactStore(p["artifacts"], "bench"))
    sample = pl.scan_parquet(p["data"]).head(n).collect()
    records = sample.to_dicts()
    timings = []
    clock = time.perf_counter_ns
    for record in records[:1000]:  # warm up
        fitted.transform_one(record)
    for record in records:
        t0 = clock()
        fitted.transform_one(record)
        timings.append(clock() - t0)
    timings.sort()
    fit_df = pl.scan_parquet(p["data"]).head(min(rows, 200_000)).collect().to_pandas()
    ct = sklearn_pipeline(fit_df)
    frames = [fit_df.iloc[[i]] for i in range(300)]
    sk = []
    for frame in frames[:20]:
        ct.transform(frame)
    for frame in frames:
        t0 = clock()
        ct.transform(frame)
        sk.append(clock() - t0)
    sk.sort()
    del pd

    def q(values: list[int], quantile: float) -> float:
        return values[min(len(values) - 1, int(quantile * len(values)))] / 1000

    return {
        "mlpipe_p50_us": q(timings, 0.5),
        "mlpipe_p99_us": q(timings, 0.99),
        "sklearn_p50_us": q(sk, 0.5),
        "sklearn_p99_us": q(sk, 0.99),
        "records": len(timings),
    }


def child(args: list[str], threads: str | None = None) -> dict[str, float]:
    env = dict(os.environ)
    if threads is not None:  # Polars reads it once, when it is first imported
        env["POLARS_MAX_THREADS"] = threads
    load1 = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, *args], capture_output=True, text=True, check=False, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(f"child {args} failed:\n{proc.stderr}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load1": load1}


def main() -> None:
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--online-records", type=int, default=20_000)
    parser.add_argument("--methods", help="comma-separated subset of the batch methods")
    parser.add_argument("--no-online", action="store_true", help="skip the online latency part")
    parser.add_argument(
        "--polars-threads",
        metavar="N,N,...",
        help="run every mlpipe method once per POLARS_MAX_THREADS value "
        "(e.g. 1,2,default), interleaved with the others, to see how the "
        "pool size moves wall and CPU time under the current load",
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    ARGS = parser.parse_args()
    rows = ARGS.rows
    if ARGS.phase:
        result = {
            "fit": lambda: fit_mlpipe(rows),
            "mlpipe-sink": lambda: phase_mlpipe(rows, "sink"),
            "mlpipe-sink-nostats": lambda: phase_mlpipe(rows, "sink-nostats"),
            "mlpipe-memory": lambda: phase_mlpipe(rows, "memory"),
            "checked-2pass": lambda: phase_mlpipe(rows, "checked-2pass"),
            "checked-1pass": lambda: phase_mlpipe(rows, "checked-1pass"),
            "sklearn-memory": lambda: phase_sklearn(rows, "memory"),
            "sklearn-parquet": lambda: phase_sklearn(rows, "parquet"),
            "online": lambda: phase_online(rows, ARGS.online_records),
        }[ARGS.phase]()
        print(json.dumps(result))
        return
    import polars as pl

    print(
        f"bench_transform: {rows:,} rows, repeat {ARGS.repeat}, polars {pl.__version__}, "
        f"POLARS_MAX_THREADS={pl.thread_pool_size()}, load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    t0 = time.perf_counter()
    generate(rows)
    print(f"data ready ({time.perf_counter() - t0:.1f}s): {paths(rows)['data']}")
    fit = child(["--rows", str(rows), "--phase", "fit"])
    print(f"mlpipe fit on {min(rows, FIT_ROWS):,} rows: {fit['fit_seconds']:.2f}s")
    methods = [
        "mlpipe-sink",
        "mlpipe-sink-nostats",
        "checked-2pass",
        "checked-1pass",
        "mlpipe-memory",
        "sklearn-memory",
        "sklearn-parquet",
    ]
    if ARGS.methods:
        methods = [m for m in methods if m in ARGS.methods.split(",")]
    # (label, phase, POLARS_MAX_THREADS or None for the inherited setting)
    runs_of: list[tuple[str, str, str | None]] = []
    for name in methods:
        if ARGS.polars_threads and name.startswith(("mlpipe", "checked")):
            for t in ARGS.polars_threads.split(","):
                runs_of.append((f"{name}@{t}", name, None if t == "default" else t))
        else:
            runs_of.append((name, name, None))
    results: dict[str, list[dict[str, float]]] = {label: [] for label, _, _ in runs_of}
    for _ in range(ARGS.repeat):
        for label, name, threads in runs_of:  # interleaved: load changes hit every method alike
            results[label].append(child(["--rows", str(rows), "--phase", name], threads))
    summary = {}
    print(
        f"\nbatch, median of {ARGS.repeat} (`total` = wall time incl. the read of the same Parquet "
        "file; `best` = fastest run; `cpu` = user+sys CPU, all threads):"
    )
    print(
        f"{'method':28s} {'total':>8s} {'rows/s':>11s} {'best':>7s} {'cpu':>7s} {'read':>6s} "
        f"{'transform':>9s} {'peak MB':>8s} {'base MB':>8s} {'out MB':>7s} cols"
    )
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        summary[name] = med

        def fmt(key: str, spec: str, med: dict[str, float] = med) -> str:
            return format(med[key], spec) if key in med else "-"

        best = min(r["seconds"] for r in runs)
        print(
            f"{name:28s} {med['seconds']:7.2f}s {rows / med['seconds']:11,.0f} {best:6.2f}s "
            f"{med['cpu_seconds']:6.2f}s {fmt('read_seconds', '6.2f'):>6s} "
            f"{fmt('transform_seconds', '8.2f'):>9s} "
            f"{med['peak_mb']:8.0f} {med['baseline_mb']:8.0f} {fmt('out_mb', '7.0f'):>7s} "
            f"{int(med['width'])}"
        )
        each = ", ".join(
            f"{r['seconds']:.2f}s/{r['cpu_seconds']:.2f}s cpu @load {r['load1']:.1f}" for r in runs
        )
        print(f"{'':28s} runs: {each}")
    pairs = [
        ("mlpipe-memory", "sklearn-memory", "in memory, read included"),
        ("mlpipe-sink", "sklearn-parquet", "to Parquet as `mlpipe transform` (stats)"),
        ("mlpipe-sink-nostats", "sklearn-parquet", "to Parquet, no statistics"),
    ]
    print("\nratios (sklearn / mlpipe):")
    if ARGS.polars_threads:  # every pool size against the same sklearn runs
        pairs = [
            (f"{ours}@{t}", theirs, f"{label}, threads={t}")
            for ours, theirs, label in pairs
            for t in ARGS.polars_threads.split(",")
        ]
    for ours, theirs, label in pairs:
        if ours in summary and theirs in summary:
            a, b = summary[ours], summary[theirs]
            print(
                f"  {label:42s} time {b['seconds'] / a['seconds']:5.1f}x  "
                f"cpu {b['cpu_seconds'] / a['cpu_seconds']:5.1f}x  "
                f"peak memory {b['peak_mb'] / a['peak_mb']:4.1f}x less"
            )
    for checked in ("checked-2pass", "checked-1pass"):
        if checked in summary and "mlpipe-sink" in summary:
            a, b = summary["mlpipe-sink"], summary[checked]
            print(
                f"  {'cost of the null/NaN/inf report, ' + checked:42s} time "
                f"{b['seconds'] / a['seconds']:5.2f}x  cpu {b['cpu_seconds'] / a['cpu_seconds']:5.2f}x"
                "  (vs mlpipe-sink)"
            )
    if "mlpipe-memory" in summary and "sklearn-memory" in summary:
        a, b = summary["mlpipe-memory"], summary["sklearn-memory"]
        print(
            f"  {'transform only (read excluded)':42s} time "
            f"{b['transform_seconds'] / a['transform_seconds']:5.1f}x"
        )
    print(f"load average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if ARGS.no_online:
        return
    online = [
        child(
            ["--rows", str(rows), "--phase", "online", "--online-records", str(ARGS.online_records)]
        )
        for _ in range(ARGS.repeat)
    ]
    med = {k: statistics.median(o[k] for o in online) for k in online[0]}
    print(
        f"online mlpipe transform_one: p50 {med['mlpipe_p50_us']:.1f} us  p99 {med['mlpipe_p99_us']:.1f} us "
        f"({int(med['records']):,} records)"
    )
    print(
        f"online sklearn 1-row DataFrame: p50 {med['sklearn_p50_us']:.0f} us  p99 {med['sklearn_p99_us']:.0f} us"
    )
    print(
        f"  p99 ratio: {med['sklearn_p99_us'] / med['mlpipe_p99_us']:.0f}x; goal p99 <= 50 us: "
        f"{'met' if med['mlpipe_p99_us'] <= 50 else 'NOT met'}"
    )


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()
