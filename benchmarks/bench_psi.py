"""Benchmark: PSI of N current rows × 20 features against a stored reference profile.

Compares `mlpipe_cli.drift.compare_to_profile` over row-group slices of the Parquet files,
read one at a time — what `psi-report --current` does (PSI + KS + null/mean/std per feature) —
with the same PSI computed the obvious way: `pandas.read_parquet` then `numpy.histogram` per
column on the profile's edges ("numpy"). For context, two more lines: pandas + numpy computing
the same extra statistics as mlpipe (KS from an `np.histogram` on the sketch points, null
counts, mean/std: "numpy-ks"), and Polars only reading the same parts ("read": the floor
any method reading these files pays). Every method times its own read of the same files.

Each method runs in its own child process (peak memory is that process's ru_maxrss); runs are
interleaved and the figures are medians of --runs runs, with the load average printed.
All methods must agree on every PSI value (and KS, where computed).

    .venv/bin/python benchmarks/bench_psi.py                 # 10,000,000 rows (full size)
    .venv/bin/python benchmarks/bench_psi.py --rows 1000000  # quicker
Run the full size under `flock /tmp/mlpipe-bench.lock ...` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

FEATURES = 20
FILE_ROWS = 1_000_000


def _columns(rng, n: int, shift: float):  # type: ignore[no-untyped-def]
    import numpy as np

    cols = {}
    for j in range(FEATURES):
        kind = j % 5
        if kind == 0:
            v = rng.normal(shift * 0.1, 1.0, n)
        elif kind == 1:
            v = rng.lognormal(3.0 + shift * 0.05, 1.0, n)
        elif kind == 2:
            v = rng.uniform(0, 1 + shift * 0.2, n)
        elif kind == 3:
            v = rng.integers(0, 50, n).astype(np.float64)  # atoms (integer-valued)
        else:
            v = rng.exponential(1.0, n)
            v[rng.random(n) < 0.05] = np.nan  # 5% missing
        cols[f"f{j:02d}"] = v
    return cols


def make_data(data_dir: Path, rows: int, seed: int, shift: float) -> None:
    """Write ``rows`` rows as Parquet files of ≤1M rows (generated chunk by chunk)."""
    import numpy as np
    import polars as pl

    marker = data_dir.with_name(data_dir.name + ".done")
    if marker.exists():
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, start in enumerate(range(0, rows, FILE_ROWS)):
        n = min(FILE_ROWS, rows - start)
        df = pl.DataFrame(_columns(rng, n, shift)).fill_nan(None)
        df.write_parquet(data_dir / f"part-{i:04d}.parquet", compression="zstd")
    marker.write_text(str(rows))


METHODS = {
    "mlpipe": "mlpipe compare_to_profile: PSI+KS+null/mean/std, streamed",
    "numpy": "pandas.read_parquet + numpy.histogram: PSI only",
    "numpy-ks": "pandas.read_parquet + numpy: PSI+KS+null/mean/std",
    "read": "polars read of the same parts, no statistics (floor)",
}


def _numpy_stats(values, entry: dict, rows: int) -> dict:  # type: ignore[no-untyped-def]
    """PSI + KS + null/mean/std the plain-numpy way (np.histogram on the fine points)."""
    import numpy as np

    from mlpipe_cli.drift.compare import _NumericAcc

    acc = _NumericAcc("x", entry)  # the fine points and the KS math from the counts only
    valid = values[~np.isnan(values)]
    counts, _ = np.histogram(valid, bins=np.concatenate([[-np.inf], acc.fine, [np.inf]]))
    acc.below = np.cumsum(counts)[:-1]
    acc.valid, acc.missing, acc.rows = len(valid), rows - len(valid), rows
    res = acc.result()
    fin = valid[np.isfinite(valid)]
    res["mean"], res["std"] = float(fin.mean()), float(fin.std(ddof=1))
    return res


def _child(method: str, data_dir: str, profile_path: str) -> None:
    from mlpipe_cli.drift import read_profile

    profile = read_profile(Path(profile_path))
    # import the libraries each method uses before the clock starts (all alike)
    import numpy  # noqa: F401
    import polars  # noqa: F401
    import scipy.stats  # noqa: F401

    if method.startswith("numpy"):
        import pandas  # noqa: F401
    t0 = time.perf_counter()
    cpu0 = os.times()
    psis: dict[str, float] = {}
    ks: dict[str, float] = {}
    if method == "mlpipe":
        # what `psi-report --current DIR` does: row-group slices of the files, read one at a time
        from mlpipe_cli.drift import compare_to_profile
        from mlpipe_cli.drift.report import scan_parts
        from mlpipe_cli.io import resolve_parquet_files

        drifts = compare_to_profile(profile, scan_parts(resolve_parquet_files(data_dir)))
        psis = {d.column: d.psi for d in drifts}
        ks = {d.column: d.ks_statistic for d in drifts}
        rows = drifts[0].rows
    elif method == "read":
        import polars as pl

        from mlpipe_cli.drift.report import scan_parts
        from mlpipe_cli.io import resolve_parquet_files

        rows = 0
        for part in scan_parts(resolve_parquet_files(data_dir)):
            rows += part.select(pl.all().cast(pl.Float64)).collect().height
    else:
        import numpy as np
        import pandas as pd

        from mlpipe_cli.drift import psi

        df = pd.read_parquet(data_dir)
        rows = len(df)
        for col, entry in profile["columns"].items():
            values = df[col].to_numpy(dtype=np.float64, na_value=np.nan)
            if method == "numpy-ks":
                res = _numpy_stats(values, entry, rows)
                counts, missing = res["bin_counts"], res["missing"]
                ks[col] = res["ks_statistic"]
            else:
                valid = values[~np.isnan(values)]
                edges = np.array([float(e) for e in entry["edges"]])
                counts, _ = np.histogram(valid, bins=np.concatenate([[-np.inf], edges, [np.inf]]))
                missing = rows - len(valid)
            cur = [*(np.asarray(counts) / rows), missing / rows]
            ref = [*entry["proportions"], entry["missing_proportion"]]
            psis[col] = psi(ref, cur)
    seconds = time.perf_counter() - t0
    cpu1 = os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    maxrss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "seconds": seconds,
                "cpu": cpu,
                "maxrss_mb": maxrss_kb / 1024,
                "rows": rows,
                "psi": psis,
                "ks": ks,
            }
        )
    )


def _run(method: str, data_dir: Path, profile: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", method, str(data_dir), str(profile)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{method} child failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="current rows")
    parser.add_argument("--ref-rows", type=int, default=1_000_000, help="reference rows")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {', '.join(METHODS)}",
    )
    parser.add_argument("--dir", type=Path, default=Path("/tmp/mlpipe-bench-psi"))
    parser.add_argument(
        "--child", nargs=3, metavar=("METHOD", "DATA", "PROFILE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        _child(*args.child)
        return
    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown or "mlpipe" not in methods:
        raise SystemExit(f"--methods: need mlpipe, got unknown {unknown}")

    from mlpipe_cli.drift import build_profile, write_profile
    from mlpipe_cli.io import scan_parquet

    ref_dir = args.dir / f"ref-{args.ref_rows}"
    cur_dir = args.dir / f"cur-{args.rows}"
    t0 = time.perf_counter()
    make_data(ref_dir, args.ref_rows, seed=1, shift=0.0)
    make_data(cur_dir, args.rows, seed=2, shift=1.0)
    print(
        f"data ready in {time.perf_counter() - t0:.1f}s: {args.rows:,} current rows x "
        f"{FEATURES} features (zstd Parquet, {FILE_ROWS:,} rows per file); reference "
        f"{args.ref_rows:,} rows",
        flush=True,
    )

    profile_path = args.dir / f"profile-{args.ref_rows}.json"
    t0 = time.perf_counter()
    profile = build_profile(scan_parquet(ref_dir))
    build_s = time.perf_counter() - t0
    write_profile(profile, profile_path)
    print(
        f"build_profile on {args.ref_rows:,} x {FEATURES}: {build_s:.2f}s "
        f"({args.ref_rows / build_s:,.0f} rows/s)",
        flush=True,
    )

    results: dict[str, list[dict]] = {m: [] for m in methods}
    loads = [_load()]
    for run in range(args.runs):  # interleaved, so load changes hit every method alike
        for method in methods:
            res = _run(method, cur_dir, profile_path)
            results[method].append(res)
            print(
                f"  run {run + 1} {method:8s}: {res['seconds']:6.2f}s (cpu {res['cpu']:5.2f}s), "
                f"peak {res['maxrss_mb']:5.0f} MB  (load {_load()})",
                flush=True,
            )
        loads.append(_load())

    ours = results["mlpipe"][0]
    checks = []
    for method in ("numpy", "numpy-ks"):
        if method not in results:
            continue
        theirs = results[method][0]
        worst = max(abs(ours["psi"][c] - theirs["psi"][c]) for c in theirs["psi"])
        assert all(
            math.isclose(ours["psi"][c], theirs["psi"][c], rel_tol=1e-9, abs_tol=1e-12)
            for c in theirs["psi"]
        ), f"PSI disagrees with {method}: max diff {worst}"
        checks.append(f"PSI vs {method} max abs diff {worst:.1e}")
        if theirs["ks"]:
            kdiff = max(abs(ours["ks"][c] - theirs["ks"][c]) for c in theirs["ks"])
            assert kdiff <= 1e-12, f"KS disagrees with {method}: max diff {kdiff}"
            checks.append(f"KS vs {method} max abs diff {kdiff:.1e}")

    med = {m: statistics.median(r["seconds"] for r in rs) for m, rs in results.items()}
    mem = {m: statistics.median(r["maxrss_mb"] for r in rs) for m, rs in results.items()}
    cpu = {m: statistics.median(r["cpu"] for r in rs) for m, rs in results.items()}
    in_memory_mb = args.rows * FEATURES * 8 / 2**20
    print(
        f"\nmedians of {args.runs} runs, {args.rows:,} rows x {FEATURES} features "
        f"(in-memory float64 size {in_memory_mb:,.0f} MB), cpus={os.cpu_count()}, "
        f"load average (1/5/15 min) per round: {' -> '.join(loads)}"
    )
    for m in methods:
        ratio = f"{med[m] / med['mlpipe']:5.2f}x mlpipe's time"
        print(
            f"  {METHODS[m]:58s} {med[m]:6.2f}s {args.rows / med[m]:>11,.0f} rows/s  "
            f"cpu {cpu[m]:5.2f}s  peak {mem[m]:5,.0f} MB  {ratio}"
        )
    for m in ("numpy", "numpy-ks"):
        if m in med:
            print(
                f"  speed-up vs {m}: {med[m] / med['mlpipe']:.2f}x wall, "
                f"{cpu[m] / cpu['mlpipe']:.2f}x cpu; memory ratio: "
                f"{mem[m] / mem['mlpipe']:.2f}x"
            )
    print("  " + "; ".join(checks))


if __name__ == "__main__":
    main()
