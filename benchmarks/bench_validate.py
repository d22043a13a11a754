"""Benchmark `mlpipe validate` against a bare Polars scan and the obvious pandas code.

    .venv/bin/python benchmarks/bench_validate.py --rows 1000000 --repeat 3
    flock /tmp/mlpipe-bench.lock .venv/bin/python benchmarks/bench_validate.py   # 10M rows

One Parquet file of ROWS x 10 columns (cached under /tmp/mlpipe-bench/) and one contract of
typical checks: dtypes of all 10 columns, non-null on 8, ranges on 4 numeric columns, a
full-match regex, two allowed sets, uniqueness of the key. Three methods compute the same
failure counts (asserted equal), each in a fresh child process so peak memory
(ru_maxrss of the child) is per method:

* mlpipe   — ``validate_source``: dtype check from the Parquet schema + one fused streaming
             query (counts, 5 examples per check, rows failing any check), report objects;
* polars   — the floor: ``scan_parquet(...).select(<same predicates>.sum())`` with the
             streaming engine, no pandera, no examples, no report;
* pandas   — ``pd.read_parquet`` then one boolean mask per check (``isna``, comparisons,
             ``str.fullmatch``, ``isin``, ``duplicated``), the way most pipelines do it.

Timings exclude interpreter start and imports (whole-process figures, start-up included, are
in bench_startup.py); medians of --repeat runs.
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
COUNTRIES = ["US", "DE", "GB", "FR", "IN", "BR", "JP", "CA"]
STATUSES = ["new", "paid", "shipped", "returned"]
EMAIL_RE = r"[a-z0-9._]+@[a-z0-9]+\.[a-z]{2,3}"

COLUMNS = {
    "id": {"dtype": "int64", "unique": True},
    "user_id": {"dtype": "int64", "min": 1},
    "ts": {"dtype": "datetime", "timezone": "UTC"},
    "amount": {"dtype": "float64", "nullable": True, "min": 0, "max": 100000},
    "qty": {"dtype": "int32", "min": 1, "max": 100},
    "price": {"dtype": "float64", "gt": 0},
    "country": {"dtype": "string", "allowed": COUNTRIES},
    "status": {"dtype": "string", "allowed": STATUSES},
    "email": {"dtype": "string", "nullable": True, "regex": EMAIL_RE},
    "score": {"dtype": "float32", "nullable": True},
}


def data_file(rows: int) -> tuple[Path, int]:
    """The benchmark file (generated once per size) and its in-memory size in bytes."""
    import numpy as np
    import polars as pl

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"validate-{rows}.parquet"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        return path, json.loads(meta.read_text())["memory_bytes"]
    rng = np.random.default_rng(0)
    n = rows
    amount = np.round(rng.lognormal(3, 1, n), 2)
    amount[rng.random(n) < 0.001] = -1.0  # a few failures so examples are collected
    email_ids = rng.integers(0, 10**6, n)
    emails = pl.Series("email", email_ids).cast(pl.String)
    frame = pl.DataFrame(
        {
            "id": np.arange(n, dtype=np.int64),
            "user_id": rng.integers(1, max(2, n // 20), n),
            "ts": rng.integers(1_700_000_000_000_000, 1_780_000_000_000_000, n),
            "amount": amount,
            "qty": rng.integers(1, 101, n).astype(np.int32),
            "price": np.round(rng.uniform(0.5, 500, n), 2),
            "country": np.array(COUNTRIES)[rng.integers(0, len(COUNTRIES), n)],
            "status": np.array(STATUSES)[rng.integers(0, len(STATUSES), n)],
            "email": emails,
            "score": rng.random(n).astype(np.float32),
        }
    ).with_columns(
        pl.col("ts").cast(pl.Datetime("us", "UTC")),
        pl.when(pl.col("id") % 50 == 0)
        .then(None)
        .otherwise(pl.lit("user") + pl.col("email") + pl.lit("@example.com"))
        .alias("email"),
    )
    frame.write_parquet(path, compression="zstd", row_group_size=256_000)
    meta.write_text(json.dumps({"memory_bytes": int(frame.estimated_size())}))
    return path, int(frame.estimated_size())


# -- the three methods (run inside a child process) -----------------------------------------


def run_mlpipe(path: Path) -> dict[str, int]:
    import yaml

    from mlpipe_cli.config.loader import load_config_text
    from mlpipe_cli.validation import validate_source

    text = yaml.safe_dump({"pipeline": "bench", "sources": {"t": {
        "path": str(path), "strict": True, "columns": COLUMNS}}})  # fmt: skip
    config = load_config_text(text, source_name="bench.yaml", base_dir=path.parent)
    report = validate_source(config, "t")
    return {c.id.removeprefix("t."): c.failures for c in report.checks
            if c.failures is not None and c.kind not in ("row_failure_rate", "unexpected")}  # fmt: skip


def polars_predicates():  # type: ignore[no-untyped-def]
    import polars as pl

    c = pl.col
    fin = lambda name: c(name).is_finite()  # noqa: E731
    return {
        "id.nullable": c("id").is_null(),
        "id.unique": c("id").is_not_null() & ~c("id").is_first_distinct(),
        "user_id.nullable": c("user_id").is_null(),
        "user_id.min": c("user_id") < 1,
        "ts.nullable": c("ts").is_null(),
        "amount.min": c("amount").is_not_null() & ~(fin("amount") & (c("amount") >= 0)),
        "amount.max": c("amount").is_not_null() & ~(fin("amount") & (c("amount") <= 100000)),
        "qty.nullable": c("qty").is_null(),
        "qty.min": c("qty") < 1,
        "qty.max": c("qty") > 100,
        "price.nullable": c("price").is_null(),
        "price.gt": c("price").is_not_null() & ~(fin("price") & (c("price") > 0)),
        "country.nullable": c("country").is_null(),
        "country.allowed": c("country").is_not_null()
        & ~c("country").is_in(pl.Series(COUNTRIES).implode()),
        "status.nullable": c("status").is_null(),
        "status.allowed": c("status").is_not_null()
        & ~c("status").is_in(pl.Series(STATUSES).implode()),
        "email.regex": c("email").is_not_null() & ~c("email").str.contains(f"^(?:{EMAIL_RE})$"),
    }


def run_polars(path: Path) -> dict[str, int]:
    import polars as pl

    preds = polars_predicates()
    row = (
        pl.scan_parquet(path)
        .select([p.fill_null(False).sum().alias(k) for k, p in preds.items()])
        .collect(engine="streaming")
        .row(0, named=True)
    )
    return {k: int(v) for k, v in row.items()}


def run_pandas(path: Path) -> dict[str, int]:
    import numpy as np
    import pandas as pd

    df = pd.read_parquet(path)
    out: dict[str, int] = {}
    out["id.nullable"] = int(df["id"].isna().sum())
    out["id.unique"] = int(df["id"].duplicated().sum())
    out["user_id.nullable"] = int(df["user_id"].isna().sum())
    out["user_id.min"] = int((df["user_id"] < 1).sum())
    out["ts.nullable"] = int(df["ts"].isna().sum())
    amount = df["amount"]
    finite = np.isfinite(amount)
    out["amount.min"] = int((amount.notna() & ~(finite & (amount >= 0))).sum())
    out["amount.max"] = int((amount.notna() & ~(finite & (amount <= 100000))).sum())
    out["qty.nullable"] = int(df["qty"].isna().sum())
    out["qty.min"] = int((df["qty"] < 1).sum())
    out["qty.max"] = int((df["qty"] > 100).sum())
    out["price.nullable"] = int(df["price"].isna().sum())
    out["price.gt"] = int(
        (df["price"].notna() & ~(np.isfinite(df["price"]) & (df["price"] > 0))).sum()
    )
    out["country.nullable"] = int(df["country"].isna().sum())
    out["country.allowed"] = int((df["country"].notna() & ~df["country"].isin(COUNTRIES)).sum())
    out["status.nullable"] = int(df["status"].isna().sum())
    out["status.allowed"] = int((df["status"].notna() & ~df["status"].isin(STATUSES)).sum())
    email = df["email"]
    matched = email.str.fullmatch(EMAIL_RE).fillna(False).astype(bool)
    out["email.regex"] = int((email.notna() & ~matched).sum())
    return out


def run_pandas_object(path: Path) -> dict[str, int]:
    """pandas with object-dtype strings (the pandas 2.x default; pandas 3 infers Arrow strings)."""
    import pandas as pd

    pd.set_option("future.infer_string", False)
    return run_pandas(path)


METHODS = {
    "mlpipe": run_mlpipe,
    "polars": run_polars,
    "pandas": run_pandas,
    "pandas-object": run_pandas_object,
}
IMPORTS = {
    "mlpipe": ("polars", "mlpipe_cli.validation.engine"),
    "polars": ("polars",),
    "pandas": ("pandas", "pyarrow.parquet"),
    "pandas-object": ("pandas", "pyarrow.parquet"),
}


def _rss_now() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that across
    ``exec`` from the parent, so after the parent generated the data file (~1.5 GiB at 10M
    rows) every child reported the parent's peak."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(method: str, path: Path) -> None:
    import importlib

    for module in IMPORTS[method]:  # imports happen outside the timed region
        importlib.import_module(module)
    baseline = _rss_now()
    cpu0, start = os.times(), time.perf_counter()
    counts = METHODS[method](path)
    seconds = time.perf_counter() - start
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)  # all threads of this process
    peak = _peak_rss()
    print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_bytes": peak,
                      "baseline_bytes": baseline, "counts": counts}))  # fmt: skip


def measure(method: str, path: Path) -> dict:
    load1 = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, "--path", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise SystemExit(f"{method} failed:\n{proc.stderr}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "load1": load1}


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="200k rows, 3 runs")
    parser.add_argument("--methods", default="mlpipe,polars,pandas,pandas-object")
    parser.add_argument("--child")
    parser.add_argument("--path")
    args = parser.parse_args()
    if args.child:
        child(args.child, Path(args.path))
        return
    rows = 200_000 if args.quick else args.rows
    path, memory = data_file(rows)
    methods = args.methods.split(",")
    print(f"file: {path} ({path.stat().st_size / 2**20:.0f} MiB on disk, "
          f"{memory / 2**20:.0f} MiB in memory), {rows:,} rows x 10 columns, {args.repeat} runs, "
          f"{os.cpu_count()} CPUs, load average at start {loadavg()}")  # fmt: skip
    results: dict[str, list[dict]] = {m: [] for m in methods}
    for _ in range(args.repeat):
        for method in methods:  # interleaved so machine noise hits every method alike
            results[method].append(measure(method, path))
    baseline_counts = results[methods[0]][0]["counts"]
    for method in methods[1:]:
        counts = results[method][0]["counts"]
        shared = {k: counts[k] for k in counts if k in baseline_counts}
        expected = {k: baseline_counts[k] for k in shared}
        if shared != expected or len(shared) != len(counts):
            raise SystemExit(f"{method} disagrees with {methods[0]}: {shared} vs {expected}")
    med = {m: statistics.median(r["seconds"] for r in results[m]) for m in methods}
    cpu = {m: statistics.median(r["cpu"] for r in results[m]) for m in methods}
    peak = {m: statistics.median(r["peak_bytes"] for r in results[m]) for m in methods}
    grew = {m: statistics.median(r["peak_bytes"] - r["baseline_bytes"] for r in results[m])
            for m in methods}  # fmt: skip
    print(f"{'method':13} {'median s':>9} {'cpu s':>7} {'rows/s':>12} {'peak MiB':>9} "
          f"{'+work MiB':>10} {'peak/in-mem':>12}  runs (wall/cpu @ load)")  # fmt: skip
    for m in methods:
        runs = ", ".join(f"{r['seconds']:.2f}/{r['cpu']:.2f} @{r['load1']:.1f}" for r in results[m])
        print(f"{m:13} {med[m]:9.2f} {cpu[m]:7.2f} {rows / med[m]:12,.0f} {peak[m] / 2**20:9.0f} "
              f"{grew[m] / 2**20:10.0f} {peak[m] / memory:12.2f}  [{runs}]")  # fmt: skip
    if "mlpipe" in med and "polars" in med:
        print(f"mlpipe / bare polars time: {med['mlpipe'] / med['polars']:.2f}x, cpu "
              f"{cpu['mlpipe'] / cpu['polars']:.2f}x (goal <= 2x)")  # fmt: skip
    for other in ("pandas", "pandas-object"):
        if "mlpipe" in med and other in med:
            print(f"{other} / mlpipe time: {med[other] / med['mlpipe']:.1f}x, cpu "
                  f"{cpu[other] / cpu['mlpipe']:.1f}x (goal >= 10x)")  # fmt: skip
    print(f"load average at end {loadavg()}")
    if "mlpipe" in peak:
        print(f"mlpipe peak memory: {peak['mlpipe'] / memory:.2f} of the in-memory size")
    print(json.dumps({"rows": rows, "median_seconds": med, "cpu_seconds": cpu, "peak_bytes": peak,
                      "peak_above_imports_bytes": grew, "memory_bytes": memory}))  # fmt: skip


if __name__ == "__main__":
    main()
